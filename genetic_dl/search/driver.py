"""The search driver: any strategy against an objective under one budget.

Every method is a :class:`~genetic_dl.search.strategy.Strategy` over unit genomes (see
:mod:`genetic_dl.search.space`): ``ga``, ``random``, ``grid``, ``de`` and, with optuna
installed, ``tpe``, one file each. :func:`run_search` drives any of them against an
:class:`Objective` under a budget counted in the objective's cost units
(network-epochs for the bundled trainer, calls for a black box). An identical config
is never evaluated twice (the cache costs nothing).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import jax
import numpy as np

from ..core.tables import first_objective as _first
from ..core.tables import fitness_summary
from ..core.tables import to_pandas as records_to_pandas
from ..errors import check_choice
from . import genome_ops
from .de import DifferentialEvolution
from .ga import GA
from .grid_search import GridSearch
from .random_search import RandomSearch
from .space import ConfigKey, Space
from .strategy import Lineage, Strategy
from .tpe import TPE

Config = Dict[str, Any]


class Objective:
    """What a search optimises: a batch of configs -> fitness (maximised).

    Subclasses implement :meth:`evaluate` (a batch, so a trainer can train
    configs of one shape together) and :meth:`cost` (known before evaluation, so
    the budget is never overrun). Fitness is a float, or a tuple for
    multi-objective search; NaN marks a failure.
    """

    def cost(self, config: Config) -> float:  # pylint: disable=unused-argument
        """Budget units ``config`` will consume (default 1: one call)."""
        return 1.0

    def evaluate(self, configs: List[Config]) -> List[Any]:
        """Fitness of each config."""
        raise NotImplementedError

    def trained(self) -> Dict[str, Any]:
        """The best model it trained so far, ``{"params", "spec", ...}``, when it keeps
        one (:class:`~genetic_dl.search.trainer_objective.TrainerObjective`); ``{}`` otherwise."""
        return {}


@dataclasses.dataclass
class BlackBox(Objective):
    """Wraps ``f(config) -> float`` (or tuple) as an objective costing 1 per call."""
    fn: Callable[[Config], Any]

    def evaluate(self, configs: List[Config]) -> List[Any]:
        """``fn`` of each config."""
        return [self.fn(c) for c in configs]


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
      evaluations: one dict per evaluated config: id, config, fitness, cost,
        budget_used after it, round, genome, and parents (ids of the two
        evaluations it was bred from; the GA only, ``None`` otherwise).
      history: one dict per round: round, best, mean, std (of that round's
        fitness), diversity (mean per-gene std of its genomes), best_so_far,
        budget_used, elapsed, best_config.
      budget_used: cost actually spent (cache hits are free).
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


def _plan(keys: Sequence[ConfigKey], configs: Sequence[Config], cache: Mapping[ConfigKey, Any],
          objective: Objective, left: float) -> List[int]:
    """Indices of the new, distinct configs that fit in the ``left`` budget, in order."""
    todo: List[int] = []
    seen: Set[ConfigKey] = set()
    for i, (k, c) in enumerate(zip(keys, configs)):
        if k in cache or k in seen:
            continue
        cost = float(objective.cost(c))
        if cost <= left + 1e-9:
            todo.append(i)
            seen.add(k)
            left -= cost
    return todo


def run_search(method: Union[str, Strategy[Any]], space: Space, objective: Objective,
               budget: float, key: Union[int, jax.Array], *, objectives: int = 1,
               max_stalled_rounds: int = 20,
               callbacks: Sequence[Callable[[int, Dict[str, Any]], bool]] = (),
               replay: Sequence[Dict[str, Any]] = (),
               on_round: Optional[Callable[[SearchResult], None]] = None) -> SearchResult:
    """Runs ``method`` on ``objective`` until ``budget`` is spent.

    A config whose cost does not fit in the remaining budget is not evaluated, so
    the budget is never exceeded; a config seen before is answered from the cache
    at no cost.

    Args:
      method: a strategy instance (``GA()``, ``RandomSearch()``...) or a name
        of :data:`METHODS`.
      space: the search space.
      objective: an :class:`Objective` (wrap ``f(config)`` with :class:`BlackBox`).
      budget: total cost allowed.
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
    book = _Book(replayed={space.key(e["genome"]): e for e in replay})
    history: List[Dict[str, Any]] = []
    stalled, rnd, start = 0, 0, time.perf_counter()
    while book.used < budget and stalled < max_stalled_rounds:
        key, k_ask = jax.random.split(key)
        genomes, lineage = method.ask(k_ask, state)
        genomes = np.asarray(genomes, np.float64)
        if genomes.size == 0:
            break  # e.g. the grid is exhausted
        configs = [space.decode(u) for u in genomes]
        keys = [space.key(u) for u in genomes]
        todo = _plan(keys, configs, book.cache, objective, budget - book.used)
        fits = book.record(objective, rnd, genomes, configs, keys, todo,
                           _parents(lineage, todo, book.ids, space))
        state = method.tell(state, genomes,
                            [book.cache.get(k, _nan_like(objectives)) for k in keys])
        stalled = 0 if todo else stalled + 1
        if todo:
            record = book.round_record(rnd, genomes[todo], [configs[i] for i in todo], fits,
                                       time.perf_counter() - start)
            history.append(record)
            if on_round is not None:
                on_round(_result(book.evaluations, history, book.used, objectives))
            if any(bool(cb(rnd, record)) for cb in callbacks):
                break
        rnd += 1
    evaluations, used = book.evaluations, book.used
    result = _result(evaluations, history, used, objectives)
    trained = objective.trained() if isinstance(objective, Objective) else {}
    result.best_params, result.best_spec = trained.get("params"), trained.get("spec")
    return result


