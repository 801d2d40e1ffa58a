"""Weight matching over a permutation spec: the permutation of one network's units that
best matches another's (Ainsworth et al., 2022, "Git Re-Basin: Merging Models modulo
Permutation Symmetries", Alg. 1), for one pair or a whole population.

Any model with a :class:`~genetic_dl.PermutationSpec` is matched alike: the
similarities come from :func:`genetic_dl.operators.permutation.similarity`, the
assignments from :func:`greedy_assignment` on the device (``"greedy"``) or from
scipy's ``linear_sum_assignment`` on the host (``"exact"``). Permutations are
``{group: (units,)}`` dicts, ``{group: (P, units)}`` for a population.
Aligned crossover matches parents pairwise with :func:`match_pairs` or the
population to its best member with :func:`match_on_device` or
:func:`match_population`; each device matches its own members.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from ..core import sharding
from ..core.sharding import AXIS
from ..errors import check_choice
from .permutation import (PermutationSpec, flatten, group_sizes, permute, permute_states,
                          similarity)

Variables = Any
Perms = Dict[str, Any]

MATCHERS = ("greedy", "exact")


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


def improve(s: jax.Array, perm: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """The greedy assignment of similarities ``s`` if it strictly beats ``perm``, else
    ``perm``; and whether it did."""
    new = greedy_assignment(s)
    gain = (jnp.sum(jnp.take_along_axis(s, new[:, None], 1))
            - jnp.sum(jnp.take_along_axis(s, perm[:, None], 1)))
    better = gain > 0  # a different permutation, strictly better
    return jnp.where(better, new, perm), better


def ascend(sweep: Callable[[Any], Tuple[Any, jax.Array]], perms: Any,
           passes: Optional[int]) -> Any:
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


def _check_matcher(matcher: str) -> None:
    check_choice("weight-matching matcher", matcher, MATCHERS,
                 "(greedy assignments on the device, or exact ones on the host)")


def _identity(sizes: Dict[str, int]) -> Perms:
    return {g: jnp.arange(n, dtype=jnp.int32) for g, n in sizes.items()}


def _greedy_match(spec: PermutationSpec, a: Variables, b: Variables,
                  passes: Optional[int]) -> Perms:
    """Coordinate ascent over the groups with greedy assignments (jittable, vmappable);
    a group's new permutation is kept only when it raises that group's similarity, so
    each sweep can only improve on the last (and on the identity)."""
    sizes = group_sizes(spec, a)

    def sweep(perms):
        perms, changed = dict(perms), jnp.asarray(False)
        for g in spec.groups:
            perms[g], better = improve(similarity(spec, a, b, perms, g, sizes), perms[g])
            changed |= better
        return perms, changed

    return ascend(sweep, _identity(sizes), passes)


def _spec_leaves(spec: PermutationSpec, variables: Variables) -> Dict[str, Any]:
    """``{path: leaf}`` of the variables the spec names (all the matcher reads)."""
    flat = flatten(variables)
    return {path: flat[path] for path, _ in spec.axes}


def _match_host(spec: PermutationSpec, a: Dict[str, Any], b: Dict[str, Any],
                passes: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Weight matching on the host with exact linear assignments (float64): coordinate
    ascent over the groups, ``passes`` sweeps at most (None: until no permutation
    changes, at most 30). ``a`` and ``b`` are :func:`_spec_leaves`."""
    from scipy.optimize import linear_sum_assignment  # pylint: disable=import-outside-toplevel
    a, b = ({path: np.asarray(x, np.float64) for path, x in v.items()} for v in (a, b))
    sizes = group_sizes(spec, a)
    perms = {g: np.arange(sizes[g]) for g in spec.groups}
    for _ in range(passes or 30):
        changed = False
        for g in spec.groups:
            _, cols = linear_sum_assignment(similarity(spec, a, b, perms, g, sizes),
                                            maximize=True)
            if not np.array_equal(cols, perms[g]):
                perms[g], changed = cols, True
        if not changed:
            break
    return {g: np.asarray(p, np.int32) for g, p in perms.items()}


def _exact_match(spec: PermutationSpec, a: Variables, b: Variables,
                 passes: Optional[int]) -> Perms:
    fa, fb = _spec_leaves(spec, a), _spec_leaves(spec, b)
    if not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((fa, fb))):
        # called eagerly: no callback, which fails on members of a sharded population
        return _match_host(spec, fa, fb, passes)
    shapes = {g: jax.ShapeDtypeStruct((n,), jnp.int32) for g, n in group_sizes(spec, fa).items()}
    return jax.pure_callback(functools.partial(_match_host, spec, passes=passes), shapes, fa, fb,
                             vmap_method="sequential")


