"""The search driver: any strategy against an objective under one budget.

Every method is a :class:`~genetic_dl.search.strategy.Strategy` over unit genomes (see
:mod:`genetic_dl.search.space`): ``ga``, ``random``, ``grid``, ``de`` and, with optuna
installed, ``tpe``, one file each. :func:`run_search` drives any of them against an
:class:`~genetic_dl.search.objective.Objective` under a budget counted in the
objective's cost units (network-epochs for the bundled trainer, calls for a black
box), in another unit it measures (FLOP-epochs), or in wall seconds. An identical
config is never evaluated twice (the cache costs nothing). A strategy may propose
rungs (configs cut to fewer epochs, :mod:`genetic_dl.search.fidelity`); the
objective then continues each network from its previous rung.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

import jax
import numpy as np

from ..core.tables import first_objective as _first
from ..core.tables import to_pandas as records_to_pandas
from ..errors import check_choice
from . import genome_ops
from .de import DifferentialEvolution
from .fidelity import Fidelity
from .ga import GA
from .grid_search import GridSearch
from .ledger import SECONDS, Ledger
from .objective import BlackBox, Config, Objective
from .random_search import RandomSearch
from .space import ConfigKey, Space, config_key
from .strategy import Lineage, Strategy
from .tpe import TPE

__all__ = ["BlackBox", "Config", "Fidelity", "Objective", "SearchResult", "run_search", "METHODS",
           "GA", "DifferentialEvolution", "GridSearch", "RandomSearch", "TPE"]


def _nan_like(objectives: int) -> Union[float, Tuple[float, ...]]:
    return float("nan") if objectives == 1 else (float("nan"),) * objectives


METHODS: Dict[str, Callable[[], Strategy[Any]]] = {
    "ga": GA, "random": RandomSearch, "grid": GridSearch, "de": DifferentialEvolution,
    "tpe": TPE}


@dataclasses.dataclass
class SearchResult:
    """What :func:`run_search` returns.

    Attributes:
      best_config, best_fitness: the best evaluated config (first objective /
        scalar fitness for ranking).
      evaluations: one dict per evaluated config: id, config, fitness, cost
        (in the budget's unit), what it spent in each unit the objective measures
        (``network_epochs``, ``flop_epochs``...), budget_used after it, round,
        genome, parents (ids of the two evaluations it was bred from, a
        rung's continuation: its previous rung twice; the GA only, ``None``
        otherwise) and, for a rung, ``rung_epochs`` (its config's epochs).
      history: one dict per round: round, best, mean, std (of that round's
        fitness), diversity (mean per-gene std of its genomes), best_so_far,
        budget_used, the total of each measured unit (``network_epochs_used``...),
        elapsed, best_config.
      budget_used: cost actually spent (cache hits are free).
      costs: the total spent in each unit the objective measures.
      pareto: for multi-objective runs, the non-dominated evaluations.
      best_params, best_spec: the best trained network's params and model spec,
        when the objective trains networks (:class:`~genetic_dl.TrainerObjective`).
    """
    best_config: Optional[Config]
    best_fitness: Any
    evaluations: List[Dict[str, Any]]
    history: List[Dict[str, Any]]
    budget_used: float
    pareto: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    costs: Dict[str, float] = dataclasses.field(default_factory=dict)
    best_params: Any = None
    best_spec: Any = None

    def hall_of_fame(self, k: int = 5) -> List[Dict[str, Any]]:
        """The ``k`` best evaluations (first objective), best first; failures excluded."""
        ok = [e for e in self.evaluations if np.isfinite(_first(e["fitness"]))]
        return sorted(ok, key=lambda e: -_first(e["fitness"]))[:k]

    def to_pandas(self, what: str = "history") -> Any:
        """``history`` or ``evaluations`` as a ``pandas.DataFrame`` (configs flattened;
        typed ``Any``: pandas is optional)."""
        rows = {"history": self.history, "evaluations": [
            {**{k: v for k, v in e.items() if k != "config"}, **e["config"]}
            for e in self.evaluations]}[what]
        return records_to_pandas(rows)


def run_search(method: Union[str, Strategy[Any]], space: Space, objective: Objective,
               budget: float, key: Union[int, jax.Array], *, objectives: int = 1,
               max_stalled_rounds: int = 20,
               callbacks: Sequence[Callable[[int, Dict[str, Any]], bool]] = (),
               replay: Sequence[Dict[str, Any]] = (),
               on_round: Optional[Callable[[SearchResult], None]] = None,
               budget_unit: Optional[str] = None) -> SearchResult:
    """Runs ``method`` on ``objective`` until ``budget`` is spent.

    A config whose cost does not fit in the remaining budget is not evaluated, so
    the budget is never exceeded (but by the last round of a budget in seconds);
    a config seen before is answered from the cache at no cost.

    Args:
      method: a strategy instance (``GA()``, ``RandomSearch()``...) or a name
        of :data:`METHODS`.
      space: the search space.
      objective: an :class:`Objective` (wrap ``f(config)`` with :class:`BlackBox`).
      budget: total cost allowed, in ``budget_unit``.
      key: PRNG key.
      objectives: number of objectives the fitness has.
      max_stalled_rounds: stop after this many rounds that evaluate nothing new.
      callbacks: ``cb(round, record) -> stop?`` after each round (see
        :mod:`genetic_dl.core.stopping` for saturation, target and time limits).
      replay: evaluations of an interrupted run of the same search (its
        ``SearchResult.evaluations``): the search repeats its rounds answering
        those configs from them, spending their cost but training nothing, so
        it reaches the interrupted run's state exactly and continues from it
        (every method is deterministic given its key and the fitness it is told).
      on_round: called with the result so far after each round (checkpoints).
      budget_unit: what ``budget`` counts: ``None`` the objective's
        :meth:`~Objective.cost`; a unit of its :meth:`~Objective.costs`
        (``"network_epochs"`` or ``"flop_epochs"`` for the bundled trainer); or
        ``"seconds"`` of wall time, checked after each round, so the last round
        may overrun it. A budget in seconds stops wherever the machine's speed
        puts it: a replayed (resumed) run repeats the past exactly but ends
        elsewhere than an uninterrupted one.

    Returns:
      A :class:`SearchResult`.
    """
    if isinstance(method, str):
        check_choice("method", method, METHODS)
        method = METHODS[method]()
    if not budget > 0:
        raise ValueError(f"the budget must be positive, got {budget}")
    key, k_init = jax.random.split(jax.random.key(key) if isinstance(key, int) else key)
    state = method.init_state(k_init, space)
    book = Ledger(replayed={_replay_key(space, objective, e): e for e in replay},
                  unit=budget_unit)
    history: List[Dict[str, Any]] = []
    stalled, rnd, start = 0, 0, time.perf_counter()
    while book.used < budget and stalled < max_stalled_rounds:
        since = time.perf_counter()
        key, k_ask = jax.random.split(key)
        proposal = method.ask(k_ask, state)
        genomes = np.asarray(proposal.genomes, np.float64)
        if genomes.size == 0:
            break  # e.g. the grid is exhausted
        configs, rung = _configs(space, objective, genomes, proposal.epochs)
        keys = [config_key(c) for c in configs]
        todo, spent = book.plan(objective, keys, configs,
                                np.inf if budget_unit == SECONDS else budget - book.used)
        fits = book.record(objective, rnd, genomes,
                           keys if rung is None else [space.key(u) for u in genomes], configs,
                           keys, todo, spent,
                           _parents(proposal.lineage, todo, book.genome_ids, space), rung, since)
        state = method.tell(state, genomes,
                            [book.cache.get(k, _nan_like(objectives)) for k in keys])
        stalled = 0 if todo else stalled + 1
        if todo:
            record = book.round_record(rnd, genomes[todo], [configs[i] for i in todo], fits,
                                       time.perf_counter() - start)
            history.append(record)
            if on_round is not None:
                on_round(_result(book, history, objectives))
            if any(bool(cb(rnd, record)) for cb in callbacks):
                break
        rnd += 1
    return _with_trained(_result(book, history, objectives), objective)


def _with_trained(result: SearchResult, objective: Objective) -> SearchResult:
    """``result`` with the best network the objective trained, if it keeps one."""
    trained = objective.trained() if isinstance(objective, Objective) else {}
    return dataclasses.replace(result, best_params=trained.get("params"),
                               best_spec=trained.get("spec"))


def _configs(space: Space, objective: Objective, genomes: np.ndarray,
             epochs: Optional[np.ndarray]) -> Tuple[List[Config], Optional[List[int]]]:
    """The configs of ``genomes`` and, for a rung, each one's epochs: cut to them by
    :meth:`Objective.at_epochs`, unless the objective does not train in epochs."""
    configs = [space.decode(u) for u in genomes]
    if epochs is None:
        return configs, None
    cut = [objective.at_epochs(c, int(e)) for c, e in zip(configs, epochs)]
    if any(c is None for c in cut):
        return configs, None
    return cast(List[Config], cut), [int(e) for e in epochs]


def _replay_key(space: Space, objective: Objective, evaluation: Mapping[str, Any]) -> ConfigKey:
    """The cache key of a past evaluation, from its genome (and rung)."""
    if "rung_epochs" not in evaluation:
        return space.key(evaluation["genome"])
    cut = objective.at_epochs(space.decode(evaluation["genome"]), int(evaluation["rung_epochs"]))
    return config_key(cut if cut is not None else space.decode(evaluation["genome"]))


def _parents(lineage: Optional[Lineage], todo: Sequence[int], ids: Mapping[ConfigKey, int],
             space: Space) -> Dict[int, List[int]]:
    """Evaluation ids of the parents of each new genome, when the method reports its
    :class:`Lineage` (rows of the pool it bred from)."""
    if lineage is None:
        return {}
    pool = [space.key(u) for u in lineage.pool]
    pairs = np.asarray(lineage.parents)
    out = {}
    for i in todo:
        found = [ids.get(pool[p]) for p in pairs[i]] if i < len(pairs) else []
        if found and all(f is not None for f in found):
            out[i] = [f for f in found if f is not None]  # all of them
    return out


def _result(book: Ledger, history: List[Dict[str, Any]], objectives: int) -> SearchResult:
    """The result of a search that made ``book``'s evaluations."""
    evaluations = book.evaluations
    scores = np.array([_first(e["fitness"]) for e in evaluations], np.float64)
    best: Optional[Dict[str, Any]] = None
    if scores.size and np.isfinite(scores).any():
        best = evaluations[int(np.nanargmax(scores))]
    pareto: List[Dict[str, Any]] = []
    if objectives > 1 and evaluations:
        objs = np.array([np.asarray(e["fitness"], np.float64) for e in evaluations])
        pareto = [evaluations[i] for i in genome_ops.pareto_front(objs)]
    return SearchResult(best_config=best["config"] if best else None,
                        best_fitness=best["fitness"] if best else None,
                        evaluations=evaluations, history=history, budget_used=book.used,
                        pareto=pareto, costs=dict(book.measured))
