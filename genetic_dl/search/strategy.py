"""The search-strategy protocol: ``init_state``, ``ask`` and ``tell`` over unit genomes.

A strategy is a value whose state is an immutable value of its own type; the driver
(:func:`~genetic_dl.search.driver.run_search`) never reads that state. ``ask`` returns
a :class:`Proposal`: the genomes to evaluate and, when they were bred, their
:class:`Lineage` (the parents' rows in the pool they were bred from), so the driver
can record ancestry without knowing how the strategy keeps its population. A
strategy that trains its children in rungs (continuing the promising ones, see
:mod:`genetic_dl.search.fidelity`) keeps its rungs in its state and proposes the
continuations as genomes like any others, with the epochs each trains to.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Protocol, Sequence, TypeVar, runtime_checkable

import jax
import numpy as np

from .space import Space

State = TypeVar("State")


@dataclasses.dataclass(frozen=True, eq=False)
class Lineage:
    """Where bred genomes come from.

    Attributes:
      parents: ``(n, 2)`` rows of ``pool`` each proposed genome was bred from
        (an elite copy: ``(i, i)``).
      pool: ``(m, D)`` the genomes the rows index (the evaluated population).
    """
    parents: np.ndarray
    pool: np.ndarray


class Proposal(NamedTuple):
    """What :meth:`Strategy.ask` returns: ``genomes``, their ``lineage`` and, for a rung
    of multi-fidelity training, the ``epochs`` each genome's network trains to
    (``None``: each config's own)."""
    genomes: np.ndarray
    lineage: Optional[Lineage] = None
    epochs: Optional[np.ndarray] = None


@runtime_checkable
class Strategy(Protocol[State]):
    """An ask/tell search method over the unit hypercube of a :class:`Space`."""

    def init_state(self, key: jax.Array, space: Space) -> State:
        """The state before the first ask."""

    def ask(self, key: jax.Array, state: State) -> Proposal:
        """Genomes to evaluate next; never changes ``state``."""

    def tell(self, state: State, genomes: np.ndarray, fitness: Sequence[Any]) -> State:
        """The state after ``genomes`` were evaluated to ``fitness`` (maximised; NaN:
        failed; a tuple per genome when multi-objective)."""
