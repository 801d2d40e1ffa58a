"""Differential evolution on unit genomes: DE/rand/1/bin with greedy replacement
(Storn & Price, 1997)."""
from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..operators.mutation import de_rand_1_bin
from ..operators.selection import survives
from . import genome_ops
from .space import Space
from .strategy import Proposal


@dataclasses.dataclass(frozen=True, eq=False)
class DEState:
    """The targets: ``genomes`` and their ``fitness`` (``None`` before the first is told)."""
    space: Space
    genomes: np.ndarray
    fitness: Optional[List[Any]] = None


@dataclasses.dataclass
class DifferentialEvolution:
    """DE/rand/1/bin on unit genomes with greedy replacement (Storn & Price, 1997)."""
    population: int = 16
    f: float = 0.5
    cr: float = 0.9

    def init_state(self, key: jax.Array, space: Space) -> DEState:
        """A Latin-hypercube first population."""
        if self.population < 4:
            raise ValueError("DE needs a population of at least 4")
        return DEState(space, np.asarray(genome_ops.init_lhs(key, self.population, space.dim)))

    def ask(self, key: jax.Array, state: DEState) -> Proposal:
        """The first population, then one trial per target."""
        if state.fitness is None:
            return Proposal(state.genomes)
        trials = de_rand_1_bin(key, {"g": jnp.asarray(state.genomes)}, self.f, self.cr)["g"]
        return Proposal(np.asarray(genome_ops.reflect(trials)))

    def tell(self, state: DEState, genomes: np.ndarray, fitness: Sequence[Any]) -> DEState:
        """Each trial replaces its target unless it is worse."""
        if state.fitness is None:
            return dataclasses.replace(state, genomes=np.asarray(genomes), fitness=list(fitness))
        keep = np.asarray(survives(np.asarray(fitness, np.float64),
                                   np.asarray(state.fitness, np.float64)))
        return dataclasses.replace(
            state, genomes=np.where(keep[:, None], genomes, state.genomes),
            fitness=[f if k else o for f, o, k in zip(fitness, state.fitness, keep)])
