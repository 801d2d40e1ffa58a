"""The weight-level GA hybrid with gradient descent (GDNN).

Each generation the whole population trains for a few epochs (one vmapped
program), is scored on the validation split, and a jitted step selects
parents, crosses their weight tensors over and mutates the children, which
train on in the next generation. ``rule`` picks the generation rule:
``"ga"`` (selection + crossover + mutation), ``"pbt"`` (exploit/explore, no
crossover), ``"de"`` (DE/rand/1/bin with greedy replacement) or ``"none"``
(independent training: the best-of-P equal-compute control).

This module holds the loop; the options are in :mod:`genetic_dl.weights.config`,
the rules in :mod:`genetic_dl.weights.rules` (one file each), aligned crossover's
options in :mod:`genetic_dl.operators.alignment`, and the result, loop state and
per-generation records in :mod:`genetic_dl.weights.records`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ..core.population import Population, raw_key
from ..core.train import evaluate, fitness_from_metrics
from ..core.stream import Stream
from ..data import Dataset
from ..operators.recombination import shared_start
from .config import FitnessFn, WeightGAConfig
from .records import LoopState, WeightGAResult, generation_record, update_hall
from .rules import Rule, rule_of
from .rules.base import Metrics


class AllMembersFailed(ValueError):
    """Every member of a generation failed: no member is left to select from.

    Attributes:
      generation: the generation.
      diverged: members whose training loss went NaN/inf (``population.failed``).
      non_finite: the other members, whose validation fitness was NaN/inf.
      state: the :class:`LoopState` with that generation's record (its ``best`` is the
        best member of the earlier generations, if any).
    """

    def __init__(self, state: LoopState, diverged: int, non_finite: int):
        gen = state.history[-1]["generation"]
        super().__init__(
            f"generation {gen}: every member failed ({diverged} of {diverged + non_finite} "
            f"diverged in training with a NaN/inf loss, {non_finite} had non-finite validation "
            f"metrics): lower the learning rates (hparams learning_rate, --lr) and check that "
            f"the model's outputs fit its loss")
        self.generation = gen
        self.diverged, self.non_finite = diverged, non_finite
        self.state = state


def member_fitness(population: Population, data: Union[Dataset, Stream],
                   fitness: FitnessFn) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """``(fitness, metrics)`` of every member on the validation split (NaN: failed)."""
    metrics = evaluate(population, data, "val")
    if callable(fitness):
        fit = jnp.asarray(fitness(metrics), jnp.float32)
        fit = jnp.where(population.failed | ~jnp.isfinite(fit), jnp.nan, fit)
    else:
        fit = fitness_from_metrics(metrics, fitness, population.failed,
                                   population.learner.maximize(fitness))
    return fit, metrics


def evolve_weights(key: jax.Array, population: Population, data: Union[Dataset, Stream], *,
                   generations: int, epochs: int, batch_size: int = 64,
                   config: Optional[WeightGAConfig] = None,
                   fitness: Optional[FitnessFn] = None,
                   callbacks: Sequence[Callable[[int, Population, Mapping[str, Any]], bool]] = (),
                   mesh: Union[Mesh, str, None] = "auto", resume: Optional[LoopState] = None,
                   on_state: Optional[Callable[[LoopState], None]] = None) -> WeightGAResult:
    """Runs the GDNN loop: train ``epochs`` -> validation fitness -> GA step, G times.

    Args:
      key: PRNG key of the GA's own randomness (training uses member keys).
      population: the initial population (e.g. from ``init_population``); with
        ``config.shared_start``, every member first takes member 0's state.
      data: dataset; fitness only ever sees its validation split.
      generations: number of generations G (each trains ``epochs`` epochs).
      epochs: epochs per generation.
      batch_size: minibatch size.
      config: GA options; ``WeightGAConfig()`` when ``None``.
      fitness: a metric name (``"loss"``: negated validation loss,
        ``"accuracy"``, ``"f1"``...) or ``f(metrics) -> (P,)`` to maximise;
        ``None``: the learner's default (``"loss"``; the caption family's
        ``"slot_accuracy"``, the mean slot accuracy).
      callbacks: ``cb(generation, population, record) -> stop?`` after each
        generation's evaluation.
      mesh: as in :func:`~genetic_dl.core.train.train`.
      resume: a :class:`LoopState` to continue from (``key`` and ``population``
        are then ignored); the result equals the uninterrupted run's.
      on_state: called with the :class:`LoopState` after every GA step (to
        write checkpoints).

    Returns:
      A :class:`WeightGAResult`.

    Raises:
      AllMembersFailed: every member of a generation failed (a ``ValueError``; one
        failed member is only ranked last).
    """
    config = config or WeightGAConfig()
    fitness = fitness or (resume.population if resume else population).learner.default_fitness()
    if generations < 1:
        raise ValueError(f"generations must be at least 1, got {generations}")
    rule = rule_of(config)
    if resume is None and config.shared_start:
        population = shared_start(population)
    state = resume or LoopState(generation=0, population=population, key=raw_key(key),
                                rule_state=rule.init(key, population))
    start = time.perf_counter()
    for gen in range(state.generation, generations):
        population = rule.train(state.rule_state, state.population, data, epochs,
                                batch_size=batch_size, mesh=mesh)
        spent = state.spent + population.size * epochs
        fit, measured = member_fitness(population, data, fitness)
        population, fit, metrics = rule.evaluated(state.rule_state, population, fit, measured)
        fit_np = np.asarray(fit)
        record, best = generation_record(gen, population, fit_np, metrics, spent, state.best,
                                         time.perf_counter() - start)
        state = dataclasses.replace(
            state, population=population, spent=spent, best=best,
            hall=update_hall(state.hall, population, fit_np, gen, config.hall_of_fame),
            history=state.history + [record])
        if not np.isfinite(fit_np).any():
            diverged = int(np.asarray(population.failed).sum())
            raise AllMembersFailed(state, diverged, population.size - diverged)
        stop = any(bool(cb(gen, population, record)) for cb in callbacks)
        if stop or gen == generations - 1:
            break
        state = _advance(state, rule, fit, metrics, gen)
        if on_state is not None:
            on_state(state)
    best = state.best
    return WeightGAResult(population=state.population, best_params=best["params"],
                          best_fitness=best["fitness"], best_id=best["id"],
                          best_generation=best["generation"], best_metrics=best["metrics"],
                          history=state.history, lineage=state.lineage,
                          hall_of_fame=list(state.hall),
                          best_collections=best.get("collections", {}),
                          best_hparams=best.get("hparams", {}))


def _advance(state: LoopState, rule: Rule, fit: jax.Array, metrics: Metrics,
             gen: int) -> LoopState:
    """The loop state of generation ``gen + 1``: the rule's step applied."""
    population = state.population
    key, k_step = jax.random.split(state.key)
    old_ids = np.asarray(population.ids)
    population, rule_state, info = rule.step(k_step, state.rule_state, population, fit, metrics,
                                             gen)
    lineage = list(state.lineage)
    if info.get("parents") is not None:
        new_ids, parents = np.asarray(population.ids), np.asarray(info["parents"])
        lineage.extend((gen + 1, int(c), int(old_ids[pa]), int(old_ids[pb]))
                       for c, (pa, pb) in zip(new_ids, parents) if c not in old_ids)
    return dataclasses.replace(state, population=population, key=key, generation=gen + 1,
                               rule_state=rule_state, lineage=lineage)
