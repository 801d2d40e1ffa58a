"""Random search: uniform samples of the unit hypercube (Bergstra & Bengio, 2012)."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from .space import Space
from .strategy import Proposal


@dataclasses.dataclass(frozen=True)
class RandomState:
    """Random search keeps nothing but the space."""
    space: Space


@dataclasses.dataclass
class RandomSearch:
    """Uniform random sampling of the unit hypercube (Bergstra & Bengio, 2012)."""
    batch: int = 16

    def init_state(self, key: jax.Array, space: Space) -> RandomState:
        """Stateless but for the space."""
        del key
        return RandomState(space)

    def ask(self, key: jax.Array, state: RandomState) -> Proposal:
        """``batch`` random genomes."""
        return Proposal(np.asarray(jax.random.uniform(key, (self.batch, state.space.dim))))

    def tell(self, state: RandomState, genomes: np.ndarray,
             fitness: Sequence[Any]) -> RandomState:
        """Random search learns nothing."""
        del genomes, fitness
        return state
