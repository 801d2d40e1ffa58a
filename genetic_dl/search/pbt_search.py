"""Search over MLP widths and training hyperparameters by successive halving, then PBT.

Members of every width train as one padded population (:mod:`genetic_dl.core.padding`).
``start`` members with widths and hyperparameters drawn from their ranges
train in rungs of ``rung_epochs``; after each rung the better half (by
validation fitness) goes on with its weights (successive halving: Jamieson &
Talwalkar, 2016). The last ``population`` members then train by
population-based training (Jaderberg et al., 2017): every ``ready`` epochs the
bottom quarter copies the top quarter's weights, optimizer state and widths,
and perturbs the learning rate, weight decay and dropout. Optuna's trials
cannot share trained weights; here every network-epoch a survivor spent is kept.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ..data import Dataset
from ..core.models import MLPSpec, ModelSpec
from ..core.padding import rescale_init, shrink
from ..core.population import Population, init_population, take
from ..operators.selection import rank_order
from .space import Float
from ..core.train import train
from ..weights import WeightGAConfig, evolve_weights, member_fitness
from ..weights.loop import AllMembersFailed

BOUNDS = (("learning_rate", (1e-4, 3e-2)), ("weight_decay", (1e-6, 1e-2)), ("dropout", (0.0, 0.5)))
# The best network so far: ``(fitness, params, hyperparameters and widths)``.
_Best = Tuple[float, Any, Dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class PBTSearchResult:
    """Outcome of :func:`pbt_search`.

    Attributes:
      best_fitness: validation fitness of the best network.
      best_spec, best_params: that network at its true widths (no padding).
      best_hparams: its learning rate, weight decay and dropout.
      history: one record per rung and PBT generation: ``phase``, ``members``,
        ``network_epochs`` spent so far and ``best`` fitness of that step.
      network_epochs: the budget spent.
    """
    best_fitness: float
    best_spec: ModelSpec
    best_params: Any
    best_hparams: Mapping[str, float]
    history: List[Dict[str, Any]]
    network_epochs: int


def _draw(key: jax.Array, start: int, widths: Sequence[int], layers: int,
          bounds: Mapping[str, Tuple[float, float]]) -> Dict[str, np.ndarray]:
    """``start`` members' widths (uniform over ``widths``) and hyperparameters
    (log-uniform for positive lower bounds, uniform otherwise)."""
    k_w, k_h = jax.random.split(key)
    hp = {"widths": np.asarray(widths, np.float32)[np.asarray(
        jax.random.randint(k_w, (start, layers), 0, len(widths)))]}
    u = np.asarray(jax.random.uniform(k_h, (start, len(bounds))), np.float64)
    for i, (name, (lo, hi)) in enumerate(sorted(bounds.items())):
        gene = Float(lo, hi, log=lo > 0)
        hp[name] = np.array([gene.decode(x) for x in u[:, i]], np.float32)
    return hp


def _fitness(population: Population, data: Dataset, metric: str) -> np.ndarray:
    """Each member's validation fitness on the host (NaN: failed)."""
    return np.asarray(member_fitness(population, data, metric)[0])