def match(spec: PermutationSpec, a: Variables, b: Variables, passes: Optional[int] = None,
          matcher: str = "greedy") -> Perms:
    """Weight matching of ``b``'s units to ``a``'s (Git Re-Basin, Alg. 1).

    Args:
      spec: the permutation spec.
      a, b: one member's variables each (params, and collections the spec names).
      passes: sweeps over the groups (None: until no permutation changes, at most 30).
      matcher: ``"greedy"``: :func:`greedy_assignment` on the device (jittable,
        vmappable); ``"exact"``: linear assignments on the host, through
        ``jax.pure_callback`` when traced (under ``vmap`` pairs are matched one
        by one).

    Returns:
      ``{group: (units,) int32}``, for :func:`genetic_dl.operators.permutation.permute` of ``b``.
    """
    _check_matcher(matcher)
    if matcher == "greedy":
        return _greedy_match(spec, a, b, passes)
    return _exact_match(spec, a, b, passes)


def align(a: Variables, b: Variables, spec: PermutationSpec, passes: Optional[int] = None,
          matcher: str = "greedy") -> Variables:
    """``b`` with its units permuted to best match ``a``'s (see :func:`match`); it
    computes the same function as ``b``."""
    return permute(b, spec, match(spec, a, b, passes, matcher))


def _identity_is_matched(spec: PermutationSpec, ref: Variables, member: Variables,
                         sizes: Dict[str, int]) -> jax.Array:
    """Whether weight matching started from the identity stops there at once: each unit
    of each group is most similar to the reference's unit of the same index. Then the
    identity is the optimal assignment of every group (its total is the sum of the row
    maxima), so :func:`_match_host` would return it."""
    ok, same = jnp.asarray(True), _identity(sizes)
    for g in spec.groups:
        s = similarity(spec, ref, member, same, g, sizes)
        ok &= jnp.all(jnp.argmax(s, axis=1) == jnp.arange(sizes[g]))
    return ok


@functools.partial(jax.jit, static_argnames=("spec",))
def _unmatched(variables: Variables, ref: Any, spec: PermutationSpec) -> jax.Array:
    reference = jax.tree_util.tree_map(lambda x: x[ref], variables)
    sizes = group_sizes(spec, reference)
    todo = ~jax.vmap(lambda v: _identity_is_matched(spec, reference, v, sizes))(variables)
    return todo.at[ref].set(False)


# On CPU, matching a few members at a time keeps their weights and similarity
# matrices in cache through the greedy rounds, and each chunk's loop stops at its
# own last round: 1.4-1.9x over one vmap of 128 pairs (benchmarks/RESULTS.md).
MATCH_CHUNK = 4


def _match_local(a: Variables, b: Variables, spec: PermutationSpec, passes: Optional[int],
                 paired: bool) -> Perms:
    """Rows of ``b`` matched to the same rows of ``a`` (``paired``) or all to ``a``."""
    n = jax.tree_util.tree_leaves(b)[0].shape[0]
    pair: Callable[[Variables, Variables], Perms] = functools.partial(
        _greedy_match, spec, passes=passes)
    fn = jax.vmap(pair, in_axes=(0 if paired else None, 0))
    chunk = sharding.chunk_size(n, MATCH_CHUNK)
    if jax.default_backend() != "cpu" or chunk >= n:
        return fn(a, b)
    if paired:
        return sharding.map_chunks(lambda ab: fn(*ab), (a, b), chunk)
    return sharding.map_chunks(lambda bs: fn(a, bs), b, chunk)


def match_pairs(a: Variables, b: Variables, spec: PermutationSpec, passes: Optional[int] = None,
                mesh: Any = None, paired: bool = True) -> Perms:
    """Greedy weight matching of each row of stacked variables ``b`` to the same row of
    ``a`` (or, with ``paired=False``, of every row to the single network ``a``), jittable.

    On a ``mesh`` over the population axis each device matches its own rows;
    on CPU a few rows at a time. Same permutations as ``jax.vmap`` of
    :func:`match`.

    Args:
      a, b: stacked variables (leading axis P); ``a`` one member's with ``paired=False``.
      spec: the permutation spec.
      passes: sweeps over the groups (None: until converged).
      mesh: the population's mesh, or None.
      paired: match row to row, or every row to ``a``.

    Returns:
      ``{group: (P, units) int32}``.
    """
    rows = jax.tree_util.tree_leaves(b)[0].shape[0]
    fn = functools.partial(_match_local, spec=spec, passes=passes, paired=paired)
    if mesh is not None and rows % mesh.size == 0:
        split = PartitionSpec(AXIS)
        fn = jax.shard_map(fn, mesh=mesh, in_specs=(split if paired else PartitionSpec(), split),
                           out_specs=split, check_vma=False)
    return fn(a, b)


