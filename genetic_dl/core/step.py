"""One member's minibatch step: the unit both training paths are built from.

The array path scans it over an epoch's minibatches inside one program
(:mod:`genetic_dl.core.train`); the stream path calls it once per streamed batch
(:mod:`genetic_dl.core.stream`). Both vmap it over the members.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Tuple

import jax
import optax

from .learner import Learner
from .pytree import Params, PyTree

# One member's training state: ``(params, opt_state, collections, key)``.
Carry = Tuple[Params, PyTree, PyTree, jax.Array]


class HasLearner(Protocol):  # pylint: disable=too-few-public-methods
    """What :func:`member_step` reads of a population: its learner."""

    @property
    def learner(self) -> Learner:
        """The members' learner."""


def member_step(population: HasLearner, tx: optax.GradientTransformation,
                hp: Mapping[str, jax.Array], carry: Carry,
                batch: Mapping[str, jax.Array]) -> Tuple[Carry, Tuple[jax.Array, jax.Array]]:
    """One minibatch step of one member: ``carry = (params, opt_state, collections, key)``.

    Returns ``(carry, (loss, score))``; called under vmap, inside an epoch's scan
    (arrays) or once per streamed batch (:mod:`genetic_dl.core.stream`).
    """
    learner = population.learner
    p, s, c, k = carry
    k, k_drop = jax.random.split(k) if learner.rngs else (k, k)

    def batch_loss(p: Params, c: PyTree) -> Tuple[jax.Array, Tuple[Any, PyTree]]:
        out, c = learner.apply_train(p, c, batch, hp, k_drop)
        return learner.loss(out, batch), (out, c)
    (loss, (out, c)), grads = jax.value_and_grad(batch_loss, has_aux=True)(p, c)
    updates, s = tx.update(grads, s, p)
    p = optax.apply_updates(p, updates)
    return (p, s, c, k), (loss, learner.score_of(out, batch))
