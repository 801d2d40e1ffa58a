"""Differential evolution on weights: DE/rand/1/bin trials and greedy replacement
(Storn & Price, 1997)."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import mutation as mutation_mod
from . import selection as selection_mod
from .optimizers import make_optimizer
from .population import Population, raw_key
from .weight_config import WeightGAConfig


@functools.partial(jax.jit, static_argnames=("config",))
def de_trials(key, population: Population, config: WeightGAConfig) -> Population:
    """DE/rand/1/bin trial members with fresh optimizer state and new ids."""
    key = raw_key(key)
    k_de, k_keys = jax.random.split(key)
    trials = mutation_mod.de_rand_1_bin(k_de, population.params, config.de_f, config.de_cr)
    opt = jax.vmap(lambda p, h: make_optimizer(population.optimizer, h).init(p))(
        trials, population.hparams)
    keys = jax.vmap(functools.partial(jax.random.fold_in, k_keys))(jnp.arange(population.size))
    return population.replace(params=trials, opt_state=opt, keys=keys,
                              ids=(jnp.max(population.ids) + 1
                                   + jnp.arange(population.size)).astype(jnp.int32),
                              failed=jnp.zeros(population.size, bool))


def greedy_replace(trial, target):
    """DE's survivor selection: each trial replaces its target unless it is worse."""
    keep = np.asarray(selection_mod.clean_fitness(trial[1])
                      >= selection_mod.clean_fitness(target[1]))

    def pick(t, o):
        return jnp.where(keep.reshape((-1,) + (1,) * (t.ndim - 1)), t, o)
    population = jax.tree_util.tree_map(pick, trial[0], target[0])
    metrics = {k: jnp.where(keep, v, target[2][k]) for k, v in trial[2].items()}
    return population, jnp.where(keep, trial[1], target[1]), metrics


@dataclasses.dataclass(frozen=True)
class DERule:
    """DE as a strategy. Its state is the last generation's targets
    ``(population, fitness, metrics)``: the trials bred from them compete with them
    once evaluated (greedy replacement), and ``None`` before the first step."""
    config: WeightGAConfig

    def init(self, key, population: Population):  # pylint: disable=unused-argument
        """No targets yet."""
        return None

    def evaluated(self, state, population: Population, fitness, metrics):
        """Each evaluated trial replaces its target unless it is worse."""
        if state is None:
            return population, fitness, metrics
        return greedy_replace((population, fitness, metrics), state)

    def step(self, key, state, population: Population, fitness, metrics, generation):
        """``(trials, their targets as the new state, {"parents": each trial's target})``."""
        del state, generation
        trials = de_trials(key, population, self.config)
        return trials, (population, fitness, metrics), {
            "parents": jnp.stack([jnp.arange(population.size)] * 2, 1)}
