"""The best-of-P control: P members trained independently, nothing exchanged
(the equal-compute baseline of the weight GA)."""
from __future__ import annotations

import dataclasses
from typing import Tuple

import jax

from ...core.population import Population
from .base import Metrics, RuleBase, StepInfo


@dataclasses.dataclass(frozen=True)
class BestOfP(RuleBase):
    """Rule ``"none"`` as a strategy: no state, and a step that changes nothing."""

    def step(self, key: jax.Array, state: None, population: Population, fitness: jax.Array,
             metrics: Metrics, generation: int) -> Tuple[Population, None, StepInfo]:
        """The same population (no parents: no member is new)."""
        del key, fitness, metrics, generation
        return population, state, {}
