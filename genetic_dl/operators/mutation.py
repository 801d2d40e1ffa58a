"""Weight mutation, PBT exploit/explore and differential evolution on weights."""
from __future__ import annotations

import functools
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from .selection import rank_order

Params = Any


TABLE_SIZE = 1 << 22


@functools.lru_cache(maxsize=2)
def _table(size: int) -> np.ndarray:
    return np.random.default_rng(20171115).standard_normal(size, dtype=np.float32)


def noise_table(size: int = TABLE_SIZE) -> jax.Array:
    """A fixed table of ``size`` N(0, 1) float32 values (16 MB by default).

    Mutation can read its noise as a window of this table at a random offset
    (Salimans et al., 2017, "Evolution Strategies as a Scalable Alternative to
    Reinforcement Learning") instead of generating it: one random offset per
    tensor instead of one normal draw per mutated weight.

    What it costs in independence: every window is standard normal, but two
    windows overlap (share values, shifted) with probability about
    ``2 n / size`` for n values each, and the noise of one tensor is a
    contiguous run of the table, so it takes at most ``size`` distinct
    patterns. For mutation of a few percent of a network's weights that is
    harmless; for exact sampling leave it off.
    """
    return jnp.asarray(_table(int(size)))


def _normal(key: jax.Array, n: int, dtype: Any, table: Optional[jax.Array]) -> jax.Array:
    if table is None:
        return jax.random.normal(key, (n,), dtype)
    if n >= table.shape[0]:
        raise ValueError(f"a noise table of {table.shape[0]} values cannot serve {n} at once: "
                         f"use a larger table")
    offset = jax.random.randint(key, (), 0, table.shape[0] - n + 1)
    return jax.lax.dynamic_slice(table, (offset,), (n,)).astype(dtype)


def gaussian(key: jax.Array, params: Params, rate: Any, scale: Any,
             max_rate: Optional[float] = None,
             table: Optional[jax.Array] = None) -> Params:
    """Adds ``N(0, (scale * std(tensor))^2)`` noise to a ``rate`` fraction of weights.

    The noise is relative to each tensor's own spread, so one ``scale`` suits
    kernels and biases of any size; a tensor of zeros (fresh biases) uses 1e-2.

    With ``max_rate`` (a static bound on ``rate``), the touched positions are
    drawn instead of flipping a coin per weight: ``-n ln(1 - max_rate)``
    positions with replacement (so the expected touched fraction is
    ``max_rate``), each kept with probability ``rate / max_rate``. At a 5 % rate
    that draws ~15x fewer random numbers; the touched fraction is then exact
    in expectation at ``rate == max_rate`` and approximate below it.

    Args:
      key: PRNG key.
      params: one member's params.
      rate: fraction of weights touched (may be traced).
      scale: noise scale relative to the tensor's std (may be traced).
      max_rate: static upper bound of ``rate`` enabling the sparse path.
      table: optional :func:`noise_table` to read the noise from.

    Returns:
      The mutated params.
    """
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, 3 * len(leaves))
    out = []
    for i, x in enumerate(leaves):
        std = jnp.std(x)
        std = scale * jnp.where(std > 0, std, 1e-2)
        k_hit, k_noise, k_keep = keys[3 * i:3 * i + 3]
        if max_rate is None or not 0 < max_rate < 1:
            hit = jax.random.bernoulli(k_hit, rate, x.shape)
            noise = _normal(k_noise, x.size, x.dtype, table).reshape(x.shape)
            out.append(jnp.where(hit, x + std * noise, x))
            continue
        draws = max(1, int(math.ceil(-x.size * math.log1p(-max_rate))))
        where = jax.random.randint(k_hit, (draws,), 0, x.size)
        keep = jax.random.uniform(k_keep, (draws,)) * max_rate < rate
        noise = jnp.where(keep, std * _normal(k_noise, draws, x.dtype, table), 0.0)
        out.append(x.reshape(-1).at[where].add(noise).reshape(x.shape))
    return jax.tree_util.tree_unflatten(tree, out)


def decayed_rate(rate0: Any, decay: Any, generation: Any) -> jax.Array:
    """Adaptive decay ``mu(t) = mu0 * exp(-decay * t)``."""
    return rate0 * jnp.exp(-decay * generation)


def self_adaptive_scale(key: jax.Array, sigma: jax.Array,
                        tau: Optional[float] = None) -> jax.Array:
    """Log-normal self-adaptation of a member's own step size (Schwefel; as in SAMR-GA).

    Args:
      key: PRNG key.
      sigma: ``(P,)`` per-member mutation scales inherited from the parents.
      tau: learning rate of the step size; ``1/sqrt(2)`` when ``None``.

    Returns:
      ``sigma * exp(tau * N(0, 1))``.
    """
    tau = 2 ** -0.5 if tau is None else tau
    return sigma * jnp.exp(tau * jax.random.normal(key, sigma.shape))


