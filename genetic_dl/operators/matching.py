"""Hidden units of a chain of layers: their order, the permutations that leave a
network's function unchanged, and weight matching, which finds the permutation
of one network's units that best matches another's (Ainsworth et al., 2022,
"Git Re-Basin: Merging Models modulo Permutation Symmetries").

Aligned crossover (:mod:`genetic_dl.crossover`) crosses two members after
matching; the GA step matches a whole population to its best member with
:func:`match_on_device` or :func:`match_population`.
"""
from __future__ import annotations

import functools
import re
from typing import Any, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from ..core import sharding
from ..core.sharding import AXIS

Params = Any


def unit_chain(params: Params) -> List[str]:
    """An MLP's or CNN's layers in order (convs, then denses), or ``ValueError``.

    The units of a conv layer are its output channels, those of a dense layer
    its output features.
    """
    inner = params.get("params", {}) if hasattr(params, "get") else {}
    names = list(inner)
    if not names or any(not re.fullmatch(r"(Conv|Dense)_\d+", n) for n in names):
        raise ValueError("per-neuron and aligned crossover need an MLP or a CNN (a chain of "
                         f"Conv and Dense layers); these params have modules {names}: use "
                         "uniform, one_point, two_point, arithmetic or per_layer")

    def order(n):
        kind, i = n.split("_")
        return (kind != "Conv", int(i))
    return sorted(names, key=order)


def incoming_index(kernel, units: int):
    """For each input row of ``kernel``, the previous layer's unit it reads."""
    rows = kernel.shape[-2]
    return np.arange(rows) % units  # rows == units, or a conv output flattened as (S, C)


