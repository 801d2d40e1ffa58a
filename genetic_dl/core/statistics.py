"""Running statistics recomputed for new weights (BatchNorm after averaging).

Averaged or interpolated weights come with the wrong running statistics: the
average of the members' statistics is not the statistics of the averaged
network's activations, and a BatchNorm model evaluated with them can collapse.
Jordan et al. 2023, "REPAIR: REnormalizing Permuted Activations for
Interpolation Repair", reset them on training batches; so does
:func:`recompute_statistics`, for every member at once.

The assumption: every leaf of every mutable collection (``batch_stats``) is a
running average that a training call updates as ``new = m * old + (1 - m) * b``,
with ``b`` a statistic of the batch and ``m`` one constant momentum per leaf
(flax's and nnx's BatchNorm: ``b`` the batch mean or the biased batch variance),
and a training call's outputs do not read the running statistics. Two training
calls per batch, from all-zero and from all-one statistics, give
``new0 = (1 - m) b`` and ``new1 = m + (1 - m) b``, so ``m = new1 - new0`` and
``b = new0 / (1 - m)`` for any momentum. A leaf with ``m = 1`` is never updated in
training and is kept. Anything else (a counter, a momentum that differs between a
leaf's entries) is refused with one line.
"""
from __future__ import annotations

import functools
from typing import Any, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ..data import Dataset
from ..errors import check, fail
from .population import Population, raw_key
from .pytree import PyTree

# |m_i - m| allowed between a leaf's entries (float32 rounding of m + (1 - m) b), plus this
# much per unit of |(1 - m) b|.
MOMENTUM_ATOL = 1e-4
MOMENTUM_RTOL = 1e-5
# a leaf whose momentum is within this of 1 is never updated in training: kept as it is
FROZEN_ATOL = 1e-6


def _prep(mean: jax.Array, std: jax.Array, scaled: bool, dtype: str) -> Any:
    """Stored inputs to model inputs, as training prepares them."""
    if scaled:
        return lambda v: (v.astype(jnp.float32) - mean) / std
    return lambda v: v.astype(dtype)


@functools.partial(jax.jit, static_argnames=("scaled",))
def _accumulate(population: Population, x: jax.Array, y: jax.Array, mean: jax.Array,
                std: jax.Array, keys: jax.Array, scaled: bool = False) -> Tuple[PyTree, ...]:
    """Per member and collection leaf, over the batches ``x``, ``y`` (leading axis
    ``batches``): ``(sum of new0, sum of new1 - new0, min and max of new1 - new0,
    max |new0|)``, as float32 trees shaped like the collections."""
    learner = population.learner
    prep = _prep(mean, std, scaled, population.feature_dtype)

    def one(p: PyTree, c: PyTree, h: PyTree) -> Tuple[PyTree, ...]:
        zeros = jax.tree_util.tree_map(jnp.zeros_like, c)
        ones = jax.tree_util.tree_map(jnp.ones_like, c)
        f32 = jax.tree_util.tree_map(lambda v: jnp.zeros(v.shape, jnp.float32), c)

        def step(acc: Tuple[PyTree, ...], inputs: Tuple[jax.Array, ...]
                 ) -> Tuple[Tuple[PyTree, ...], None]:
            xb, yb, k = inputs
            batch = {"x": prep(xb), "y": yb}
            _, new0 = learner.apply_train(p, zeros, batch, h, k)
            _, new1 = learner.apply_train(p, ones, batch, h, k)
            new0 = jax.tree_util.tree_map(lambda v: v.astype(jnp.float32), new0)
            d = jax.tree_util.tree_map(lambda a, b: a.astype(jnp.float32) - b, new1, new0)
            tm = jax.tree_util.tree_map
            s0, sd, lo, hi, big = acc
            return (tm(jnp.add, s0, new0), tm(jnp.add, sd, d), tm(jnp.minimum, lo, d),
                    tm(jnp.maximum, hi, d),
                    tm(lambda a, b: jnp.maximum(a, jnp.abs(b)), big, new0)), None
        init = (f32, f32, jax.tree_util.tree_map(lambda v: v + jnp.inf, f32),
                jax.tree_util.tree_map(lambda v: v - jnp.inf, f32), f32)
        acc, _ = jax.lax.scan(step, init, (x, y, keys))
        return acc
    return jax.vmap(one)(population.params, population.collections, population.hparams)


