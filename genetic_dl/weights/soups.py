"""A final model from the whole population: model soups and the prediction ensemble.

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned
models improves accuracy without increasing inference time". The *uniform* soup
averages every member's weights; the *greedy* soup visits the members from the
best validation fitness down and keeps each one whose addition does not make the
soup's validation fitness worse. Soups cost one network's inference; they help
when the members share a basin (one initialisation, or aligned crossover), and
can be far worse than the best member otherwise, which is why :func:`soups` also
returns the best member and chooses among the three on validation. BatchNorm
statistics are recomputed for every averaged network (Jordan et al. 2023,
"REPAIR": :func:`~genetic_dl.core.statistics.recompute_statistics`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from ..core.learner import Learner
from ..core.member import Member, population_member
from ..core.population import Population, take
from ..core.statistics import recompute_statistics
from ..core.train import fitness_from_metrics, predict
from ..data import Dataset
from ..errors import check
from ..operators.averaging import uniform_average
from ..operators.repair import repair as repair_average
from .config import FitnessFn
from .loop import member_fitness
from .records import WeightGAResult

# the candidates :attr:`Soups.chosen` is picked from, in order of preference on ties
CANDIDATES = ("best", "greedy", "uniform")


@dataclasses.dataclass(frozen=True)
class Soups:
    """What :func:`soups` returns: three single networks and the ensemble, on validation.

    Attributes:
      best: the member of the best validation fitness (its own statistics).
      uniform: the mean of every non-failed member's params.
      greedy: the greedy soup (Wortsman et al. 2022); the best member alone when
        no other member helps.
      best_metrics, uniform_metrics, greedy_metrics: their validation metrics,
        exactly what :func:`~genetic_dl.evaluate` gives for ``member.population()``.
      ensemble_metrics: validation metrics of the prediction ensemble of the
        non-failed members: the mean of their outputs (logits, for a classifier),
        scored by the learner's ``evaluate``. It costs P networks' inference.
      fitness: ``{"best", "uniform", "greedy", "ensemble"}``: validation fitness
        (maximised; NaN: failed).
      ingredients: the member ids each of them is made of (``"greedy"``: in the
        order they were added).
      chosen_name: the one of :data:`CANDIDATES` with the best validation fitness
        (the earlier one on ties).
    """
    best: Member = dataclasses.field(repr=False)
    uniform: Member = dataclasses.field(repr=False)
    greedy: Member = dataclasses.field(repr=False)
    best_metrics: Dict[str, float]
    uniform_metrics: Dict[str, float]
    greedy_metrics: Dict[str, float]
    ensemble_metrics: Dict[str, float]
    fitness: Dict[str, float]
    ingredients: Dict[str, Tuple[int, ...]]
    chosen_name: str

    @property
    def chosen(self) -> Member:
        """The single network of the best validation fitness (best, greedy or uniform)."""
        return {"best": self.best, "uniform": self.uniform, "greedy": self.greedy}[
            self.chosen_name]

    @property
    def chosen_metrics(self) -> Dict[str, float]:
        """The chosen network's validation metrics."""
        return {"best": self.best_metrics, "uniform": self.uniform_metrics,
                "greedy": self.greedy_metrics}[self.chosen_name]

    def test_metrics(self, data: Dataset) -> Dict[str, float]:
        """The chosen network's metrics on the test split: the final report, once.

        Selection saw validation only; evaluating the other candidates on test and
        picking among them would make this number optimistic.
        """
        return self.chosen.evaluate(data, "test")


def _score(member: Member, data: Dataset, fitness: FitnessFn) -> Tuple[float, Dict[str, float]]:
    """``(validation fitness, metrics)`` of one network, evaluated as a population of one."""
    fit, metrics = member_fitness(member.population(), data, fitness)
    return float(fit[0]), {k: float(v[0]) for k, v in metrics.items()}


def _fitness_of(metrics: Dict[str, float], fitness: FitnessFn, learner: Learner) -> float:
    """The fitness of one network's metrics (NaN: failed), as :func:`member_fitness`."""
    values = {k: jnp.asarray([v], jnp.float32) for k, v in metrics.items()}
    if callable(fitness):
        fit = jnp.asarray(fitness(values), jnp.float32)
        fit = jnp.where(jnp.isfinite(fit), fit, jnp.nan)
    else:
        fit = fitness_from_metrics(values, fitness, maximize=learner.maximize(fitness))
    return float(np.asarray(fit).reshape(-1)[0])


@functools.partial(jax.jit, static_argnames=("learner",))
def _ensemble(learner: Learner, outputs: Any, x: jax.Array, y: jax.Array) -> Dict[str, jax.Array]:
    mean = jax.tree_util.tree_map(lambda o: jnp.mean(o.astype(jnp.float32), 0), outputs)
    return learner.evaluate(mean, {"x": x, "y": y})


