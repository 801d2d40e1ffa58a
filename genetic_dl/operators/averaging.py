"""Weight averaging: one network from the members of a population (model soups).

Pure, jittable functions of params pytrees. Averaging weights is meaningful for
members in one basin of the loss (fine-tuned from one initialisation, or aligned
first: :mod:`genetic_dl.operators.permutation`): Wortsman et al. 2022, "Model
soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time". A BatchNorm model's running statistics do not
average with its weights: recompute them afterwards
(:func:`genetic_dl.core.statistics.recompute_statistics`).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from numpy.typing import ArrayLike

from ..core.pytree import PyTree


@jax.jit
def uniform_average(params: PyTree, weights: Optional[ArrayLike] = None) -> PyTree:
    """The (weighted) mean over the leading member axis of a stacked pytree.

    Computed as ``ref + sum_i w_i (x_i - ref)`` with ``ref`` the member of the
    largest weight, so P identical members average to exactly that member.
    Members of weight 0 are left out even when their leaves are NaN (a failed
    member: the caller passes ``weights = ~failed``).

    Args:
      params: a pytree whose every leaf has leading axis P.
      weights: ``(P,)`` non-negative weights, normalised here (their sum must
        be positive); ``None``: every member equally.

    Returns:
      One member's pytree (no leading axis), each leaf in its own dtype.
    """
    leaves = jax.tree_util.tree_leaves(params)
    size = leaves[0].shape[0]
    w = jnp.ones((size,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    w = w / jnp.sum(w)
    ref = jnp.argmax(w)

    def mean(x: jax.Array) -> jax.Array:
        base = x[ref]
        shape = (size,) + (1,) * (x.ndim - 1)
        deltas = jnp.where(w.reshape(shape) > 0, x - base, 0).astype(jnp.float32)
        return (base + jnp.tensordot(w, deltas, axes=1)).astype(x.dtype)
    return jax.tree_util.tree_map(mean, params)


@jax.jit
def interpolate(a: PyTree, b: PyTree, t: ArrayLike) -> PyTree:
    """``(1 - t) a + t b`` of two members' pytrees of one structure, leaf by leaf.

    Args:
      a, b: two pytrees of equal structure and shapes (``t = 0`` gives ``a``,
        ``t = 1`` gives ``b`` exactly).
      t: the interpolation coefficient, a scalar (traced: a new value does not
        recompile); outside ``[0, 1]`` it extrapolates.

    Returns:
      The interpolated pytree, each leaf in ``a``'s dtype.
    """
    t = jnp.asarray(t, jnp.float32)

    def mix(x: jax.Array, y: jax.Array) -> jax.Array:
        return ((1 - t) * x + t * y).astype(x.dtype)
    return jax.tree_util.tree_map(mix, a, b)
