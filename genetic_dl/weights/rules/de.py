"""Differential evolution on weights: DE/rand/1/bin trials and greedy replacement
(Storn & Price, 1997)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from ...operators import mutation as mutation_mod
from ...operators import selection as selection_mod
from ...core.optimizers import make_optimizer
from ...core.population import Population, raw_key
from ..config import WeightGAConfig
from .base import Metrics, RuleBase, StepInfo

# An evaluated generation: ``(population, fitness, metrics)``.
Evaluated = Tuple[Population, jax.Array, Metrics]


@functools.partial(jax.jit, static_argnames=("config",))
def de_trials(key: jax.Array, population: Population, config: WeightGAConfig) -> Population:
    """DE/rand/1/bin trial members with fresh optimizer state and new ids."""
    key = raw_key(key)
    k_de, k_keys = jax.random.split(key)
    trials = mutation_mod.de_rand_1_bin(k_de, population.params, config.de_f, config.de_cr)
    opt = jax.vmap(lambda p, h: make_optimizer(population.optimizer, h).init(p))(
        trials, population.hparams)
    keys = jax.vmap(functools.partial(jax.random.fold_in, k_keys))(jnp.arange(population.size))
    return dataclasses.replace(population, params=trials, opt_state=opt, keys=keys,
                               ids=(jnp.max(population.ids) + 1
                                    + jnp.arange(population.size)).astype(jnp.int32),
                               failed=jnp.zeros(population.size, bool))


def greedy_replace(trial: Evaluated, target: Evaluated) -> Tuple[Population, jax.Array, Metrics]:
    """DE's survivor selection: each trial replaces its target unless it is worse."""
    keep = selection_mod.survives(trial[1], target[1])

    def pick(t: jax.Array, o: jax.Array) -> jax.Array:
        return jnp.where(keep.reshape((-1,) + (1,) * (t.ndim - 1)), t, o)
    population = jax.tree_util.tree_map(pick, trial[0], target[0])
    metrics = {k: jnp.where(keep, v, target[2][k]) for k, v in trial[2].items()}
    return population, jnp.where(keep, trial[1], target[1]), metrics


@struct.dataclass
class DEState:
    """The DE rule's state after a step: the targets the trials compete with once
    evaluated (greedy replacement)."""
    population: Population
    fitness: jax.Array
    metrics: Dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class DERule(RuleBase):
    """DE as a strategy. Its state is a :class:`DEState` of the last generation's
    targets, and ``None`` before the first step."""

    def evaluated(self, state: Optional[DEState], population: Population, fitness: jax.Array,
                  metrics: Metrics) -> Tuple[Population, jax.Array, Metrics]:
        """Each evaluated trial replaces its target unless it is worse."""
        if state is None:
            return population, fitness, metrics
        return greedy_replace((population, fitness, metrics),
                              (state.population, state.fitness, state.metrics))

    def step(self, key: jax.Array, state: Optional[DEState], population: Population,
             fitness: jax.Array, metrics: Metrics,
             generation: int) -> Tuple[Population, DEState, StepInfo]:
        """``(trials, their targets as the new state, {"parents": each trial's target})``."""
        del state, generation
        trials = de_trials(key, population, self.config)
        return trials, DEState(population, fitness, dict(metrics)), {
            "parents": jnp.stack([jnp.arange(population.size)] * 2, 1)}
