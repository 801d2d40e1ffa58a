"""Grid search over every category and ``resolution`` values per numeric gene."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence, Tuple

import jax
import numpy as np

from . import genome_ops
from .space import Space
from .strategy import Proposal


@dataclasses.dataclass(frozen=True)
class GridState:
    """The grid and where its seeded visiting order stands.

    Attributes:
      space: the search space.
      axes: the grid's values per gene (unit coordinates).
      size: the number of grid points.
      mult, offset: the affine bijection ``i -> (mult i + offset) mod size``.
      next: how many points were visited.
    """
    space: Space
    axes: Tuple[Tuple[float, ...], ...]
    size: int
    mult: int
    offset: int
    next: int = 0


@dataclasses.dataclass
class GridSearch:
    """A full grid (every category, ``resolution`` values per numeric gene).

    Points are visited in a seeded pseudo-random order (an affine bijection of
    the grid index), so a budget that covers part of the grid covers it evenly
    rather than one corner.
    """
    resolution: int = 3
    batch: int = 16

    def init_state(self, key: jax.Array, space: Space) -> GridState:
        """The grid axes and a random bijection of the index space."""
        axes = tuple(tuple(a) for a in genome_ops.grid_axes(space, self.resolution))
        size = int(np.prod([len(a) for a in axes], dtype=object))
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        mult = int(rng.integers(1, max(2, size)))
        while math.gcd(mult, size) != 1:
            mult += 1
        return GridState(space, axes, size, mult, int(rng.integers(0, size)))

    def ask(self, key: jax.Array, state: GridState) -> Proposal:
        """The next ``batch`` grid points (none when the grid is exhausted)."""
        del key
        out = []
        for i in range(state.next, min(state.next + self.batch, state.size)):
            j = (state.mult * i + state.offset) % state.size
            point = []
            for axis in state.axes:
                j, r = divmod(j, len(axis))
                point.append(axis[r])
            out.append(point)
        return Proposal(np.asarray(out, np.float64).reshape(len(out), len(state.axes)))

    def tell(self, state: GridState, genomes: np.ndarray, fitness: Sequence[Any]) -> GridState:
        """Grid search learns nothing; it moves on past the points it was told."""
        del fitness
        return dataclasses.replace(state, next=state.next + len(genomes))
