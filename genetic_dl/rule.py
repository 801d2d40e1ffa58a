"""The weight GA's generation-rule protocol, and a base holding a rule's defaults.

A rule is a strategy over the population: ``init(key, population) -> state``;
``evaluated(state, population, fitness, metrics)`` (the generation that survives
evaluation: DE's greedy replacement, the identity otherwise); ``step(key, state,
population, fitness, metrics, generation) -> (population, state, info)``, with
``info["parents"]`` the ``(P, 2)`` parent rows of the next generation's members.
"""
from __future__ import annotations

import dataclasses

from .population import Population
from .weight_config import WeightGAConfig


@dataclasses.dataclass(frozen=True)
class RuleBase:
    """A rule's defaults: no state of its own (``init`` gives ``None``) and
    nothing replaced after evaluation; rules override what they need."""
    config: WeightGAConfig

    def init(self, key, population: Population):  # pylint: disable=unused-argument
        """No rule state."""
        return None

    def evaluated(self, state, population: Population, fitness, metrics):
        """The generation as evaluated."""
        del state
        return population, fitness, metrics
