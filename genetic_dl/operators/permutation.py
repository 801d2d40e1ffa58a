"""Operations on permutation specs (:mod:`genetic_dl.core.permutation_spec`).

A network computes the same function after its hidden units are reordered,
as long as every weight, bias and normalisation statistic of a unit moves
with it. Ainsworth et al. (2022), "Git Re-Basin: Merging Models modulo
Permutation Symmetries", describe this with a permutation spec: for each
variable, the permutation group of each of its axes (or ``None``). Per-neuron
and aligned crossover use the spec to keep units whole and to match them.

Paths are ``"/"``-joined keys of the variables dict, collections included::

    {"params/Conv_0/kernel": (None, None, None, "P0"),
     "params/Conv_0/bias": ("P0",),
     "params/BatchNorm_0/scale": ("P0",), "params/BatchNorm_0/bias": ("P0",),
     "batch_stats/BatchNorm_0/mean": ("P0",), "batch_stats/BatchNorm_0/var": ("P0",),
     "params/Dense_0/kernel": ("P0", None)}

An axis may hold a whole number of copies of a group, unit fastest: the rows
of a dense layer reading a flattened ``(H, W, C)`` conv output are
``s * C + c``, so ``"P0"`` on that axis permutes the channels of every pixel.
Variables the spec does not name are never permuted.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core.permutation_spec import Axes, PermutationSpec, flatten, group_sizes

Variables = Dict[str, Any]
Perms = Dict[str, jax.Array]


def _map(fn: Callable[[str, Any], Any], variables: Any) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, x: fn("/".join(str(getattr(k, "key", getattr(k, "name", k)))
                                    for k in path), x), variables)


def _index(n: int, perm) -> jax.Array:
    """Indices permuting an axis of ``n`` entries, ``n // units`` copies of ``perm``."""
    units = perm.shape[0]
    if n == units:
        return perm
    return (jnp.arange(n // units)[:, None] * units + perm[None, :]).reshape(-1)


def _permute_leaf(x, axes: Axes, perms: Perms, skip: Optional[int] = None):
    for i, a in enumerate(axes):
        if a is not None and i != skip:
            x = jnp.take(x, _index(x.shape[i], perms[a]), axis=i)
    return x


def permute(variables: Any, spec: PermutationSpec, perms: Perms) -> Any:
    """``variables`` with each group's units reordered by ``perms[group]``:
    the network computes the same function when the spec is right (jittable)."""
    table = spec.as_dict()
    return _map(lambda path, x: _permute_leaf(x, table[path], perms) if path in table else x,
                variables)


def identity(spec: PermutationSpec, variables: Any) -> Perms:
    """The identity permutation of every group."""
    return {g: jnp.arange(n, dtype=jnp.int32) for g, n in group_sizes(spec, variables).items()}


def _in_order(tree: Any, prefix: str = ""):
    """``(path, leaf)`` of nested dicts in insertion order (``tree_flatten`` sorts keys)."""
    if hasattr(tree, "items"):
        for k, v in tree.items():
            yield from _in_order(v, f"{prefix}/{k}" if prefix else str(k))
    else:
        yield prefix, tree


def _norm_axes(module: str, leaves: Dict[str, Any], stats: Dict[str, Tuple[int, ...]],
               current: Optional[str], size: Optional[int]) -> Dict[str, Axes]:
    """A norm module's vectors and statistics (``<collection>/<module>/<name>``) follow
    the current group's units."""
    if current is None or any(np.shape(x) != (size,) for x in leaves.values()):
        raise ValueError(f"cannot derive a permutation spec at module {module!r} (not a "
                         f"Dense/Conv layer nor a norm of the previous layer's units): pass "
                         f"permutation_spec= to Learner.from_linen")
    out: Dict[str, Axes] = {f"params/{module}/{name}": (current,) for name in leaves}
    for path, shape in stats.items():
        if path.split("/", 1)[1].rpartition("/")[0] == module and shape == (size,):
            out[path] = (current,)
    return out


def derive(variables: Any) -> PermutationSpec:
    """The spec of a chain of Dense/Conv layers with optional BatchNorm/LayerNorm.

    Modules are taken in the order of ``variables["params"]`` (a linen init
    lists them in call order). Each layer's output units form a group (the
    last layer's are the outputs: not permuted); the next layer's input axis
    reads them, and a norm layer's scale, bias and statistics follow them.
    A model that is not such a chain (a residual connection, an attention
    layer) gets a spec that :func:`verify` rejects.

    Raises:
      ValueError: a module that is neither a layer with a ``kernel`` nor a
        norm with vectors of the current width.
    """
    params = variables.get("params", {}) if hasattr(variables, "get") else {}
    modules: Dict[str, Dict[str, Any]] = {}
    for path, leaf in _in_order(params):
        module, _, name = path.rpartition("/")
        modules.setdefault(module, {})[name] = leaf
    layers = [m for m, leaves in modules.items() if "kernel" in leaves]
    if not layers:
        raise ValueError("cannot derive a permutation spec: the model has no layer with a "
                         "'kernel'; pass permutation_spec= to Learner.from_linen")
    stats = {path: np.shape(x) for path, x in flatten(variables).items()
             if not path.startswith("params/")}
    spec: Dict[str, Axes] = {}
    current, size, count = None, None, 0
    for module, leaves in modules.items():
        if "kernel" in leaves:
            ndim = np.ndim(leaves["kernel"])
            axes: List[Optional[str]] = [None] * ndim
            if current is not None and ndim >= 2:
                axes[-2] = current
            if module == layers[-1]:
                current = None
            else:
                current, size, count = f"P{count}", np.shape(leaves["kernel"])[-1], count + 1
                axes[-1] = current
            spec[f"params/{module}/kernel"] = tuple(axes)
            for name, leaf in leaves.items():
                if name != "kernel":
                    spec[f"params/{module}/{name}"] = ((current,) if np.ndim(leaf) == 1
                                                       else (None,) * np.ndim(leaf))
            continue
        spec.update(_norm_axes(module, leaves, stats, current, size))
    return PermutationSpec.of(spec)


def _spread(x, scale):
    """Constant variables (biases, norm scales, fresh statistics) made distinct, so
    that a wrong spec shows in the outputs."""
    flat = jnp.ravel(x)
    if x.size > 1 and bool(jnp.all(flat == flat[0])):
        return jnp.linspace(0.5, 1.5, x.size, dtype=x.dtype).reshape(x.shape) * scale
    return x


def verify(spec: PermutationSpec, variables: Any, forward: Callable[[Any], Any],
           key: jax.Array, rtol: float = 1e-4) -> None:
    """Checks that permuting every group at random leaves ``forward`` unchanged.

    Args:
      spec: the spec to check.
      variables: one member's variables (params and collections).
      forward: ``variables -> outputs`` on a fixed sample input, in evaluation mode.
      key: PRNG key of the random permutations.
      rtol: tolerance relative to the outputs' largest magnitude.

    Raises:
      ValueError: the spec does not fit the variables' shapes, or the
        permuted network computes something else.
    """
    sizes = group_sizes(spec, variables)
    variables = jax.tree_util.tree_map(lambda x: _spread(x, 1.0), variables)
    keys = jax.random.split(key, max(1, len(sizes)))
    perms = {g: jax.random.permutation(k, n) for k, (g, n) in zip(keys, sorted(sizes.items()))}
    want = jax.tree_util.tree_leaves(forward(variables))
    got = jax.tree_util.tree_leaves(forward(permute(variables, spec, perms)))
    scale = max(float(jnp.max(jnp.abs(w))) for w in want) + 1e-30
    err = max(float(jnp.max(jnp.abs(g - w))) for g, w in zip(got, want)) / scale
    if not err <= rtol:
        raise ValueError(f"the permutation spec does not preserve the model's function (the "
                         f"permuted network's outputs differ by {err:.2g} of their scale): a "
                         f"residual connection or a layer outside a Dense/Conv/norm chain needs "
                         f"an explicit spec, e.g. the same group on both ends of a skip "
                         f"connection; pass permutation_spec= to Learner.from_linen")


def per_neuron(key, a: Variables, b: Variables, spec: PermutationSpec) -> Variables:
    """Each unit of each group whole from one parent (Montana & Davis, 1989, node crossover).

    A variable follows the unit of its last permuted axis: a kernel its output
    unit (so a unit's incoming weights, bias and norm statistics move together),
    the output layer's rows the unit they read. Variables without a permuted
    axis come from ``a``.
    """
    sizes = group_sizes(spec, a)
    groups = spec.groups
    keys = jax.random.split(key, max(1, len(groups)))
    masks = {g: jax.random.bernoulli(k, 0.5, (sizes[g],)) for k, g in zip(keys, groups)}
    table = spec.as_dict()

    def mix(path, x, y):
        axes = table.get(path, ())
        last = [i for i, g in enumerate(axes) if g is not None]
        if not last:
            return x
        i = last[-1]
        m = masks[axes[i]][jnp.arange(x.shape[i]) % sizes[axes[i]]]
        m = m.reshape((-1,) + (1,) * (x.ndim - i - 1))
        return jnp.where(m, y, x)
    flat_b = flatten(b)
    return _map(lambda path, x: mix(path, x, flat_b[path]), a)


def _by_unit(x, axis: int, units: int):
    """``x`` as ``(units, rest)``: everything a unit of the axis touches."""
    x = jnp.moveaxis(x, axis, 0)
    n = x.shape[0]
    return x.reshape(n // units, units, -1).transpose(1, 0, 2).reshape(units, -1)


def similarity(spec: PermutationSpec, a: Variables, b: Variables, perms: Perms,
               group: str, sizes: Dict[str, int]) -> jax.Array:
    """Weight matching's ``(units, units)`` similarity of ``a``'s and ``b``'s units of
    ``group``: the dot products of everything each unit touches, with ``b``'s other
    axes permuted by ``perms``."""
    fa, fb, table, n = flatten(a), flatten(b), spec.as_dict(), sizes[group]
    s = jnp.zeros((n, n), jnp.float32)
    for path, axis in spec.occurrences(group):
        wb = _permute_leaf(fb[path], table[path], perms, skip=axis)
        s = s + _by_unit(fa[path].astype(jnp.float32), axis, n) @ _by_unit(
            wb.astype(jnp.float32), axis, n).T
    return s


def match(spec: PermutationSpec, a: Variables, b: Variables,
          passes: Optional[int] = 2) -> Perms:
    """Weight matching (Ainsworth et al., 2022, Alg. 1) of ``b``'s units to ``a``'s with
    greedy assignments on the device (jittable, vmappable).

    Coordinate ascent over the groups; a group's new permutation is kept only
    when it raises that group's similarity, so no sweep undoes the last.

    Args:
      spec: the permutation spec.
      a, b: one member's variables each (params, and collections the spec names).
      passes: sweeps over the groups (None: until none changes, at most 30).

    Returns:
      ``{group: (units,) int32}``, for :func:`permute` of ``b``.
    """
    from .matching import ascend, improve  # pylint: disable=import-outside-toplevel
    sizes = group_sizes(spec, a)

    def sweep(perms):
        perms, changed = dict(perms), jnp.asarray(False)
        for g in spec.groups:
            perms[g], better = improve(similarity(spec, a, b, perms, g, sizes), perms[g])
            changed |= better
        return perms, changed

    return ascend(sweep, {g: jnp.arange(sizes[g], dtype=jnp.int32) for g in spec.groups},
                  passes)


def align(a: Variables, b: Variables, spec: PermutationSpec,
          passes: Optional[int] = 2) -> Variables:
    """``b`` with its units permuted to best match ``a``'s (Git Re-Basin)."""
    return permute(b, spec, match(spec, a, b, passes))


@functools.lru_cache(maxsize=64)
def _cached(learner, feature_shape, hp_items) -> Optional[PermutationSpec]:
    hp = {k: jnp.asarray(v) for k, v in hp_items}
    x = jnp.zeros((2,) + tuple(feature_shape), jnp.float32)
    params, collections = learner.init(jax.random.key(0), x)
    variables = {**params, **collections}
    given = getattr(learner, "permutation_spec", None)
    spec = given if given is not None else derive(variables)
    sample = jax.random.normal(jax.random.key(1), x.shape, x.dtype)

    def forward(v):
        p = {"params": v["params"]}
        return learner.apply_eval(p, {k: v[k] for k in v if k != "params"}, sample, hp)
    verify(spec, variables, forward, jax.random.key(2))
    return spec


def spec_of(population) -> PermutationSpec:
    """The population's permutation spec: the learner's, else one derived from its
    layer chain; either is verified once with a permuted forward pass.

    Raises:
      ValueError: no valid spec (see :func:`derive` and :func:`verify`).
    """
    hp = tuple(sorted((k, np.asarray(v[0]).tolist()) for k, v in population.hparams.items()))
    hp = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in hp)
    return _cached(population.learner, tuple(population.feature_shape), hp)


def permute_states(like: Any, spec: PermutationSpec, perms: Perms, *states: Any) -> Tuple[Any, ...]:
    """Every subtree of ``states`` shaped like the stacked ``like`` (params: Adam's
    moments, momentum) permuted member by member by ``perms`` (each ``(P, units)``)."""
    treedef = jax.tree_util.tree_structure(like)
    member = jax.vmap(lambda x, perm: permute(x, spec, perm))

    def is_like(x):
        return jax.tree_util.tree_structure(x) == treedef
    return tuple(jax.tree_util.tree_map(lambda x: member(x, perms) if is_like(x) else x,
                                        states, is_leaf=is_like))


@functools.partial(jax.jit, static_argnames=("spec", "passes"))
def match_to_member(variables: Any, ref, spec: PermutationSpec,
                    passes: Optional[int] = 2) -> Perms:
    """Weight matching of every member of stacked ``variables`` to member ``ref``.

    Returns:
      ``{group: (P, units)}``, the identity for ``ref``.
    """
    reference = jax.tree_util.tree_map(lambda x: x[ref], variables)
    perms = jax.vmap(lambda v: match(spec, reference, v, passes))(variables)
    size = jax.tree_util.tree_leaves(variables)[0].shape[0]
    is_ref = (jnp.arange(size) == ref)[:, None]
    return {g: jnp.where(is_ref, jnp.arange(p.shape[1], dtype=p.dtype), p)
            for g, p in perms.items()}
