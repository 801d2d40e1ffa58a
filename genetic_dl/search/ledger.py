"""A search's ledger: the evaluation cache, the evaluations and what they spent.

Each evaluation is charged its cost in the budget's unit (the objective's
:meth:`~genetic_dl.search.objective.Objective.cost`, one unit of its
:meth:`~genetic_dl.search.objective.Objective.costs`, or wall seconds) and
records every unit the objective measures, so a run reports, e.g., both the
network-epochs and the FLOP-epochs it used whichever one its budget counted.
A resumed run's past evaluations (``replayed``) are answered from their records,
costs included: nothing is evaluated again.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from ..core.tables import first_objective as _first
from ..core.tables import fitness_summary
from ..errors import check_choice
from .objective import Config, Objective
from .space import ConfigKey

# The budget unit charged after each round: its wall time, shared by its evaluations.
SECONDS = "seconds"


@dataclasses.dataclass
class Ledger:
    """Cache, evaluations, ids and spending of one search.

    Attributes:
      replayed: a resumed run's past evaluations by config key.
      unit: what the budget counts (``None``: the objective's ``cost``).
      cache: fitness by config key.
      genome_ids: the latest evaluation id of each genome (by the key of its config).
      evaluations: one record per evaluation.
      used: budget spent, in ``unit``.
      measured: totals of each unit the objective measures.
      best_so_far: best first-objective fitness so far.
    """
    replayed: Dict[ConfigKey, Dict[str, Any]]
    unit: Optional[str] = None
    cache: Dict[ConfigKey, Any] = dataclasses.field(default_factory=dict)
    genome_ids: Dict[ConfigKey, int] = dataclasses.field(default_factory=dict)
    evaluations: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    used: float = 0.0
    measured: Dict[str, float] = dataclasses.field(default_factory=dict)
    best_so_far: float = -math.inf

    def spend(self, objective: Objective, key: ConfigKey, config: Config) -> Dict[str, float]:
        """What evaluating ``config`` will spend: ``cost`` in the budget's unit (0 for
        seconds, charged after the round) and every unit the objective measures."""
        measures = {k: float(v) for k, v in objective.costs(config).items()}
        if self.unit is not None:
            check_choice("budget_unit", self.unit, [*measures, SECONDS],
                         "(the units this objective measures, or seconds)")
        past = self.replayed.get(key)
        if past is not None:
            return {"cost": float(past["cost"]),
                    **{k: float(past.get(k, v)) for k, v in measures.items()}}
        if self.unit is None:
            return {"cost": float(objective.cost(config)), **measures}
        return {"cost": 0.0 if self.unit == SECONDS else measures[self.unit], **measures}

    def plan(self, objective: Objective, keys: Sequence[ConfigKey], configs: Sequence[Config],
             left: float) -> Tuple[List[int], Dict[int, Dict[str, float]]]:
        """Indices of the new, distinct configs that fit in the ``left`` budget, in order,
        and what each will spend (:meth:`spend`)."""
        todo: List[int] = []
        spent: Dict[int, Dict[str, float]] = {}
        seen: Set[ConfigKey] = set()
        for i, (k, c) in enumerate(zip(keys, configs)):
            if k in self.cache or k in seen:
                continue
            spend = self.spend(objective, k, c)
            if spend["cost"] <= left + 1e-9:
                todo.append(i)
                spent[i] = spend
                seen.add(k)
                left -= spend["cost"]
        return todo, spent

    def record(self, objective: Objective, rnd: int, genomes: np.ndarray,
               genome_keys: Sequence[ConfigKey], configs: Sequence[Config],
               keys: Sequence[ConfigKey], todo: Sequence[int],
               spent: Mapping[int, Dict[str, float]], parents: Mapping[int, List[int]],
               rung: Optional[Sequence[int]], since: float) -> List[Any]:
        """Evaluates (or replays) ``todo`` and books each evaluation; returns the fitness.

        Args:
          rung: the epochs of each config's rung (``None``: not a rung); recorded, and
            the configs go to :meth:`Objective.evaluate_rung`.
          since: when the round began (wall seconds are charged from it).
        """
        fresh = [i for i in todo if keys[i] not in self.replayed]
        fits = dict(zip(fresh, _evaluate(objective, [configs[i] for i in fresh], rung is not None)
                        if fresh else []))
        seconds = (time.perf_counter() - since) / max(1, len(fresh))
        out = []
        for i in todo:
            past = self.replayed.get(keys[i])
            fit = fits[i] if past is None else _tuple(past["fitness"])
            spend = dict(spent[i])
            if self.unit == SECONDS and past is None:
                spend["cost"] = seconds
            self.cache[keys[i]] = fit
            self.genome_ids[genome_keys[i]] = len(self.evaluations)
            self.used += spend["cost"]
            for unit, value in spend.items():
                if unit != "cost":
                    self.measured[unit] = self.measured.get(unit, 0.0) + value
            self.evaluations.append({"id": len(self.evaluations), "config": configs[i],
                                     "fitness": fit, **spend, "budget_used": self.used,
                                     "round": rnd, "genome": genomes[i].tolist(),
                                     "parents": parents.get(i),
                                     **({"rung_epochs": int(rung[i])} if rung is not None else {})})
            out.append(fit)
        return out

    def round_record(self, rnd: int, genomes: np.ndarray, configs: Sequence[Config],
                     fits: Sequence[Any], elapsed: float) -> Dict[str, Any]:
        """The round's history record."""
        firsts = [_first(f) for f in fits]
        self.best_so_far = max(self.best_so_far, max((f for f in firsts if np.isfinite(f)),
                                                     default=-math.inf))
        return {"round": rnd, **fitness_summary(_first(f) for f in fits),
                "diversity": float(np.mean(np.std(genomes, axis=0))),
                "best_so_far": self.best_so_far, "budget_used": self.used, "elapsed": elapsed,
                **{f"{unit}_used": value for unit, value in self.measured.items()},
                "best_config": configs[int(np.argmax(np.nan_to_num(firsts, nan=-np.inf)))]}


def _evaluate(objective: Objective, configs: List[Config], rung: bool) -> List[Any]:
    """Fitness of ``configs``, at a rung (:meth:`Objective.evaluate_rung`) or in full."""
    return objective.evaluate_rung(configs) if rung else objective.evaluate(configs)


def _tuple(fitness: Any) -> Any:
    """A fitness read back from JSON: lists are multi-objective tuples."""
    return tuple(fitness) if isinstance(fitness, list) else fitness
