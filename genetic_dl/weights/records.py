"""What a weight-GA run records: its result, loop state (the checkpoint), per-generation
records, hall of fame and the population's weight diversity."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core.member import Member, population_member
from ..core.tables import fitness_summary
from ..core.tables import to_pandas as records_to_pandas
from ..core.population import Population


@dataclasses.dataclass
class WeightGAResult:
    """What :func:`evolve_weights` returns.

    Attributes:
      population: the final trained population.
      best_params: params of the best member ever seen (validation fitness).
      best_fitness: its fitness; ``best_id`` its member id; ``best_generation``.
      best_metrics: its validation metrics.
      history: one dict per generation (best/mean/std fitness, failed,
        diversity, network_epochs, elapsed).
      lineage: ``(generation, child_id, parent_a_id, parent_b_id)`` per child.
      hall_of_fame: the best distinct members ever seen, best first:
        ``{fitness, id, generation, params, collections, hparams}`` each.
      best_collections: the best member's other variables (e.g. ``batch_stats``), which
        it needs next to ``best_params`` to compute what it was scored on.
      best_hparams: the best member's hyperparameters.
    """
    population: Population
    best_params: Any
    best_fitness: float
    best_id: int
    best_generation: int
    best_metrics: Dict[str, float]
    history: List[Dict[str, Any]]
    lineage: List[Tuple[int, int, int, int]]
    hall_of_fame: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    best_collections: Any = dataclasses.field(default_factory=dict)
    best_hparams: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def best_member(self) -> Member:
        """The best member as a :class:`~genetic_dl.core.member.Member` with the
        population's learner (``gdl.save_model`` saves it)."""
        return member_of(self.best_params, self.best_collections, self.best_hparams,
                         self.population)

    def to_pandas(self, what: str = "history") -> Any:
        """``history`` (one row per generation; the best member's metrics one column each,
        ``best_<metric>``) or ``lineage`` as a ``pandas.DataFrame`` (typed ``Any``: pandas
        is optional)."""
        if what == "lineage":
            return records_to_pandas([dict(zip(("generation", "child", "parent_a", "parent_b"),
                                               row)) for row in self.lineage])
        return records_to_pandas([
            {**{k: v for k, v in h.items()
                if k not in ("member_ids", "member_fitness", "best_metrics")},
             **{f"best_{k}": v for k, v in h.get("best_metrics", {}).items()}}
            for h in self.history])


@jax.jit
def diversity(params: Any) -> jax.Array:
    """Mean RMS distance of the members' weights to the population's mean weights."""
    leaves = jax.tree_util.tree_leaves(params)
    sq = sum(jnp.sum((x - x.mean(0)) ** 2, axis=tuple(range(1, x.ndim))) for x in leaves)
    n = sum(x[0].size for x in leaves)
    return jnp.mean(jnp.sqrt(sq / n))


@dataclasses.dataclass(frozen=True)
class LoopState:
    """Everything :func:`evolve_weights` needs to continue a run exactly (a checkpoint);
    an immutable value, replaced each generation.

    Attributes:
      generation: the next generation to train.
      population: the population that generation trains.
      key: the GA's raw PRNG key.
      spent: network-epochs spent so far.
      history, lineage: as in :class:`WeightGAResult`.
      best: ``{fitness, params, collections, hparams, id, generation, metrics}`` of the
        best so far.
      rule_state: the generation rule's own immutable state (``rule.init``, then
        each ``rule.step``'s): :class:`~genetic_dl.weights.rules.ga.GAState` (the
        self-adaptive mutation scales), :class:`~genetic_dl.weights.rules.de.DEState`
        (the targets the trials compete with), or ``None``.
      hall: the hall of fame so far (see :class:`WeightGAResult`).
    """
    generation: int
    population: Population
    key: jax.Array
    spent: int = 0
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    lineage: List[Tuple[int, int, int, int]] = dataclasses.field(default_factory=list)
    best: Dict[str, Any] = dataclasses.field(default_factory=lambda: {
        "fitness": -np.inf, "params": None, "collections": {}, "hparams": {}, "id": -1,
        "generation": -1, "metrics": {}})
    rule_state: Any = None
    hall: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


def update_hall(hall_of_fame: List[Dict[str, Any]], population: Population, fit: np.ndarray,
                gen: int, size: int) -> List[Dict[str, Any]]:
    """The hall of fame with this generation's best members merged in (one entry per id)."""
    ids = np.asarray(population.ids)
    order = [int(i) for i in np.argsort(-np.nan_to_num(fit, nan=-np.inf), kind="stable")
             if np.isfinite(fit[i])][:size]
    hall = {h["id"]: h for h in hall_of_fame}
    fresh = {}
    for i in order:
        member = int(ids[i])
        if member not in hall or fit[i] > hall[member]["fitness"]:
            hall[member] = {"fitness": float(fit[i]), "id": member, "generation": gen,
                            "params": None, "collections": {}, "hparams": {}}
            fresh[member] = i
    ranked = sorted(hall.values(), key=lambda h: (-h["fitness"], h["id"]))[:size]
    for h in ranked:
        if h["id"] in fresh:  # copy the arrays only of members that made it in
            h.update(_arrays(population_member(population, fresh[h["id"]])))
    return ranked


def _arrays(member: Member) -> Dict[str, Any]:
    """A member's arrays as the entries of a best or hall-of-fame record."""
    return {"params": member.params, "collections": member.collections,
            "hparams": dict(member.hparams)}


def member_of(params: Any, collections: Any, hparams: Mapping[str, Any],
              population: Population) -> Member:
    """The :class:`~genetic_dl.core.member.Member` of a record's arrays, run by
    ``population``'s learner."""
    return Member(params=params, collections=collections,
                  hparams={k: np.asarray(v) for k, v in hparams.items()},
                  learner=population.learner, feature_shape=tuple(population.feature_shape),
                  out_dim=int(population.out_dim), feature_dtype=population.feature_dtype)


def generation_record(gen: int, population: Population, fit_np: np.ndarray,
                      metrics: Mapping[str, jax.Array], spent: int, best: Dict[str, Any],
                      elapsed: float) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The generation's history record, and the best member so far (``best`` or one of
    this generation)."""
    record = {"generation": gen, **fitness_summary(fit_np),
              "diversity": float(diversity(population.params)),
              "network_epochs": spent, "elapsed": elapsed,
              "member_ids": np.asarray(population.ids).tolist(),
              "member_fitness": fit_np.tolist()}
    if np.isfinite(fit_np).any():
        i = int(np.nanargmax(fit_np))
        record["best_metrics"] = {k: float(v[i]) for k, v in metrics.items()}
        if fit_np[i] > best["fitness"]:
            best = {"fitness": float(fit_np[i]), **_arrays(population_member(population, i)),
                    "id": int(population.ids[i]), "generation": gen,
                    "metrics": record["best_metrics"]}
    return record, best
