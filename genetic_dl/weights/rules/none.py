"""The best-of-P control: P members trained independently, nothing exchanged
(the equal-compute baseline of the weight GA)."""
from __future__ import annotations

import dataclasses

from ...core.population import Population
from .base import RuleBase


@dataclasses.dataclass(frozen=True)
class BestOfP(RuleBase):
    """Rule ``"none"`` as a strategy: no state, and a step that changes nothing."""

    def step(self, key, state, population: Population, fitness, metrics, generation):
        """The same population (no parents: no member is new)."""
        del key, fitness, metrics, generation
        return population, state, {}