def pbt_exploit_explore(key: jax.Array, fitness: jax.Array, hparams: Mapping[str, jax.Array],
                        bounds: Mapping[str, Tuple[float, float]], quantile: float = 0.25,
                        resample_prob: float = 0.0) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Population-based training's truncation exploit and perturb explore (Jaderberg et al., 2017).

    The bottom ``quantile`` copies a uniformly chosen member of the top
    ``quantile``; each copied hyperparameter in ``bounds`` is then multiplied
    by 0.8 or 1.2 (log-space perturbation), or with ``resample_prob``
    resampled log-uniformly, and clipped to its bounds.

    Args:
      key: PRNG key.
      fitness: ``(P,)`` fitness (maximised, NaN failed).
      hparams: ``{name: (P,)}`` hyperparameters.
      bounds: ``{name: (lo, hi)}`` of the hyperparameters to explore (lo > 0).
      quantile: fraction replaced and fraction copied from.
      resample_prob: probability of a fresh sample instead of a perturbation.

    Returns:
      ``(source, hparams)``: ``(P,)`` indices whose weights each member takes
      (itself for survivors), and the new hyperparameters.
    """
    size = fitness.shape[0]
    n = max(1, int(size * quantile)) if size > 1 else 0
    order = rank_order(fitness)
    k_src, k_hp = jax.random.split(key)
    donors = order[jax.random.randint(k_src, (n,), 0, n)] if n else order[:0]
    source = jnp.arange(size).at[order[size - n:]].set(donors)
    replaced = jnp.zeros(size, bool).at[order[size - n:]].set(True)
    out = {}
    keys = jax.random.split(k_hp, max(1, len(hparams)))
    for k, (name, value) in zip(keys, sorted(hparams.items())):
        copied = value[source]
        if name in bounds:
            lo, hi = bounds[name]
            k1, k2, k3 = jax.random.split(k, 3)
            factor = jnp.where(jax.random.bernoulli(k1, 0.5, (size,)), 1.2, 0.8)
            fresh = jnp.exp(jax.random.uniform(k2, (size,), minval=jnp.log(lo),
                                               maxval=jnp.log(hi)))
            new = jnp.where(jax.random.bernoulli(k3, resample_prob, (size,)), fresh,
                            copied * factor)
            copied = jnp.where(replaced, jnp.clip(new, lo, hi), copied)
        out[name] = copied
    return source, out


def de_rand_1_bin(key: jax.Array, params: Params, f: float = 0.5, cr: float = 0.9) -> Params:
    """DE/rand/1/bin trial vectors for every member (Storn & Price, 1997).

    For target i: mutant ``a + F (b - c)`` with a, b, c distinct members other
    than i, then binomial crossover with the target (rate ``cr``, at least one
    mutant weight).

    Args:
      key: PRNG key.
      params: the population's stacked params (leading axis P >= 4).
      f: differential weight F.
      cr: crossover rate CR.

    Returns:
      Stacked trial params, shape like ``params``.
    """
    size = jax.tree_util.tree_leaves(params)[0].shape[0]
    if size < 4:
        raise ValueError(f"DE/rand/1 needs at least 4 members, got {size}")
    k_pick, k_cross, k_force = jax.random.split(key, 3)

    def pick(k: jax.Array, i: jax.Array) -> jax.Array:
        others = jnp.where(jnp.arange(size - 1) >= i, jnp.arange(size - 1) + 1,
                           jnp.arange(size - 1))
        return jax.random.choice(k, others, (3,), replace=False)
    abc = jax.vmap(pick)(jax.random.split(k_pick, size), jnp.arange(size))
    leaves, tree = jax.tree_util.tree_flatten(params)
    total = sum(x[0].size for x in leaves)
    forced = jax.random.randint(k_force, (size,), 0, total)  # the guaranteed mutant weight
    keys = jax.random.split(k_cross, len(leaves))
    out, offset = [], 0
    for k, x in zip(keys, leaves):
        mutant = x[abc[:, 0]] + f * (x[abc[:, 1]] - x[abc[:, 2]])
        pos = offset + jnp.arange(x[0].size).reshape(x.shape[1:])
        force = pos[None] == forced.reshape((size,) + (1,) * (x.ndim - 1))
        take = jax.random.bernoulli(k, cr, x.shape) | force
        out.append(jnp.where(take, mutant, x))
        offset += x[0].size
    return jax.tree_util.tree_unflatten(tree, out)
