"""The weight loop's generation-rule protocol, and a base holding a rule's defaults.

A rule is a strategy over the population with a typed, immutable state of its own:
``init(key, population) -> state``; ``train(state, population, data, epochs, ...)``
(a generation's gradient descent: :func:`~genetic_dl.core.train.train` by default, so
a rule that acts during training overrides it); ``evaluated(state, population,
fitness, metrics)`` (the generation that survives evaluation: DE's greedy
replacement, the identity otherwise); ``step(key, state, population, fitness,
metrics, generation) -> (population, state, info)``, with ``info["parents"]`` the
``(P, 2)`` parent rows of the next generation's members.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Protocol, Tuple, Union, runtime_checkable

import jax

from ...core.population import Population
from ...core.train import train
from ...core.stream import Stream
from ...data import Dataset
from ..config import WeightGAConfig

Metrics = Mapping[str, jax.Array]
StepInfo = Dict[str, Any]


@runtime_checkable
class Rule(Protocol):
    """What the weight loop asks of a generation rule (see the module docstring)."""

    @property
    def config(self) -> WeightGAConfig:
        """The loop's options (read-only: a rule is a frozen value)."""

    def init(self, key: jax.Array, population: Population) -> Any:
        """The rule's state before generation 0 (``None`` when it has none)."""

    def train(self, state: Any, population: Population, data: Union[Dataset, Stream],
              epochs: int, *, batch_size: int, mesh: Any) -> Population:
        """The generation's gradient descent."""

    def evaluated(self, state: Any, population: Population, fitness: jax.Array,
                  metrics: Metrics) -> Tuple[Population, jax.Array, Metrics]:
        """The generation that survives its evaluation."""

    def step(self, key: jax.Array, state: Any, population: Population, fitness: jax.Array,
             metrics: Metrics, generation: int) -> Tuple[Population, Any, StepInfo]:
        """The next generation, the rule's next state and ``{"parents": (P, 2)}``."""


@dataclasses.dataclass(frozen=True)
class RuleBase:
    """A rule's defaults: no state of its own (``init`` gives ``None``), plain training
    and nothing replaced after evaluation; rules override what they need."""
    config: WeightGAConfig

    def init(self, key: jax.Array, population: Population) -> Any:
        """No rule state (``None``)."""
        del key, population

    def train(self, state: Any, population: Population, data: Union[Dataset, Stream],
              epochs: int, *, batch_size: int, mesh: Any) -> Population:
        """``epochs`` epochs of every member's own optimizer."""
        del state
        return train(population, data, epochs, batch_size=batch_size, mesh=mesh)[0]

    def evaluated(self, state: Any, population: Population, fitness: jax.Array,
                  metrics: Metrics) -> Tuple[Population, jax.Array, Metrics]:
        """The generation as evaluated."""
        del state
        return population, fitness, metrics
