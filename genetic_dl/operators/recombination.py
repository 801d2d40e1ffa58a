"""Recombination among members during training: weight shuffling and parameter averaging.

Members that share their ancestry (one initialisation, :func:`shared_start`) stay in
one loss basin while they train, so their weights can be mixed entry by entry
without the permutation alignment that crossover of unrelated networks needs:

- :func:`wash`: WASH (Fournier et al., 2024, "WASH: Train your Ensemble with
  Communication-Efficient Weight Shuffling, then Average"): each weight position
  is, with probability ``rate``, shuffled among the members by a random
  permutation, which conserves the values at every position.
- :func:`pull_to_mean`: PAPA (Jolicoeur-Martineau et al., TMLR 2024, "Population
  Parameter Averaging"): every member moves a fraction ``rate`` of the way to the
  population's mean weights (rate 1: PAPA-all).
- :func:`pairwise_average`: PAPA-2 of the same paper: the members are paired at
  random and each moves a fraction ``rate`` of the way to its pair's mean.

Each operator takes the stacked params and optimizer state (leading member axis P)
and moves every subtree of the optimizer state shaped like the params (Adam's
moments, momentum) exactly as the params: the same swaps, the same weights. Failed
members (``alive`` False) neither give nor take. ``rate`` is a traced scalar: a new
value does not compile a new program.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from ..core.population import Population
from ..errors import check

Params = Any
# What each operator returns: the new ``(params, opt_state)``.
Moved = Tuple[Params, Any]

METHODS = ("none", "wash", "pull", "pairwise")
# Default rate of each method per round of training (one epoch by default), starting
# points to tune: WASH's fraction of shuffled positions, PAPA's pull toward the mean (the
# papers mix a little every few steps, which adds up over an epoch of hundreds of
# steps), and PAPA-2's full average of each pair.
DEFAULT_RATES: Dict[str, float] = {"none": 0.0, "wash": 0.01, "pull": 0.5, "pairwise": 1.0}


def _alive(params: Params, alive: Optional[jax.Array]) -> jax.Array:
    size = jax.tree_util.tree_leaves(params)[0].shape[0]
    return jnp.ones(size, bool) if alive is None else jnp.asarray(alive, bool)


def _along(mask: jax.Array, x: jax.Array) -> jax.Array:
    """A ``(P,)`` mask broadcast against ``x`` (leading axis P)."""
    return mask.reshape((-1,) + (1,) * (x.ndim - 1))


def _each_like(params: Params, fn: Callable[..., jax.Array], opt_state: Any,
               *extra: Any) -> Moved:
    """``fn(leaf, *extra_leaves)`` on every leaf of ``params`` and of every subtree of
    ``opt_state`` with the params' structure and shapes (``extra``: trees like params)."""
    treedef: Any = jax.tree_util.tree_structure(params)
    shapes = [x.shape for x in jax.tree_util.tree_leaves(params)]

    def is_like(tree: Any) -> bool:
        return (jax.tree_util.tree_structure(tree) == treedef
                and [jnp.shape(x) for x in jax.tree_util.tree_leaves(tree)] == shapes)

    def move(tree: Any) -> Any:
        return jax.tree_util.tree_map(fn, tree, *extra)
    state = jax.tree_util.tree_map(lambda t: move(t) if is_like(t) else t, opt_state,
                                   is_leaf=is_like)
    return move(params), state


def _random_order(key: jax.Array, alive: jax.Array) -> jax.Array:
    """Member indices: the alive members in random order, then the failed ones in order."""
    idx = jnp.arange(alive.shape[0])
    u = jax.random.uniform(key, alive.shape)
    return jnp.argsort(jnp.where(alive, u, 2.0 + idx))