def _leaf(name: str, old: np.ndarray, acc: List[np.ndarray], count: int) -> np.ndarray:
    """One collection leaf's new value for every member (see the module docstring), from
    its accumulators ``(sum of new0, sum of d, min d, max d, max |new0|)``."""
    s0, sd, lo, hi, big = acc
    ok = np.isfinite(sd) & np.isfinite(lo) & np.isfinite(hi) & np.isfinite(s0)
    if not ok.any():  # every member failed (NaN weights): nothing to recompute
        return old
    m = float(np.mean(sd[ok], dtype=np.float64)) / count
    tol = MOMENTUM_ATOL + MOMENTUM_RTOL * big
    off = np.maximum(np.abs(hi - m), np.abs(lo - m))
    if not np.all(off[ok] <= tol[ok]):
        fail(f"collection leaf {name} is not a running average of one momentum: a training "
             f"call moves it by m*old with m from {float(np.min(lo[ok])):.6g} to "
             f"{float(np.max(hi[ok])):.6g}; recompute_statistics needs "
             f"new = m*old + (1-m)*batch_statistic (BatchNorm) with one m per leaf")
    if abs(1 - m) <= FROZEN_ATOL:
        check(bool(np.all(big[ok] <= tol[ok])),
              f"collection leaf {name} changes in training but not as a running average "
              f"(it keeps old and adds to it, like a counter): recompute_statistics only "
              f"recomputes running averages new = m*old + (1-m)*batch_statistic")
        return old
    return (s0 / count / (1 - m)).astype(old.dtype)


def _rows(n: int, batches: Optional[int], batch_size: int,
          key: Optional[jax.Array]) -> np.ndarray:
    """``(batches, batch_size)`` training rows: in stored order, or shuffled by ``key``."""
    check(isinstance(batch_size, int) and 1 <= batch_size <= n,
          f"batch_size must be an int in [1, {n}] (the training examples), got {batch_size!r}")
    full = n // batch_size
    batches = full if batches is None else batches
    check(isinstance(batches, int) and 1 <= batches <= full,
          f"batches must be an int in [1, {full}] (whole batches of {batch_size} in the "
          f"{n} training examples), got {batches!r}")
    order = (np.arange(n) if key is None
             else np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), n)))
    return order[:batches * batch_size].reshape(batches, batch_size)


def recompute_statistics(population: Population, data: Dataset, *,
                         batches: Optional[int] = None, batch_size: int = 64,
                         key: Optional[jax.Array] = None) -> Population:
    """Every member's running statistics recomputed on training batches (REPAIR).

    Each running-average leaf becomes the mean over ``batches`` training batches of
    the statistic a training call computes (for BatchNorm: the batch mean, and the
    biased batch variance), whatever the momentum; all members at once, each with
    its own weights. Training calls run as in training: with dropout (one fixed
    key per batch, the same for every member), which then shapes the statistics as
    it does in training. Jordan et al. 2023, "REPAIR".

    Args:
      population: the members; without mutable collections it is returned as is.
      data: the :class:`~genetic_dl.Dataset` whose training split is used.
      batches: how many batches (default: every whole batch of the training split).
      batch_size: rows per batch (the statistics are per-batch, as in training).
      key: ``None``: the first ``batches * batch_size`` training rows in stored
        order, dropout keys from ``PRNGKey(0)``; a key: rows in the order of a
        permutation drawn from it, and dropout keys from it.

    Returns:
      The population with new collections (params and everything else as given).

    Raises:
      ValueError: a collection leaf that is not a running average of one momentum
        (see the module docstring), or data that does not fit the population.
    """
    if not jax.tree_util.tree_leaves(population.collections):
        return population
    check(isinstance(data, Dataset),
          f"recompute_statistics takes a Dataset (its training split), got "
          f"{type(data).__name__}")
    check(tuple(data.feature_shape) == tuple(population.feature_shape)
          and data.feature_dtype == population.feature_dtype,
          f"the population takes {population.feature_dtype} features "
          f"{tuple(population.feature_shape)}, but {data.name} has {data.feature_dtype} "
          f"{tuple(data.feature_shape)}: pass the dataset it was trained on")
    rows = _rows(len(data.y_train), batches, batch_size, key)
    base = jax.random.fold_in(raw_key(jax.random.PRNGKey(0) if key is None else key), 1)
    keys = jax.vmap(functools.partial(jax.random.fold_in, base))(jnp.arange(rows.shape[0]))
    x = np.asarray(data.x_train[rows.reshape(-1)]).reshape(rows.shape + data.x_train.shape[1:])
    y = np.asarray(data.y_train[rows.reshape(-1)]).reshape(rows.shape + data.y_train.shape[1:])
    acc = jax.device_get(_accumulate(population, jnp.asarray(x), jnp.asarray(y),
                                     *map(jnp.asarray, data.input_scaling()), keys,
                                     scaled=data.raw_inputs))
    paths, treedef = jax.tree_util.tree_flatten_with_path(population.collections)
    parts = [jax.tree_util.tree_leaves(a) for a in acc]
    old = jax.device_get([v for _, v in paths])
    new = [_leaf(jax.tree_util.keystr(path), np.asarray(o), [np.asarray(p[i]) for p in parts],
                 rows.shape[0])
           for i, ((path, _), o) in enumerate(zip(paths, old))]
    collections = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in new])
    return population.replace(collections=collections)
