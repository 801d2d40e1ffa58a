"""The weight loop's generation-rule protocol, and a base holding a rule's defaults.

A rule is a strategy over the population with a typed, immutable state of its own:
``init(key, population) -> state``; ``train(state, population, data, epochs, ...)``
(a generation's gradient descent: :func:`~genetic_dl.core.train.train` by default, so
a rule that acts during training overrides it); ``evaluated(state, population,
fitness, metrics)`` (the generation that survives evaluation: DE's greedy
replacement, the identity otherwise); ``step(key, state, population, fitness,
metrics, generation) -> (population, state, info)``, with ``info["parents"]`` the
``(P, 2)`` parent rows of the next generation's members.

:class:`RuleBase`'s training recombines the members between rounds of epochs when
the options ask for it (``WeightGAConfig.recombination``: WASH, PAPA), so every rule
that inherits it can: on a Dataset, every round and recombination of a generation in
one program (:class:`~genetic_dl.core.train.Between`); with REPAIR or a Stream, one
call per round.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Mapping, Protocol, Tuple, Union, cast, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from ...core.population import Population
from ...operators import recombination
from ...operators.repair import repair_mixed
from ...core.statistics import recompute_statistics
from ...core.train import Between, round_lengths, train
from ...errors import check, fail
from ...core.stream import Stream
from ...data import Dataset
from ..config import WeightGAConfig

Metrics = Mapping[str, jax.Array]
StepInfo = Dict[str, Any]
# Folded into member 0's training key for the key of a recombination round: a stream
# apart from the one its training splits.
RECOMBINATION_STREAM = 0x5245434F


# Folded into member 0's training key for the rows a round's REPAIR measures on.
REPAIR_STREAM = 0x52455041


def _round_key(population: Population) -> jax.Array:
    # a function of the population alone: a rerun, or a run resumed from its
    # LoopState, recombines exactly as the first
    return jax.random.fold_in(population.keys[0], RECOMBINATION_STREAM)


@functools.partial(jax.jit, static_argnames=("method",))
def _recombined(population: Population, method: str,
                rate: jax.Array) -> Tuple[Population, jax.Array]:
    key = _round_key(population)
    return (recombination.recombine(key, population, method, rate),
            recombination.mixing(key, method, rate, ~population.failed))


@functools.lru_cache(maxsize=None)
def _between(method: str, period: int) -> Between:
    """The recombination between rounds inside the training program: one object per
    ``(method, period)``, so the program compiles once for each."""
    def apply(population: Population, rate: jax.Array) -> Population:
        return recombination.recombine(_round_key(population), population, method, rate)
    return Between(period, apply)


@jax.jit
def _repaired(before: Population, after: Population, weights: jax.Array,
              x: jax.Array) -> Population:
    return after.replace(params=repair_mixed(before.learner, before.params, weights,
                                             after.params, x, before.hparams))


def repaired(before: Population, after: Population, weights: jax.Array,
             data: Union[Dataset, Stream], batches: int, batch_size: int) -> Population:
    """``after``, the recombination of ``before`` by ``weights``
    (:func:`~genetic_dl.operators.recombination.mixing`), repaired on ``batches``
    training batches: REPAIR for a norm-free model, recomputed running statistics
    for one with collections."""
    if not isinstance(data, Dataset):
        fail("repair needs a Dataset (REPAIR measures on its training split): set it to 0 "
             "for a Stream")
    if jax.tree_util.tree_leaves(after.collections):
        return recompute_statistics(after, data, batches=batches, batch_size=batch_size)
    rows = min(batches * batch_size, len(data.y_train))
    key = jax.random.fold_in(before.keys[0], REPAIR_STREAM)
    pick = np.sort(np.asarray(jax.random.permutation(key, len(data.y_train)))[:rows])
    x = jnp.asarray(data.model_inputs(data.x_train[pick]))
    return _repaired(before, after, weights, x)


def recombined(population: Population, config: WeightGAConfig,
               data: Union[Dataset, Stream, None] = None, batch_size: int = 64) -> Population:
    """``population`` after one round's recombination (``config.recombination``, at
    ``config.recombination_strength``), its key drawn from the members' training keys;
    with ``config.repair``, repaired on ``data``'s training split (:func:`repaired`)."""
    out, weights = _recombined(population, config.recombination,
                               jnp.asarray(config.recombination_strength, jnp.float32))
    if config.repair:
        check(data is not None, "repair needs the training data: pass data")
        out = repaired(population, out, weights, cast(Union[Dataset, Stream], data),
                       config.repair, batch_size)
    return jax.block_until_ready(out)  # one program in flight (see core.population)


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
        """``epochs`` epochs of every member's own optimizer; with recombination, in
        rounds of ``config.recombination_period`` epochs, each followed by a
        recombination of the members (the last round's too); with
        ``config.reset_statistics``, the running statistics recomputed at the end."""
        del state
        plain = self.config.recombination == "none" or not isinstance(epochs, int) or epochs < 1
        if plain:  # (train refuses epochs that are not a positive int)
            population = train(population, data, epochs, batch_size=batch_size, mesh=mesh)[0]
        elif isinstance(data, Dataset) and not self.config.repair:  # all rounds in one program
            population = train(population, data, epochs, batch_size=batch_size, mesh=mesh,
                               between=_between(self.config.recombination,
                                                self.config.recombination_period),
                               between_arg=np.float32(self.config.recombination_strength))[0]
        else:
            for length in round_lengths(epochs, self.config.recombination_period):
                population = train(population, data, length, batch_size=batch_size,
                                   mesh=mesh)[0]
                population = recombined(population, self.config, data, batch_size)
        if self.config.reset_statistics:
            if not isinstance(data, Dataset):
                fail("reset_statistics needs a Dataset (the statistics are recomputed from "
                     "its training split): set it to 0 for a Stream")
            population = recompute_statistics(population, data,
                                              batches=self.config.reset_statistics,
                                              batch_size=batch_size)
        return population

    def evaluated(self, state: Any, population: Population, fitness: jax.Array,
                  metrics: Metrics) -> Tuple[Population, jax.Array, Metrics]:
        """The generation as evaluated."""
        del state
        return population, fitness, metrics