def wash(key: jax.Array, params: Params, opt_state: Any, rate: Any,
         alive: Optional[jax.Array] = None) -> Moved:
    """WASH's weight shuffle (Fournier et al., 2024): each weight position, with
    probability ``rate``, is permuted at random among the alive members.

    The alive members are put in a random order once per call, and a shuffled position
    shifts its values along that order by a random ``1..n-1`` places (n alive): each
    member takes the entry of a uniformly drawn other member, the values at a position
    are only permuted, and no sort runs per position (a per-position uniform
    permutation, sorted, costs about as much as a round of training on small models).

    Args:
      key: PRNG key.
      params: stacked params, leading axis P.
      opt_state: stacked optimizer state; its subtrees shaped like ``params`` are
        permuted with the same permutations.
      rate: probability that a position is shuffled (traced scalar in [0, 1]).
      alive: ``(P,)`` bool, members that take part (default all).

    Returns:
      ``(params, opt_state)``: at every position the same multiset of values over
      the members; failed members and unshuffled positions unchanged.
    """
    alive = _alive(params, alive)
    count = jnp.sum(alive)
    k_order, k_leaves = jax.random.split(key)
    order = _random_order(k_order, alive)
    place = jnp.argsort(order)  # each member's place in the order
    leaves, treedef = jax.tree_util.tree_flatten(params)
    perms = []
    for leaf, k in zip(leaves, jax.random.split(k_leaves, len(leaves))):
        k_mask, k_shift = jax.random.split(k)
        shape = leaf.shape[1:]
        shift = jax.random.randint(k_shift, shape, 1, jnp.maximum(count, 2))
        shift = jnp.where((jax.random.uniform(k_mask, shape) < rate) & (count > 1), shift, 0)
        own = _along(place, shift[None])
        # member i takes the value of the member ``shift`` places after it in the order
        src = jnp.where(_along(alive, own), (own + shift) % jnp.maximum(count, 1), own)
        perms.append(order[src])
    return _each_like(params, lambda x, p: jnp.take_along_axis(x, p, axis=0), opt_state,
                      jax.tree_util.tree_unflatten(treedef, perms))


def _toward(x: jax.Array, target: jax.Array, rate: Any, moves: jax.Array) -> jax.Array:
    """``(1 - rate) x + rate target`` where ``moves`` (rate 1 gives ``target`` exactly)."""
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    r = jnp.asarray(rate, x.dtype)
    return jnp.where(_along(moves, x), (1 - r) * x + r * target, x)


def pull_to_mean(params: Params, opt_state: Any, rate: Any,
                 alive: Optional[jax.Array] = None) -> Moved:
    """PAPA's pull (Jolicoeur-Martineau et al., TMLR 2024): every alive member moves a
    fraction ``rate`` of the way to the alive members' mean.

    Args:
      params: stacked params, leading axis P.
      opt_state: stacked optimizer state; its subtrees shaped like ``params`` move
        with the same weights.
      rate: the fraction (traced scalar in [0, 1]; 1: every member the mean).
      alive: ``(P,)`` bool, members that take part (default all).

    Returns:
      ``(params, opt_state)``; the alive members' mean is unchanged, failed ones untouched.
    """
    alive = _alive(params, alive)
    count = jnp.maximum(jnp.sum(alive), 1)

    def pull(x: jax.Array) -> jax.Array:
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return x
        mean = jnp.sum(jnp.where(_along(alive, x), x, 0), axis=0) / count.astype(x.dtype)
        return _toward(x, mean, rate, alive)
    return _each_like(params, pull, opt_state)


def pairwise_average(key: jax.Array, params: Params, opt_state: Any,
                     alive: Optional[jax.Array] = None, rate: Any = 1.0) -> Moved:
    """PAPA-2 (Jolicoeur-Martineau et al., TMLR 2024): the alive members are paired at
    random and each moves a fraction ``rate`` of the way to its pair's mean.

    Args:
      key: PRNG key.
      params: stacked params, leading axis P.
      opt_state: stacked optimizer state; its subtrees shaped like ``params`` move
        with the same pairs and weights.
      alive: ``(P,)`` bool, members that take part (default all); with an odd number
        alive, one of them is left unpaired.
      rate: the fraction (traced scalar in [0, 1]; 1, the default: the pair's mean).

    Returns:
      ``(params, opt_state)``; each pair's sum is unchanged, so the population's mean
      too; failed and unpaired members untouched.
    """
    partner, paired = _pairs(key, _alive(params, alive))
    return _each_like(params, lambda x: _toward(x, (x + x[partner]) / 2, rate, paired),
                      opt_state)