def ensemble_metrics(population: Population, data: Dataset,
                     members: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Validation metrics of the prediction ensemble: the mean of the members' outputs.

    Args:
      population: the members.
      data: the :class:`~genetic_dl.Dataset`.
      members: indices of the members to average (default: all).

    Returns:
      ``{metric: value}`` of the learner on the validation split.
    """
    if members is not None:
        population = take(population, np.asarray(members))
    x, y = data.split("val")
    outputs = predict(population, data.model_inputs(x))
    return {k: float(v) for k, v in _ensemble(population.learner, outputs, jnp.asarray(x),
                                              jnp.asarray(y)).items()}


def _check_widths(population: Population, ok: np.ndarray) -> None:
    widths = population.hparams.get("widths")
    if widths is not None:
        w = np.asarray(widths)[ok]
        check(bool(np.all(w == w[:1])), "soups average members of one architecture, but these "
              "members have different widths: evolve them with one width each")


def soups(population: Union[Population, WeightGAResult], data: Dataset, *,
          fitness: FitnessFn = "loss", batch_size: int = 64, batches: Optional[int] = None,
          key: Optional[jax.Array] = None, repair: bool = False) -> Soups:
    """Model soups of a population, its best member and its ensemble, on validation.

    Failed members (``population.failed``, or non-finite validation fitness) are
    left out of everything. A soup takes the best member's hyperparameters; its
    running statistics (a learner with mutable collections) are recomputed on
    training batches after each average. Wortsman et al. 2022 (model soups) and
    Jordan et al. 2023 (REPAIR).

    Args:
      population: the trained members, or a :class:`~genetic_dl.WeightGAResult`
        (its final ``population``).
      data: the :class:`~genetic_dl.Dataset` they were trained on; selection uses
        its validation split only (:meth:`Soups.test_metrics` reports test).
      fitness: a metric name (maximised unless loss-like; ``"loss"``: the negated
        loss) or ``f(metrics) -> (P,)`` to maximise, as in
        :func:`~genetic_dl.evolve_weights`.
      batch_size, batches, key: the training batches statistics are recomputed on
        (:func:`~genetic_dl.core.statistics.recompute_statistics`).
      repair: for a norm-free model (no collections), rescale every average's units
        to its ingredients' statistics (:func:`~genetic_dl.operators.repair.repair`)
        on the first ``batch_size * (batches or 4)`` training rows.

    Returns:
      A :class:`Soups`.

    Raises:
      ValueError: every member failed, or the members have different widths.
    """
    if isinstance(population, WeightGAResult):
        population = population.population
    check(isinstance(data, Dataset), f"soups take a Dataset, got {type(data).__name__}")
    fit = np.asarray(member_fitness(population, data, fitness)[0])
    ok = np.isfinite(fit)
    check(bool(ok.any()), "every member failed (NaN/inf validation fitness): there is no "
          "soup to make")
    _check_widths(population, ok)
    order = [int(i) for i in np.argsort(-np.where(ok, fit, -np.inf), kind="stable") if ok[i]]
    ids = np.asarray(population.ids)
    best = population_member(population, order[0])
    average = _averager(population, best, data, (batch_size, batches, key, repair))
    score: Callable[[Member], Tuple[float, Dict[str, float]]] = functools.partial(
        _score, data=data, fitness=fitness)

    uniform = average(order)
    scored = {"best": (best, *score(best)), "uniform": (uniform, *score(uniform))}
    greedy: List[int] = [order[0]]
    scored["greedy"] = scored["best"]
    for i in order[1:]:
        soup = average(greedy + [i])
        fit_i, metrics = score(soup)
        if fit_i >= scored["greedy"][1]:
            greedy.append(i)
            scored["greedy"] = (soup, fit_i, metrics)
    ens = ensemble_metrics(population, data, np.asarray(order))
    fitness_of = {name: s[1] for name, s in scored.items()}
    chosen = max(CANDIDATES, key=lambda n: (np.nan_to_num(fitness_of[n], nan=-np.inf),
                                            -CANDIDATES.index(n)))
    return Soups(best=best, uniform=scored["uniform"][0], greedy=scored["greedy"][0],
                 best_metrics=scored["best"][2], uniform_metrics=scored["uniform"][2],
                 greedy_metrics=scored["greedy"][2], ensemble_metrics=ens,
                 fitness={**fitness_of,
                          "ensemble": _fitness_of(ens, fitness, population.learner)},
                 ingredients={"best": (int(ids[order[0]]),),
                              "uniform": tuple(int(ids[i]) for i in sorted(order)),
                              "greedy": tuple(int(ids[i]) for i in greedy),
                              "ensemble": tuple(int(ids[i]) for i in sorted(order))},
                 chosen_name=chosen)


def _averager(population: Population, best: Member, data: Dataset,
              options: Tuple[int, Optional[int], Optional[jax.Array], bool]
              ) -> Callable[[List[int]], Member]:
    """``average(indices)``: the uniform soup of those members, with the best member's
    hyperparameters and, when the learner has collections, recomputed statistics
    (else, with ``repair`` in ``options = (batch_size, batches, key, repair)``, REPAIR)."""
    batch_size, batches, key, repaired = options
    cache: Dict[Tuple[int, ...], Member] = {}

    def average(indices: List[int]) -> Member:
        found = cache.get(tuple(sorted(indices)))
        if found is not None:
            return found
        weights = np.zeros(population.size, np.float32)
        weights[np.asarray(indices)] = 1
        params = jax.device_get(uniform_average(population.params, weights))
        member = dataclasses.replace(best, params=params)
        if jax.tree_util.tree_leaves(member.collections):
            one = recompute_statistics(member.population(), data, batches=batches,
                                       batch_size=batch_size, key=key)
            member = dataclasses.replace(member, collections=jax.device_get(
                jax.tree_util.tree_map(lambda v: v[0], one.collections)))
        elif repaired and len(indices) > 1:
            x = jnp.asarray(data.model_inputs(data.x_train[:batch_size * (batches or 4)]))
            ends = jax.tree_util.tree_map(lambda p: p[np.asarray(sorted(indices))],
                                          population.params)
            hp = {k: jnp.asarray(v) for k, v in best.hparams.items()}
            member = dataclasses.replace(member, params=jax.device_get(repair_average(
                population.learner, ends, np.ones(len(indices)), params, {}, x, hp)))
        cache[tuple(sorted(indices))] = member
        return member
    return average
