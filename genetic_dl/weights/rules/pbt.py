"""Population-based training's exploit/explore step (Jaderberg et al., 2017)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Tuple

import jax
import jax.numpy as jnp

from ...operators import mutation as mutation_mod
from ...core.population import Population, raw_key
from .base import Metrics, RuleBase, StepInfo
from ..config import WeightGAConfig


@functools.partial(jax.jit, static_argnames=("config",))
def pbt_step(key: jax.Array, population: Population, fitness: jax.Array,
             config: WeightGAConfig) -> Tuple[Population, jax.Array]:
    """PBT exploit/explore: the bottom quantile copies the top and perturbs hyperparameters.

    Returns:
      ``(population, parents)`` as :func:`ga_step`; a copied member gets a new id.
    """
    key = raw_key(key)
    k_pbt, k_keys = jax.random.split(key)
    source, hparams = mutation_mod.pbt_exploit_explore(
        k_pbt, fitness, population.hparams, dict(config.pbt_bounds), config.pbt_quantile,
        config.pbt_resample)
    copied = source != jnp.arange(population.size)
    new = jax.tree_util.tree_map(lambda x: x[source], population)
    fresh_keys = jax.vmap(functools.partial(jax.random.fold_in, k_keys))(
        jnp.arange(population.size))
    ids = jnp.where(copied, jnp.max(population.ids) + 1 + jnp.cumsum(copied) - 1,
                    population.ids).astype(jnp.int32)
    new = new.replace(hparams=hparams, ids=ids, failed=jnp.where(copied, False, new.failed),
                      keys=jnp.where(copied[:, None], fresh_keys, population.keys))
    return new, jnp.stack([source, source], 1)


@dataclasses.dataclass(frozen=True)
class PBTRule(RuleBase):
    """PBT as a strategy: no state of its own; each step exploits and explores."""

    def step(self, key: jax.Array, state: None, population: Population, fitness: jax.Array,
             metrics: Metrics, generation: int) -> Tuple[Population, None, StepInfo]:
        """``(next population, state, {"parents": (P, 2) rows})``."""
        del metrics, generation
        population, parents = pbt_step(key, population, fitness, self.config)
        return population, state, {"parents": parents}
