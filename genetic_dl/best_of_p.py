"""The best-of-P control: P members trained independently, nothing exchanged
(the equal-compute baseline of the weight GA)."""
from __future__ import annotations

import dataclasses

from .population import Population
from .weight_config import WeightGAConfig


@dataclasses.dataclass(frozen=True)
class BestOfP:
    """Rule ``"none"`` as a strategy: no state, and a step that changes nothing."""
    config: WeightGAConfig

    def init(self, key, population: Population):  # pylint: disable=unused-argument
        """No rule state."""
        return None

    def evaluated(self, state, population: Population, fitness, metrics):
        """The generation as evaluated."""
        del state
        return population, fitness, metrics

    def step(self, key, state, population: Population, fitness, metrics, generation):
        """The same population (no parents: no member is new)."""
        del key, fitness, metrics, generation
        return population, state, {}
