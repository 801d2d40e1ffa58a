"""Static options of the weight-level GA (:class:`WeightGAConfig`) and their checks."""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Dict, Optional, Tuple, Union, cast

import jax

from ..operators import crossover as crossover_mod
from ..operators import recombination as recombination_mod
from ..operators import selection as selection_mod
from ..operators.alignment import FIELDS as ALIGNMENT_FIELDS
from ..operators.alignment import Alignment
from ..errors import check, check_choice, fail


RULES = ("ga", "pbt", "de", "none")
OPT_STATE_RULES = ("reset", "inherit", "average")
FitnessFn = Union[str, Callable[[Dict[str, jax.Array]], jax.Array]]


# a flat list of options, as the CLI's flags
@dataclasses.dataclass(frozen=True)
class WeightGAConfig:  # pylint: disable=too-many-instance-attributes
    """Static options of the weight GA (hashable: part of the compiled step).

    Attributes:
      rule: generation rule, one of :data:`RULES`.
      selection, selection_kw: a :data:`~genetic_dl.operators.selection.SELECTIONS` name
        and its options (as a tuple of pairs, e.g. ``(("k", 3),)``).
      crossover, crossover_kw: a :data:`~genetic_dl.operators.crossover.CROSSOVERS` name
        and its options.
      alignment: with ``crossover="aligned"``, how units are matched before
        crossing (:class:`~genetic_dl.operators.alignment.Alignment`: base crossover,
        matcher, match_to, passes, every); default ``Alignment()``. Its options
        given in ``crossover_kw`` instead move here.
      crossover_prob: probability that a child is a crossover (else a copy of
        its first parent).
      distinct_parents: draw the second parent among the other members, so
        that no child is a crossover of a member with itself (a mere clone).
      elitism: number of top members copied unchanged (permuted to the best
        member's unit order in generations where aligned crossover matches to it).
      mutation_rate, mutation_scale: fraction of weights mutated and the noise
        scale relative to each tensor's std.
      mutation_decay: lambda of ``mu(t) = mu0 exp(-lambda t)``.
      self_adaptive: each member carries its own mutation scale, mutated
        log-normally (SAMR-GA style).
      noise_table: mutation noise read from a shared precomputed table of
        N(0, 1) values at random offsets (as in OpenAI's evolution strategies)
        instead of drawn fresh: see :func:`~genetic_dl.operators.mutation.noise_table`.
      hall_of_fame: distinct best members kept (with their params) in the result.
      boltzmann_growth: per-generation growth of Boltzmann selection's beta.
      opt_state: a child's optimizer state, one of :data:`OPT_STATE_RULES`.
      pbt_quantile, pbt_bounds, pbt_resample: PBT options; bounds as
        ``(("learning_rate", (1e-4, 1e-1)), ...)``.
      de_f, de_cr: DE's F and CR.
      recombination: mixing among the members while a generation trains, one of
        :data:`~genetic_dl.operators.recombination.METHODS`: ``"none"``, ``"wash"``
        (WASH: a fraction of weight positions shuffled among the members), ``"pull"``
        (PAPA: every member pulled toward the population's mean) or ``"pairwise"``
        (PAPA-2: random pairs pulled toward their mean); see
        :mod:`~genetic_dl.operators.recombination`. It suits members of one ancestry
        (:func:`~genetic_dl.operators.recombination.shared_start`).
      recombination_rate: the method's rate in [0, 1] each round (WASH's shuffled
        fraction, the pull's fraction); ``None``: the method's default,
        :data:`~genetic_dl.operators.recombination.DEFAULT_RATES` (wash 0.01, pull 0.5,
        pairwise 1.0).
      recombination_period: epochs per round: a generation trains in rounds of this
        many epochs (the last one shorter when they do not divide its epochs) and
        recombines after each round, its last included, so every generation is
        evaluated just after a recombination; a period longer than a generation
        recombines once, at its end.
      shared_start: every member starts from member 0's params, collections and optimizer
        state (:func:`~genetic_dl.operators.recombination.shared_start`), applied by
        :func:`~genetic_dl.evolve_weights` before generation 0 (a resumed run's state
        already has it): the one initialisation WASH and PAPA assume.
      reset_statistics: after each generation's training, every member's running
        statistics (BatchNorm's) recomputed on this many training batches
        (:func:`~genetic_dl.core.statistics.recompute_statistics`, REPAIR's reset):
        members made by averaging, interpolation or crossover are evaluated with
        statistics of their own weights, not their parents' (0: off; a Dataset only).
      repair: after each averaging round (``recombination`` ``"pull"`` or
        ``"pairwise"``), REPAIR on this many training batches (0: off; a Dataset only):
        a norm-free model's units rescaled to the mix of their endpoints' statistics
        (:func:`~genetic_dl.operators.repair.repair_mixed`), a model with running
        statistics (BatchNorm) has them recomputed instead
        (:func:`~genetic_dl.core.statistics.recompute_statistics`). Jordan et al. 2023.
    """
    rule: str = "ga"
    selection: str = "tournament"
    selection_kw: Tuple[Tuple[str, Any], ...] = ()
    crossover: str = "uniform"
    crossover_kw: Tuple[Tuple[str, Any], ...] = ()
    alignment: Optional[Alignment] = None
    crossover_prob: float = 1.0
    distinct_parents: bool = False
    elitism: int = 1
    mutation_rate: float = 0.05
    mutation_scale: float = 0.1
    mutation_decay: float = 0.0
    self_adaptive: bool = False
    noise_table: bool = False
    hall_of_fame: int = 5
    boltzmann_growth: float = 1.0
    opt_state: str = "reset"
    pbt_quantile: float = 0.25
    pbt_bounds: Tuple[Tuple[str, Tuple[float, float]], ...] = (("learning_rate", (1e-4, 1e-1)),)
    pbt_resample: float = 0.0
    de_f: float = 0.5
    de_cr: float = 0.9
    recombination: str = "none"
    recombination_rate: Optional[float] = None
    recombination_period: int = 1
    shared_start: bool = False
    reset_statistics: int = 0
    repair: int = 0

    def __post_init__(self) -> None:
        for name in ("crossover_prob", "mutation_rate", "mutation_scale", "mutation_decay",
                     "boltzmann_growth", "pbt_quantile", "pbt_resample", "de_f", "de_cr"):
            try:  # an int (crossover_prob=0) would reach jax.random as an int
                object.__setattr__(self, name, float(getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}") from None
        for value, options, what in ((self.rule, RULES, "rule"),
                                     (self.opt_state, OPT_STATE_RULES, "opt_state"),
                                     (self.selection, selection_mod.SELECTIONS, "selection"),
                                     (self.crossover, crossover_mod.CROSSOVERS, "crossover")):
            check_choice(what, value, options)
        self._resolve_alignment()
        self._check_recombination()
        if not 0 <= self.mutation_rate <= 1 or not 0 <= self.crossover_prob <= 1:
            raise ValueError("mutation_rate and crossover_prob must be in [0, 1]")
        if self.elitism < 0 or self.mutation_scale < 0 or self.mutation_decay < 0:
            raise ValueError("elitism, mutation_scale and mutation_decay must be >= 0")

    def _check_recombination(self) -> None:
        check_choice("recombination", self.recombination, recombination_mod.METHODS)
        check(isinstance(self.shared_start, bool),
              f"shared_start must be True or False, got {self.shared_start!r}")
        check(isinstance(self.reset_statistics, int) and not isinstance(self.reset_statistics, bool)
              and self.reset_statistics >= 0,
              f"reset_statistics is a number of training batches (0: off), got "
              f"{self.reset_statistics!r}")
        check(isinstance(self.repair, int) and not isinstance(self.repair, bool)
              and self.repair >= 0,
              f"repair is a number of training batches (0: off), got {self.repair!r}")
        check(not self.repair or self.recombination in ("pull", "pairwise"),
              f"repair rescales members made by averaging: it needs recombination 'pull' "
              f"or 'pairwise', not {self.recombination!r} (or set repair to 0)")
        if self.recombination_rate is not None:
            try:
                object.__setattr__(self, "recombination_rate", float(self.recombination_rate))
            except (TypeError, ValueError):
                fail(f"recombination_rate must be a number, got {self.recombination_rate!r}")
            check(0 <= cast(float, self.recombination_rate) <= 1,
                  f"recombination_rate must be in [0, 1], got {self.recombination_rate}")
        given = self.recombination_period
        period = 0 if isinstance(given, bool) or not isinstance(given, numbers.Integral) \
            else int(given)
        check(period >= 1, f"recombination_period must be a whole number of epochs >= 1, "
              f"got {given!r}")
        object.__setattr__(self, "recombination_period", period)

    @property
    def recombination_strength(self) -> float:
        """The rate recombination uses: ``recombination_rate``, or the method's default."""
        if self.recombination_rate is not None:
            return self.recombination_rate
        return recombination_mod.DEFAULT_RATES[self.recombination]

    def _resolve_alignment(self) -> None:
        """Moves aligned crossover's options from ``crossover_kw`` into ``alignment``."""
        kw = dict(self.crossover_kw)
        moved = {k: kw.pop(k) for k in ALIGNMENT_FIELDS if k in kw}
        if self.crossover != "aligned":  # e.g. dataclasses.replace(aligned, crossover=...)
            object.__setattr__(self, "alignment", None)
            return
        if moved and self.alignment is not None:
            raise ValueError(f"aligned crossover's options {sorted(moved)} are given both in "
                             "crossover_kw and in alignment=: give them in alignment= only")
        object.__setattr__(self, "alignment", self.alignment or Alignment(**moved))
        object.__setattr__(self, "crossover_kw", tuple(kw.items()))

    @property
    def _aligned(self) -> Alignment:
        return self.alignment if self.alignment is not None else Alignment()

    @property
    def matcher(self) -> str:
        """Weight matching of aligned crossover (``alignment.matcher``)."""
        return self._aligned.matcher

    @property
    def match_to(self) -> str:
        """What aligned crossover matches units to (``alignment.match_to``)."""
        return cast(str, self._aligned.match_to)  # Alignment resolves None when built

    @property
    def match_passes(self) -> Optional[int]:
        """Weight-matching sweeps of aligned crossover (None: until converged)."""
        return cast(Optional[int], self._aligned.passes)  # Alignment resolves "auto" when built

    @property
    def match_every(self) -> int:
        """Aligned crossover with ``match_to="best"`` re-matches every this many generations."""
        return self._aligned.every