@dataclasses.dataclass
class _Book:
    """A search's ledger: cache, evaluations, ids, budget spent, best so far."""
    replayed: Dict[ConfigKey, Dict[str, Any]]
    cache: Dict[ConfigKey, Any] = dataclasses.field(default_factory=dict)
    ids: Dict[ConfigKey, int] = dataclasses.field(default_factory=dict)  # config key -> id
    evaluations: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    used: float = 0.0
    best_so_far: float = -math.inf

    def record(self, objective: Objective, rnd: int, genomes: np.ndarray,
               configs: Sequence[Config], keys: Sequence[ConfigKey], todo: Sequence[int],
               parents: Mapping[int, List[int]]) -> List[Any]:
        """Evaluates (or replays) ``todo`` and books each evaluation; returns the fitness."""
        fits = _evaluate(objective, [configs[i] for i in todo], [keys[i] for i in todo],
                         self.replayed)
        for i, f in zip(todo, fits):
            self.cache[keys[i]] = f
            self.ids[keys[i]] = len(self.evaluations)
            cost = float(objective.cost(configs[i]))
            self.used += cost
            self.evaluations.append({"id": len(self.evaluations), "config": configs[i],
                                     "fitness": f, "cost": cost, "budget_used": self.used,
                                     "round": rnd, "genome": genomes[i].tolist(),
                                     "parents": parents.get(i)})
        return fits

    def round_record(self, rnd: int, genomes: np.ndarray, configs: Sequence[Config],
                     fits: Sequence[Any], elapsed: float) -> Dict[str, Any]:
        """The round's history record."""
        firsts = [_first(f) for f in fits]
        self.best_so_far = max(self.best_so_far, max((f for f in firsts if np.isfinite(f)),
                                                     default=-math.inf))
        return {"round": rnd, **fitness_summary(_first(f) for f in fits),
                "diversity": float(np.mean(np.std(genomes, axis=0))),
                "best_so_far": self.best_so_far, "budget_used": self.used, "elapsed": elapsed,
                "best_config": configs[int(np.argmax(np.nan_to_num(firsts, nan=-np.inf)))]}


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


def _evaluate(objective: Objective, configs: Sequence[Config], keys: Sequence[ConfigKey],
              replayed: Mapping[ConfigKey, Mapping[str, Any]]) -> List[Any]:
    """Fitness of ``configs``: from ``replayed`` (a resumed run's past) or by evaluating."""
    fresh = [i for i, k in enumerate(keys) if k not in replayed]
    fits = dict(zip(fresh, objective.evaluate([configs[i] for i in fresh]) if fresh else []))
    return [fits[i] if i in fits else _tuple(replayed[k]["fitness"]) for i, k in enumerate(keys)]


def _tuple(fitness: Any) -> Any:
    """A fitness read back from JSON: lists are multi-objective tuples."""
    return tuple(fitness) if isinstance(fitness, list) else fitness


def _result(evaluations: List[Dict[str, Any]], history: List[Dict[str, Any]], used: float,
            objectives: int) -> SearchResult:
    """The result of a search that made ``evaluations``."""
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
                        evaluations=evaluations, history=history, budget_used=used,
                        pareto=pareto)