@functools.partial(jax.jit, static_argnames=("spec", "passes", "mesh"))
def match_on_device(variables: Variables, ref: Any, spec: PermutationSpec,
                    passes: Optional[int] = None, mesh: Any = None) -> Perms:
    """Greedy weight matching of every member to member ``ref`` (jittable; on a
    population sharded over ``mesh`` each device matches its own members).

    Args:
      variables: stacked variables (leading axis P).
      ref: index of the reference member (may be traced).
      spec: the permutation spec.
      passes: sweeps over the groups (None: until converged).
      mesh: the population's mesh, or None.

    Returns:
      ``{group: (P, units) int32}``, the identity for ``ref``.
    """
    reference = jax.tree_util.tree_map(lambda x: x[ref], variables)
    perms = match_pairs(reference, variables, spec, passes, mesh, paired=False)
    return {g: jnp.where((jnp.arange(p.shape[0]) == ref)[:, None],
                         jnp.arange(p.shape[1], dtype=p.dtype), p) for g, p in perms.items()}


def match_population(variables: Variables, ref: int, spec: PermutationSpec,
                     members: Optional[Union[Sequence[int], np.ndarray]] = None,
                     passes: Optional[int] = None,
                     matcher: str = "greedy") -> Dict[str, np.ndarray]:
    """Weight matching (Git Re-Basin) of the members of a population to member ``ref``.

    With the exact matcher, members whose units already match the
    reference's index for index (the check runs on the device, for all
    members at once) keep the identity; the others are matched on the host.
    Not jittable: it decides on the host which members need the linear
    assignments.

    Args:
      variables: stacked variables (leading axis P).
      ref: index of the reference member.
      spec: the permutation spec.
      members: indices to match (default: all); the others keep the identity.
        The GA step passes the selected parents only.
      passes: sweeps of weight matching over the groups (None: until it
        converges). One sweep costs about a third of converging on a trained
        digits MLP and reaches 72-92 % of its similarity gain.
      matcher: ``"greedy"`` (:func:`match_on_device`: 2-10x faster, ~94 % of
        the exact similarity gain) or ``"exact"`` (linear assignments on the host).

    Returns:
      ``{group: (P, units) int32}``, for :func:`permute_population`.
    """
    _check_matcher(matcher)
    size = jax.tree_util.tree_leaves(variables)[0].shape[0]
    chosen = np.zeros(size, bool)
    chosen[np.asarray(members if members is not None else np.arange(size), int)] = True
    if matcher == "greedy":
        perms = match_on_device(variables, ref, spec, passes, sharding.mesh_of(variables))
        return {g: np.where(chosen[:, None], np.asarray(p), np.arange(p.shape[1], dtype=np.int32))
                for g, p in perms.items()}
    leaves = {path: np.asarray(x) for path, x in _spec_leaves(spec, variables).items()}
    reference = {path: x[ref] for path, x in leaves.items()}
    sizes = group_sizes(spec, reference)
    out = {g: np.tile(np.arange(n, dtype=np.int32), (size, 1)) for g, n in sizes.items()}
    for i in np.flatnonzero(np.asarray(_unmatched(variables, ref, spec)) & chosen):
        mine = {path: x[i] for path, x in leaves.items()}
        for g, perm in _match_host(spec, reference, mine, passes).items():
            out[g][i] = perm
    return out


def permute_population(variables: Variables, spec: PermutationSpec, perms: Perms,
                       *states: Any) -> Tuple[Any, ...]:
    """Each member's units reordered by its row of ``perms`` (jittable).

    Args:
      variables: stacked variables (leading axis P).
      spec: the permutation spec.
      perms: ``{group: (P, units)}``.
      *states: stacked optimizer states; every subtree shaped like the params
        (``{"params": ...}``: Adam's moments, momentum) is permuted with them.

    Returns:
      ``(variables, *states)`` permuted; each member computes the same function.
    """
    like = {"params": variables["params"]} if "params" in variables else variables
    moved = jax.vmap(lambda v, p: permute(v, spec, p))(variables, perms)
    return (moved,) + permute_states(like, spec, perms, *states)


def align_population(variables: Variables, ref: int, spec: PermutationSpec,
                     *states: Any) -> Tuple[Any, ...]:
    """Every member's units permuted to match member ``ref`` (Ainsworth et al., 2022),
    with greedy matching until converged.

    The population then shares one basis, so any crossover between two members
    crosses matching units.

    Returns:
      ``(variables, *states)``: see :func:`permute_population`.
    """
    return permute_population(variables, spec, match_population(variables, ref, spec), *states)
