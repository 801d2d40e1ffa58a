"""Options of aligned crossover: how units are lined up before two parents are crossed.

Aligned crossover permutes the second parent's hidden units to match the first's
(weight matching, Git Re-Basin: Ainsworth et al., 2023) or every member's to the
fittest one, then crosses with a base operator.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

from ..errors import check_choice
from . import crossover as crossover_mod
from . import matching

MATCH_TO = ("parent", "best")


@dataclasses.dataclass(frozen=True)
class Alignment:
    """How aligned crossover matches units (static, hashable).

    Attributes:
      base: the crossover applied after matching (any of
        :data:`~genetic_dl.operators.crossover.OPERATORS`).
      matcher: ``"greedy"`` (on the device) or ``"exact"`` (linear assignments
        on the host, 2-5x slower; needs ``match_to="best"``).
      match_to: ``"parent"`` matches each child's second parent to its first
        on the device (:func:`~genetic_dl.operators.matching.match_pairs`); ``"best"``
        matches parents and elites to the fittest member, so the population
        shares its unit order and children inherit it (training from a shared
        ancestor does not reorder units: Frankle et al., 2020). ``None``:
        ``"best"`` with the exact matcher, else ``"parent"``.
      passes: weight-matching sweeps; ``"auto"``: 2 with greedy matching
        (98.6-100 % of the similarity gain of converging on trained digits
        MLPs, at 35-70 % of its cost), until converged (``None``) with exact.
      every: with ``match_to="best"``, re-match only every this many
        generations and cross the inherited order in between.
    """
    base: str = "uniform"
    matcher: str = "greedy"
    match_to: Optional[str] = None
    passes: Union[int, None, str] = "auto"
    every: int = 1

    def __post_init__(self):
        check_choice("base crossover of aligned crossover", self.base, crossover_mod.OPERATORS)
        check_choice("weight-matching matcher", self.matcher, matching.MATCHERS)
        if self.match_to is None:
            object.__setattr__(self, "match_to", "best" if self.matcher == "exact" else "parent")
        check_choice("match_to of aligned crossover", self.match_to, MATCH_TO)
        if self.matcher == "exact" and self.match_to == "parent":
            raise ValueError("exact weight matching runs on the host, one member at a time: use "
                             "it with match_to='best', or matcher='greedy' for match_to='parent'")
        every = self.every
        if not isinstance(every, int) or every < 1 or (every > 1 and self.match_to != "best"):
            raise ValueError(f"aligned crossover's every must be a positive int, and above 1 only "
                             f"with match_to='best' (parents matched pairwise do not share one "
                             f"unit order to inherit), got every={every!r}")
        if self.passes == "auto":
            object.__setattr__(self, "passes", 2 if self.matcher == "greedy" else None)
        if self.passes is not None and (not isinstance(self.passes, int) or self.passes < 1):
            raise ValueError(f"aligned crossover's passes must be a positive int (or None: until "
                             f"weight matching converges), got {self.passes!r}")


FIELDS = tuple(f.name for f in dataclasses.fields(Alignment))