def _pairs(key: jax.Array, alive: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """PAPA-2's random pairs: each member's partner (itself when unpaired) and whether
    it is paired."""
    order = _random_order(key, alive)
    rank = jnp.argsort(order)
    other = rank ^ 1  # places 0-1, 2-3... are pairs
    count = jnp.sum(alive)
    paired = (rank < count) & (other < count)  # the last alive one of an odd count: alone
    partner = jnp.where(paired, order[jnp.minimum(other, alive.shape[0] - 1)],
                        jnp.arange(alive.shape[0]))
    return partner, paired


def mixing(key: jax.Array, method: str, rate: Any, alive: jax.Array) -> jax.Array:
    """The weights of an averaging recombination: member ``i`` after
    :func:`recombine` (same ``key``) is ``sum_j W[i, j]`` member ``j`` before it.

    Args:
      key: the PRNG key :func:`recombine` is given (PAPA-2 draws its pairs from it).
      method: one of :data:`METHODS`; ``"none"`` and ``"wash"`` (which moves values
        between members and averages none) give the identity.
      rate: the recombination's rate.
      alive: ``(P,)`` bool, the members that take part.

    Returns:
      ``(P, P)`` float32 ``W``; each row sums to 1, a member left alone has a row of the
      identity.
    """
    size = alive.shape[0]
    eye = jnp.eye(size, dtype=jnp.float32)
    r = jnp.asarray(rate, jnp.float32)
    if method == "pull":
        mean = alive.astype(jnp.float32) / jnp.maximum(jnp.sum(alive), 1)
        return jnp.where(alive[:, None], (1 - r) * eye + r * mean[None, :], eye)
    if method == "pairwise":
        partner, paired = _pairs(key, alive)
        pair = (1 - r / 2) * eye + (r / 2) * jax.nn.one_hot(partner, size, dtype=jnp.float32)
        return jnp.where(paired[:, None], pair, eye)
    return eye


def recombine(key: jax.Array, population: Population, method: str, rate: Any) -> Population:
    """``population`` with ``method`` (one of :data:`METHODS`) applied to its params and
    optimizer state among its members that have not failed; jittable, ``method``
    static."""
    check(method in METHODS, f"unknown recombination {method!r}: choose one of "
          f"{', '.join(METHODS)}")
    alive = ~population.failed
    if method == "none":
        return population
    if method == "wash":
        params, state = wash(key, population.params, population.opt_state, rate, alive)
    elif method == "pull":
        params, state = pull_to_mean(population.params, population.opt_state, rate, alive)
    else:
        params, state = pairwise_average(key, population.params, population.opt_state,
                                         alive, rate)
    return population.replace(params=params, opt_state=state)


@jax.jit
def _spread(population: Population, member: jax.Array) -> Population:
    def first(x: jax.Array) -> jax.Array:
        return jnp.broadcast_to(x[member], x.shape)
    return population.replace(params=jax.tree_util.tree_map(first, population.params),
                              opt_state=jax.tree_util.tree_map(first, population.opt_state),
                              collections=jax.tree_util.tree_map(first, population.collections),
                              failed=first(population.failed))


def shared_start(population: Population, member: int = 0) -> Population:
    """Every member starts from member ``member``'s params, collections and optimizer
    state: the shared ancestry that WASH and PAPA assume.

    Args:
      population: the population (e.g. fresh from ``init_population``).
      member: the index of the member whose state everyone takes.

    Returns:
      The population with that member's params, collections, optimizer state and
      ``failed`` flag in every row; keys (training streams), hyperparameters and ids
      stay each member's own.
    """
    check(0 <= member < population.size, f"member {member} is not in a population of "
          f"{population.size}: give an index in [0, {population.size})")
    return jax.block_until_ready(_spread(population, jnp.asarray(member, jnp.int32)))
