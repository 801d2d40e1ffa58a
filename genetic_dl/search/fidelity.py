"""Multi-fidelity generations: successive halving inside each generation of the outer GA.

A generation's children first train ``min_epochs`` epochs (the first rung). The
best ``1/eta`` of them by validation fitness (at least one) go on to the next
rung, ``eta`` times as many epochs, and so on, each child up to its own
``epochs`` gene; when one child is left it trains straight to its own epochs.
A promoted child continues from its trained state (the objective keeps it), so
a rung costs only the epochs it adds. This is successive halving (Jamieson &
Talwalkar, 2016) with Hyperband's rungs and promotion rule (Li et al., 2018),
run synchronously inside a generation rather than asynchronously as ASHA (Li et
al., 2020).

Selection then ranks children as Hyperband and ASHA do: by the highest rung
they reached first, by their fitness there second. A child stopped at a rung
never outranks one promoted past it: its fitness is lowered where needed
(:func:`ranked_fitness`), while fitness differences within a rung are kept, so
fitness-proportional selection still sees them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import check
from .space import Space
from .strategy import Lineage, Proposal

# How far below the lowest fitness of a higher rung a lower rung's best is put, relative
# to that fitness: resolvable in float32, where selection runs.
GAP = 1e-5


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """The rungs of multi-fidelity generations (see the module's docstring).

    Attributes:
      min_epochs: epochs of the first rung.
      eta: each rung keeps the best ``1/eta`` (at least one) and trains them
        ``eta`` times as many epochs.
      max_epochs: the last rung's epochs for configs without an ``epochs``
        gene (``None``: such a space is refused).
    """
    min_epochs: int = 1
    eta: int = 3
    max_epochs: Optional[int] = None

    def __post_init__(self) -> None:
        check(int(self.min_epochs) == self.min_epochs >= 1,
              f"min_epochs must be a positive integer, got {self.min_epochs}")
        check(int(self.eta) == self.eta >= 2, f"eta must be an integer >= 2, got {self.eta}")
        check(self.max_epochs is None or int(self.max_epochs) == self.max_epochs >= 1,
              f"max_epochs must be a positive integer or None, got {self.max_epochs}")

    def own_epochs(self, config: Mapping[str, Any]) -> int:
        """The epochs ``config`` trains at most: its ``epochs`` gene, else ``max_epochs``."""
        if "epochs" in config:
            return int(config["epochs"])
        check(self.max_epochs is not None, "multi-fidelity generations need an 'epochs' gene "
              "in the space or Fidelity(max_epochs=...): the epochs of the last rung")
        return int(self.max_epochs or 0)

    def rung_epochs(self, rung: int, own: np.ndarray) -> np.ndarray:
        """Each child's epochs at ``rung``: ``min_epochs eta^rung``, at most its own."""
        return np.minimum(np.asarray(own), self.min_epochs * self.eta ** rung).astype(int)

    def promoted(self, live: int) -> int:
        """How many of ``live`` children a rung promotes: ``live // eta``, at least one."""
        return max(1, live // self.eta)


@dataclasses.dataclass(frozen=True, eq=False)
class Ladder:
    """A generation climbing its rungs (an immutable value).

    Attributes:
      genomes: ``(n, D)`` the generation's children.
      own: ``(n,)`` each child's own epochs (its last rung's).
      rung: the rung the ``live`` children train at next.
      live: rows of the children that train at it.
      epochs: epochs each ``live`` child trains to at it.
      reached: ``(n,)`` the highest rung each child was evaluated at (-1: none yet).
      fitness: ``(n,)`` its fitness there (NaN: failed, or not evaluated).
    """
    genomes: np.ndarray
    own: np.ndarray
    rung: int
    live: np.ndarray
    epochs: np.ndarray
    reached: np.ndarray
    fitness: np.ndarray

    @property
    def done(self) -> bool:
        """Whether every rung of the generation was trained."""
        return len(self.live) == 0

    def proposal(self) -> Proposal:
        """The live children at the next rung; each one's lineage is its own previous
        evaluation (``(i, i)``, as an elite copy's)."""
        rows = np.stack([self.live, self.live], 1)
        return Proposal(self.genomes[self.live], Lineage(parents=rows, pool=self.genomes),
                        self.epochs)


def first_rung(fidelity: Fidelity, space: Space, genomes: np.ndarray) -> Ladder:
    """A generation of ``genomes`` (of ``space``) about to train its first rung."""
    own_epochs = np.array([fidelity.own_epochs(space.decode(g)) for g in genomes], int)
    n = len(own_epochs)
    return Ladder(genomes=np.asarray(genomes), own=own_epochs, rung=0, live=np.arange(n),
                  epochs=fidelity.rung_epochs(0, own_epochs), reached=np.full(n, -1),
                  fitness=np.full(n, np.nan))


def climb(fidelity: Fidelity, ladder: Ladder, fitness: Sequence[float]) -> Ladder:
    """The ladder after its live children reached ``fitness`` at its rung.

    The best ``fidelity.promoted(live)`` children with a finite fitness are promoted
    to the next rung; the generation is done when none is left, or when every
    promoted child has reached its own epochs (they then rank one rung higher
    without training again). A single promoted child trains straight to its own
    epochs: with one left there is nothing to select.
    """
    value = np.asarray(fitness, np.float64)
    reached, fit = ladder.reached.copy(), ladder.fitness.copy()
    reached[ladder.live], fit[ladder.live] = ladder.rung, value
    ok = np.flatnonzero(np.isfinite(value))
    order = ok[np.argsort(-value[ok], kind="stable")]
    top = order[:fidelity.promoted(len(ladder.live))]
    promoted, trained = ladder.live[top], ladder.epochs[top]
    rung = ladder.rung + 1
    if not (trained < ladder.own[promoted]).any():
        reached[promoted] = rung
        promoted = promoted[:0]
    epochs = ladder.own[promoted] if len(promoted) == 1 else fidelity.rung_epochs(
        rung, ladder.own[promoted])
    return dataclasses.replace(ladder, rung=rung, live=promoted, epochs=epochs,
                               reached=reached, fitness=fit)


def ranked_fitness(reached: np.ndarray, fitness: np.ndarray) -> np.ndarray:
    """Fitness for selection: rung first, fitness second.

    Each child keeps its fitness at the highest rung it reached, lowered where
    needed so that it falls below every child that reached a higher rung: a
    rung's children move down together (by how far their best exceeds that
    floor, plus a small gap), so differences within a rung stay. Failed
    children stay NaN.

    Args:
      reached: ``(n,)`` the highest rung each child reached.
      fitness: ``(n,)`` its fitness there.

    Returns:
      ``(n,)`` fitness for selection.
    """
    out = np.asarray(fitness, np.float64).copy()
    ok = np.isfinite(out)
    floor = np.inf
    for rung in sorted(set(np.asarray(reached)[ok].tolist()), reverse=True):
        at = ok & (reached == rung)
        if np.isfinite(floor) and out[at].max() >= floor:
            out[at] -= out[at].max() - floor + GAP * max(1.0, abs(floor))
        floor = min(floor, float(out[at].min()))
    return out