@dataclasses.dataclass(frozen=True)
class PBTSearch:
    """Successive halving from ``start`` drawn members down to ``population``, then PBT.

    Attributes:
      layers: hidden layers of every MLP.
      widths: each layer's width is drawn from these (padded to the widest).
      population: members that go on to PBT; ``start`` halves down to it.
      start: members drawn at the start (``population`` times a power of two).
      rung_epochs: epochs each member trains per successive-halving rung.
      ready: epochs between PBT's exploit/explore steps.
      bounds: ranges of ``learning_rate``, ``weight_decay`` and ``dropout``
        (the draws and PBT's perturbations stay inside them).
      activation: the MLPs' activation.
      batch_size: minibatch size.
      metric: validation metric maximised (``loss`` is negated).
    """
    layers: int = 2
    widths: Tuple[int, ...] = (16, 32, 64, 128)
    population: int = 8
    start: int = 32
    rung_epochs: int = 4
    ready: int = 5
    bounds: Tuple[Tuple[str, Tuple[float, float]], ...] = BOUNDS
    activation: str = "relu"
    batch_size: int = 64
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        if self.population < 4 or self.start < self.population or \
                self.population << self.rungs != self.start:
            raise ValueError(f"start must be population times a power of two and population "
                             f"at least 4, got start={self.start}, population={self.population}")
        unknown = set(dict(self.bounds)) - {"learning_rate", "weight_decay", "dropout"}
        if unknown:
            raise ValueError(f"unknown bounds {sorted(unknown)}: give learning_rate, "
                             f"weight_decay and/or dropout")

    @property
    def rungs(self) -> int:
        """Successive-halving rungs (each halves the members)."""
        return max(0, int(round(np.log2(max(self.start, 1) / self.population))))

    def spec(self) -> MLPSpec:
        """The padded spec every member trains in."""
        dropout = dict(self.bounds).get("dropout", (0.0, 0.0))[1] > 0
        return MLPSpec((max(self.widths),) * self.layers, self.activation,
                       0.1 if dropout else 0.0)  # dropout layers; the rate is per member

    def run(self, key: jax.Array, data: Dataset, budget: float) -> PBTSearchResult:
        """Spends ``budget`` network-epochs on ``data``; returns the best network found."""
        halving = sum((self.start >> r) * self.rung_epochs for r in range(self.rungs))
        if budget < halving + self.population * self.ready:
            raise ValueError(f"a budget of {budget:g} network-epochs does not cover the "
                             f"successive-halving rungs ({halving}) and one PBT step "
                             f"({self.population * self.ready}): raise it or lower "
                             f"start/rung_epochs")
        k_draw, k_init, k_pbt = jax.random.split(key, 3)
        spec = self.spec()
        hp = _draw(k_draw, self.start, self.widths, self.layers, dict(self.bounds))
        if spec.dropout == 0:
            hp.pop("dropout", None)
        pop = init_population(k_init, spec, data, self.start, "adam", hp)
        pop = dataclasses.replace(pop, params=rescale_init(spec, pop.params, hp["widths"]))
        pop, best, history = self._halve(pop, data)
        spent = halving
        hparams_of_id: Dict[int, Dict[str, np.ndarray]] = {}

        def note(_: int, members: Population, record: Mapping[str, Any]) -> bool:
            # a member keeps its hyperparameters: PBT gives a perturbed copy a new id
            host = jax.device_get(members.hparams)  # one transfer, not one per member
            hparams_of_id.update((int(i), _hparams(host, j))
                                 for j, i in enumerate(np.asarray(members.ids)))
            history.append({"phase": "pbt", "members": members.size,
                            "network_epochs": spent + record["network_epochs"],
                            "best": record["best"]})
            return False

        explored = tuple((n, b) for n, b in sorted(self.bounds) if n in pop.hparams)
        try:
            res = evolve_weights(k_pbt, pop, data, epochs=self.ready,
                                 generations=int((budget - spent)
                                                 // (self.population * self.ready)),
                                 batch_size=self.batch_size, fitness=self.metric,
                                 callbacks=[note],
                                 config=WeightGAConfig(rule="pbt", pbt_bounds=explored))
            phase = (len(res.history), res.best_params, res.best_fitness, res.best_id)
        except AllMembersFailed as failed:  # the rungs' best stands; nothing is left to exploit
            last = failed.state
            phase = (len(last.history), last.best["params"], last.best["fitness"],
                     last.best["id"])
        generations, params, fit, best_id = phase
        spent += self.population * self.ready * generations
        if params is not None and fit > best[0]:
            best = (float(fit), params, hparams_of_id[int(best_id)])
        fitness, params, member = best
        true_spec, true_params = shrink(spec, params, [int(w) for w in member["widths"]])
        return PBTSearchResult(fitness, true_spec, true_params,
                               {n: float(v) for n, v in member.items()
                                if n in dict(self.bounds)},
                               history, spent)

    def _halve(self, pop: Population,
               data: Dataset) -> Tuple[Population, _Best, List[Dict[str, Any]]]:
        """The successive-halving rungs: ``(survivors, best so far, history)``."""
        best: _Best = (-np.inf, None, {})
        history: List[Dict[str, Any]] = []
        spent = 0
        for _ in range(self.rungs):
            pop, _ = train(pop, data, self.rung_epochs, batch_size=self.batch_size)
            spent += pop.size * self.rung_epochs
            fit = _fitness(pop, data, self.metric)
            best = _better(best, pop, fit)
            ok = np.isfinite(fit)
            history.append({"phase": "halving", "members": pop.size, "network_epochs": spent,
                            "best": float(fit[ok].max()) if ok.any() else float("nan")})
            pop = take(pop, np.asarray(rank_order(jnp.asarray(fit)))[:pop.size // 2])
        return pop, best, history


def pbt_search(key: jax.Array, data: Dataset, budget: float, **options: Any) -> PBTSearchResult:
    """:class:`PBTSearch` with ``options`` run on ``data`` for ``budget`` network-epochs."""
    return PBTSearch(**options).run(key, data, budget)


def _hparams(hparams: Mapping[str, np.ndarray], j: int) -> Dict[str, np.ndarray]:
    """Member ``j``'s hyperparameters from host copies of a population's."""
    return {n: np.asarray(v)[j] for n, v in hparams.items()}


def _better(best: _Best, pop: Population, fit: np.ndarray) -> _Best:
    """``best`` or the fittest member of ``pop`` if it beats it."""
    ok = np.isfinite(fit)
    if not ok.any():
        return best
    i = int(np.argmax(np.where(ok, fit, -np.inf)))
    if fit[i] <= best[0]:
        return best
    return float(fit[i]), jax.device_get(pop.member(i)), _hparams(jax.device_get(pop.hparams), i)