def _permute_incoming(kernel, perm, units: int):
    if kernel.ndim > 2:  # conv kernel (*window, in, out)
        return kernel[..., perm, :]
    rows = kernel.shape[0]
    # row s*C + c of a flattened conv output reads channel c (numpy defers to jax for a traced perm)
    idx = (np.arange(rows // units)[:, None] * units + perm[None, :]).ravel()
    return kernel[idx]


def _by_incoming_unit(kernel, units: int):
    """``kernel`` as ``(units, rest)``: the outgoing weights of each previous unit."""
    xp = jnp if isinstance(kernel, jax.Array) else np
    if kernel.ndim > 2:
        return xp.moveaxis(kernel, -2, 0).reshape(units, -1)
    rows, out = kernel.shape
    return kernel.reshape(rows // units, units, out).transpose(1, 0, 2).reshape(units, -1)


def _similarity(a_in, a_bias, a_out, b_in, b_bias, b_out, units: int):
    """Weight matching's ``(units, units)`` similarity of A's and B's units of one layer:
    dot products of their incoming weights, biases and outgoing weights."""
    xp = jnp if isinstance(a_in, jax.Array) else np
    s = a_in.reshape(-1, units).T @ b_in.reshape(-1, units) + xp.outer(a_bias, b_bias)
    return s + _by_incoming_unit(a_out, units) @ _by_incoming_unit(b_out, units).T


def permute_units(params: Params, perms: List[jax.Array]) -> Params:
    """Reorders each hidden layer's units by ``perms[l]``: the function is unchanged."""
    chain = unit_chain(params)
    p = {n: dict(params["params"][n]) for n in chain}
    for l, perm in enumerate(perms):
        cur, nxt = chain[l], chain[l + 1]
        p[cur]["kernel"] = p[cur]["kernel"][..., perm]
        p[cur]["bias"] = p[cur]["bias"][perm]
        p[nxt]["kernel"] = _permute_incoming(p[nxt]["kernel"], perm, perm.shape[0])
    return {"params": p}


def _layers(params: Params) -> List[Tuple[Any, Any]]:
    """``(kernel, bias)`` of each layer of :func:`unit_chain`, in order."""
    inner = params["params"]
    return [(inner[n]["kernel"], inner[n]["bias"]) for n in unit_chain(params)]


def _layer_similarity(ref_layers, layers, perms, l: int):
    """Similarity of the reference's units of hidden layer ``l`` to those of
    ``layers``, whose neighbouring hidden layers are permuted by ``perms``."""
    hidden, units = len(layers) - 1, [k.shape[-1] for k, _ in layers]
    kernel, bias = layers[l]
    inc = kernel if l == 0 else _permute_incoming(kernel, perms[l - 1], units[l - 1])
    nxt = layers[l + 1][0] if l + 1 == hidden else layers[l + 1][0][..., perms[l + 1]]
    return _similarity(ref_layers[l][0], ref_layers[l][1], ref_layers[l + 1][0], inc, bias, nxt,
                       units[l])


def _match_host(layers_a, layers_b, passes: Optional[int] = None):
    """Weight matching (Ainsworth et al., 2022, Git Re-Basin, Alg. 1) on the host:
    coordinate ascent over the layers, ``passes`` sweeps at most (None: until no
    permutation changes, at most 30)."""
    from scipy.optimize import linear_sum_assignment  # pylint: disable=import-outside-toplevel
    layers_a, layers_b = ([(np.asarray(k, np.float64), np.asarray(v, np.float64))
                           for k, v in layers] for layers in (layers_a, layers_b))
    perms = [np.arange(k.shape[-1]) for k, _ in layers_a[:-1]]
    for _ in range(passes or 30):
        changed = False
        for l in range(len(layers_a) - 1):
            s = _layer_similarity(layers_a, layers_b, perms, l)
            _, cols = linear_sum_assignment(s, maximize=True)
            if not np.array_equal(cols, perms[l]):
                perms[l], changed = cols, True
        if not changed:
            break
    return tuple(np.asarray(p, np.int32) for p in perms)


def _first_max(m, top):
    """Per row of ``m``, the first column holding the row's maximum ``top``: ~10x faster
    than ``jnp.argmax`` on XLA CPU, which does not vectorise its index reduction."""
    index = jax.lax.broadcasted_iota(jnp.int32, m.shape, 1)
    return jnp.min(jnp.where(m == top[:, None], index, m.shape[1]), axis=1)


def _greedy(s, free_rows, free_cols):
    """Greedy matching of the free rows of ``s`` to its free columns (as many):
    ``(n,)`` columns, meaningful at the free rows."""
    n = s.shape[0]
    rows = jnp.arange(n, dtype=jnp.int32)
    small = n // 2
    # rounds on the whole matrix while over half the rows are free, then on the rest only
    # (halving beats quartering by ~15 % on trained digits MLPs: fewer full-size rounds)
    limit = small if small >= 8 else 0

    def body(state):
        perm, fr, fc = state
        m = jnp.where(fr[:, None] & fc[None, :], s, -jnp.inf)
        top = jnp.max(m, axis=1)
        col = _first_max(m, top)
        # row i and its best column are each other's best when i's best is that column's
        # best too (one max over columns instead of a second index search, 1.6x faster);
        # of tied rows (equal values), the first takes the column
        best = fr & (top == jnp.max(m, axis=0)[col])
        first = jnp.full(n, n, jnp.int32).at[col].min(jnp.where(best, rows, n))
        mutual = best & (first[col] == rows)
        taken = jnp.zeros(n, bool).at[col].max(mutual)
        return jnp.where(mutual, col, perm), fr & ~mutual, fc & ~taken

    perm, fr, fc = jax.lax.while_loop(lambda st: jnp.sum(st[1]) > limit, body,
                                      (jnp.zeros(n, jnp.int32), free_rows, free_cols))
    if limit == 0:
        return perm
    ri = jnp.argsort(~fr, stable=True)[:small]  # the free rows (at most `small`) first
    ci = jnp.argsort(~fc, stable=True)[:small]
    sub = _greedy(s[ri][:, ci], fr[ri], fc[ci])
    return perm.at[jnp.where(fr[ri], ri, n)].set(ci[sub], mode="drop")


def greedy_assignment(s: jax.Array) -> jax.Array:
    """Greedy maximum-weight assignment of a square similarity matrix, on the device.

    Each round matches every row and column that are each other's best among
    the unmatched ones, which yields the greedy matching (always taking the
    largest remaining entry) in rounds that run in parallel; at least one pair
    is matched per round, and once half of the rows are left, the rounds run
    on those rows and columns only (and so on, halving). Greedy matching is a
    1/2-approximation of the optimum (Avis, 1983, "A survey of heuristics for
    the weighted matching problem"); on trained digits MLPs weight matching
    with it reaches ~95 % of the similarity gain of exact assignments.

    Args:
      s: ``(n, n)`` similarities (non-finite entries count as lowest).

    Returns:
      ``(n,)`` int32 permutation: row ``i`` is matched to column ``perm[i]``.
    """
    s = jnp.nan_to_num(s.astype(jnp.float32), nan=-3e38, posinf=3e38, neginf=-3e38)
    free = jnp.ones(s.shape[0], bool)
    return _greedy(s, free, free).astype(jnp.int32)


def _match_device(ref_layers, layers, passes: Optional[int] = None):
    """Weight matching of one member to the reference with :func:`greedy_assignment`
    (jittable, vmappable). A layer's new permutation is kept only if it raises that
    layer's similarity, so each sweep can only improve on the last (and on the
    identity)."""
    def sweep(perms):
        perms, changed = list(perms), jnp.asarray(False)
        for l in range(len(layers) - 1):
            s = _layer_similarity(ref_layers, layers, perms, l)
            perms[l], better = improve(s, perms[l])
            changed |= better
        return tuple(perms), changed

    return ascend(sweep, tuple(jnp.arange(k.shape[-1], dtype=jnp.int32) for k, _ in layers[:-1]),
                  passes)


def improve(s, perm) -> Tuple[jax.Array, jax.Array]:
    """The greedy assignment of similarities ``s`` if it strictly beats ``perm``, else
    ``perm``; and whether it did."""
    new = greedy_assignment(s)
    gain = (jnp.sum(jnp.take_along_axis(s, new[:, None], 1))
            - jnp.sum(jnp.take_along_axis(s, perm[:, None], 1)))
    better = gain > 0  # a different permutation, strictly better
    return jnp.where(better, new, perm), better


def ascend(sweep, perms, passes: Optional[int]):
    """Weight matching's coordinate ascent: ``passes`` sweeps, or (None) until no
    permutation changes, at most 30. ``sweep(perms) -> (perms, changed)``."""
    if passes is not None:
        for _ in range(passes):
            perms, _ = sweep(perms)
        return perms

    def body(state):
        perms, _, i = state
        perms, changed = sweep(perms)
        return perms, changed, i + 1
    return jax.lax.while_loop(lambda st: st[1] & (st[2] < 30), body,
                              (perms, jnp.asarray(True), 0))[0]


MATCHERS = ("greedy", "exact")


def match_greedy(a: Params, b: Params, passes: Optional[int] = None) -> Tuple[jax.Array, ...]:
    """Weight matching of ``b``'s units to ``a``'s with greedy assignments, on the device
    (jittable, vmappable).

    Returns:
      One ``(units,)`` int32 permutation per hidden layer, for :func:`permute_units`.
    """
    return _match_device(_layers(a), _layers(b), passes)


def _check_matcher(matcher: str):
    if matcher not in MATCHERS:
        raise ValueError(f"unknown weight-matching matcher {matcher!r}: choose greedy (on the "
                         "device) or exact (linear assignments on the host)")


def align(a: Params, b: Params, passes: Optional[int] = None,
          matcher: str = "greedy") -> Params:
    """``b`` with its hidden units (and CNN channels) permuted to best match ``a``.

    ``matcher="greedy"`` runs :func:`match_greedy` on the device; ``"exact"``
    runs weight matching's linear assignments on the host through
    ``jax.pure_callback`` (under ``vmap`` pairs are matched one by one).
    """
    _check_matcher(matcher)
    if matcher == "greedy":
        return permute_units(b, list(match_greedy(a, b, passes)))
    layers, layers_b = _layers(a), _layers(b)
    if not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((a, b))):
        # called eagerly: no callback, which fails on members of a sharded population
        return permute_units(b, list(_match_host(layers, layers_b, passes)))
    shapes = tuple(jax.ShapeDtypeStruct((k.shape[-1],), jnp.int32) for k, _ in layers[:-1])
    perms = jax.pure_callback(functools.partial(_match_host, passes=passes), shapes, layers,
                              layers_b, vmap_method="sequential")
    return permute_units(b, list(perms))


def _identity_is_matched(ref_layers, layers) -> jax.Array:
    """Whether weight matching started from the identity stops there at once: each unit
    of each hidden layer is most similar to the reference's unit of the same index. Then
    the identity is the optimal assignment of every layer (its total is the sum of the
    row maxima), so :func:`_match_host` would return it."""
    ok = jnp.asarray(True)
    for l in range(len(layers) - 1):
        units = layers[l][0].shape[-1]
        s = _similarity(ref_layers[l][0], ref_layers[l][1], ref_layers[l + 1][0],
                        layers[l][0], layers[l][1], layers[l + 1][0], units)
        ok &= jnp.all(jnp.argmax(s, axis=1) == jnp.arange(units))
    return ok


@jax.jit
def _unmatched(params: Params, ref) -> jax.Array:
    layers = _layers(params)
    ref_layers = [(k[ref], v[ref]) for k, v in layers]
    todo = ~jax.vmap(lambda ls: _identity_is_matched(ref_layers, ls))(layers)
    return todo.at[ref].set(False)


# On CPU, matching a few members at a time keeps their weights and similarity
# matrices in cache through the greedy rounds, and each chunk's loop stops at its
# own last round: 1.4-1.9x over one vmap of 128 pairs (benchmarks/RESULTS.md).
MATCH_CHUNK = 4


def _match_local(a, b, passes: Optional[int], paired: bool):
    """Rows of ``b`` matched to the same rows of ``a`` (``paired``) or all to ``a``."""
    n = jax.tree_util.tree_leaves(b)[0].shape[0]
    match = jax.vmap(functools.partial(match_greedy, passes=passes),
                     in_axes=(0 if paired else None, 0))
    chunk = sharding.chunk_size(n, MATCH_CHUNK)
    if jax.default_backend() != "cpu" or chunk >= n:
        return match(a, b)
    if paired:
        return sharding.map_chunks(lambda ab: match(*ab), (a, b), chunk)
    return sharding.map_chunks(lambda bs: match(a, bs), b, chunk)


def match_pairs(a: Params, b: Params, passes: Optional[int] = None, mesh=None,
                paired: bool = True) -> Tuple[jax.Array, ...]:
    """Weight matching of each row of stacked params ``b`` to the same row of ``a``
    (or, with ``paired=False``, of every row to the single network ``a``), with
    :func:`match_greedy` (jittable).

    On a ``mesh`` over the population axis each device matches its own rows;
    on CPU a few rows at a time. Same permutations as ``jax.vmap(match_greedy)``.

    Returns:
      One ``(P, units)`` int32 permutation per hidden layer.
    """
    rows = jax.tree_util.tree_leaves(b)[0].shape[0]
    fn = functools.partial(_match_local, passes=passes, paired=paired)
    if mesh is not None and rows % mesh.size == 0:
        split = PartitionSpec(AXIS)
        fn = jax.shard_map(fn, mesh=mesh, in_specs=(split if paired else PartitionSpec(), split),
                           out_specs=split, check_vma=False)
    return fn(a, b)


@functools.partial(jax.jit, static_argnames=("passes", "mesh"))
def match_on_device(params: Params, ref, passes: Optional[int] = None,
                    mesh=None) -> Tuple[jax.Array, ...]:
    """Weight matching of every member to member ``ref`` with :func:`greedy_assignment`
    (jittable; on a population sharded over ``mesh`` each device matches its own
    members).

    Returns:
      One ``(P, units)`` int32 permutation per hidden layer (the identity for
      ``ref``), for :func:`permute_population`.
    """
    reference = jax.tree_util.tree_map(lambda x: x[ref], params)
    perms = match_pairs(reference, params, passes, mesh, paired=False)
    is_ref = (jnp.arange(perms[0].shape[0]) == ref)[:, None]
    return tuple(jnp.where(is_ref, jnp.arange(p.shape[1], dtype=p.dtype), p) for p in perms)


def match_population(params: Params, ref: int, members: Optional[Sequence[int]] = None,
                     passes: Optional[int] = None,
                     matcher: str = "greedy") -> Tuple[np.ndarray, ...]:
    """Weight matching (Git Re-Basin) of the members of a population to member ``ref``.

    Members whose units already match the reference's index for index (the
    check runs on the device, for all members at once) keep the identity;
    the others are matched on the host. Not jittable: it decides on the host
    which members need the linear assignments.

    Args:
      params: stacked params (leading axis P) of an MLP or a CNN.
      ref: index of the reference member.
      members: indices to match (default: all); the others keep the identity.
        The GA step passes the selected parents only.
      passes: sweeps of weight matching over the layers (None: until it
        converges). One sweep costs about a third of converging on a trained
        digits MLP and reaches 72-92 % of its similarity gain.
      matcher: ``"greedy"`` (:func:`match_on_device`: 2-10x faster, ~94 % of
        the exact similarity gain) or ``"exact"`` (linear assignments on the host).

    Returns:
      One ``(P, units)`` int32 permutation per hidden layer, for
      :func:`permute_population`.
    """
    _check_matcher(matcher)
    layers = _layers(params)
    size = layers[0][0].shape[0]
    if matcher == "greedy":
        keep = np.ones(size, bool)
        keep[np.asarray(members if members is not None else np.arange(size), int)] = False
        return tuple(np.where(keep[:, None], np.arange(p.shape[1], dtype=np.int32), p)
                     for p in map(np.asarray, match_on_device(
                         params, ref, passes, sharding.mesh_of(params))))
    perms = [np.tile(np.arange(k.shape[-1], dtype=np.int32), (size, 1)) for k, _ in layers[:-1]]
    todo = np.flatnonzero(np.asarray(_unmatched(params, ref)))
    if members is not None:
        todo = np.intersect1d(todo, np.asarray(members))
    if todo.size:
        layers = [(np.asarray(k), np.asarray(v)) for k, v in layers]
        ref_layers = [(k[ref], v[ref]) for k, v in layers]
        for i in todo:
            mine = [(k[i], v[i]) for k, v in layers]
            for l, perm in enumerate(_match_host(ref_layers, mine, passes)):
                perms[l][i] = perm
    return tuple(perms)


def permute_population(params: Params, perms, *states: Any) -> Tuple[Any, ...]:
    """Each member's units reordered by its row of ``perms`` (jittable).

    Args:
      params: stacked params (leading axis P).
      perms: one ``(P, units)`` permutation per hidden layer.
      *states: stacked optimizer states; every subtree shaped like the params
        (Adam's moments, momentum) is permuted with them.

    Returns:
      ``(params, *states)`` permuted; each member computes the same function.
    """
    return permute_states(params, perms, params, *states)


def permute_states(like: Params, perms, *states: Any) -> Tuple[Any, ...]:
    """Every subtree of ``states`` shaped like the stacked params ``like`` permuted by ``perms``."""
    treedef = jax.tree_util.tree_structure(like)
    member = jax.vmap(lambda p, perm: permute_units(p, list(perm)))

    def is_params(x):
        return jax.tree_util.tree_structure(x) == treedef
    return tuple(jax.tree_util.tree_map(lambda x: member(x, perms) if is_params(x) else x,
                                        states, is_leaf=is_params))


def align_population(params: Params, ref: int, *states: Any) -> Tuple[Any, ...]:
    """Every member's units permuted to match member ``ref`` (Ainsworth et al., 2022).

    The population then shares one basis, so any crossover between two members
    crosses matching units. Near-copies of the reference pass the device check
    of :func:`match_population` and skip the host's linear assignments.

    Returns:
      ``(params, *states)``: see :func:`permute_population`.
    """
    return permute_population(params, match_population(params, ref), *states)
