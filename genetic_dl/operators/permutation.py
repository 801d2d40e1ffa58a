"""Operations on permutation specs: derive one, check it, permute by it, cross by it.

A :class:`~genetic_dl.core.permutation_spec.PermutationSpec` (Ainsworth et
al., 2022, "Git Re-Basin: Merging Models modulo Permutation Symmetries") says
which axes of a model's variables are the same hidden unit. Per-neuron and
aligned crossover use it to keep units whole and to match them
(:mod:`genetic_dl.operators.matching`); nothing here knows a model's layer names.

Where a spec comes from is one seam, :func:`spec_of`: the learner's own, or
one a :data:`Derivation` computes from the model (by default :func:`derive`,
which traces it: :mod:`genetic_dl.operators.spec_derivation`), checked once by
:func:`verify`; :func:`describe` prints it for a user to edit.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core.permutation_spec import (Axes, PermutationSpec, flatten, group_sizes, path_name,
                                     segment_offsets)
from ..errors import check, fail
from .spec_derivation import spec_from_jaxpr

Variables = Any
Perms = Dict[str, Any]
Forward = Callable[[Variables], Any]
Derivation = Callable[[Variables, Forward], PermutationSpec]
"""``derivation(variables, forward) -> spec`` for a model without an explicit spec:
``variables`` are one member's (params and collections, in the order the model
created them), ``forward`` maps such variables to outputs on a sample input in
evaluation mode (for a derivation that traces the model)."""

UNIT_FREE = "uniform, one_point, two_point, arithmetic, per_layer"
FIX = (f"pass permutation_spec= to Learner.from_linen, or use a crossover that moves no units "
       f"({UNIT_FREE})")
FEW_UNITS = "the model has no hidden units that can be permuted"


def _xp(x: Any) -> Any:
    """numpy for host arrays (the exact matcher's float64 copies), else jax.numpy."""
    return np if isinstance(x, np.ndarray) else jnp


def _map(fn: Callable[[str, Any], Any], variables: Variables) -> Variables:
    return jax.tree_util.tree_map_with_path(lambda path, x: fn(path_name(path), x), variables)


def _index(n: int, perm: Any) -> Any:
    """Indices permuting an axis of ``n`` entries, ``n // units`` copies of ``perm``."""
    units = perm.shape[0]
    if n == units:
        return perm
    xp = _xp(perm)
    return (xp.arange(n // units)[:, None] * units + perm[None, :]).reshape(-1)


def _segmented_index(entry: Tuple[Any, ...], perms: Perms, xp: Any) -> Any:
    """Indices permuting a segmented axis: each group's segment by its permutation."""
    sizes = {g: perms[g].shape[0] for g in entry if isinstance(g, str)}
    return xp.concatenate([
        (perms[seg] if isinstance(seg, str) else xp.arange(stop - start)) + start
        for seg, start, stop in segment_offsets(entry, sizes)])


def _permute_leaf(x: Any, axes: Axes, perms: Perms, skip: Optional[int] = None) -> Any:
    xp = _xp(x)
    for i, a in enumerate(axes):
        if a is None or i == skip:
            continue
        index = (_segmented_index(a, perms, xp) if isinstance(a, tuple)
                 else _index(x.shape[i], perms[a]))
        x = xp.take(x, index, axis=i)
    return x


def permute(variables: Variables, spec: PermutationSpec, perms: Perms) -> Variables:
    """``variables`` with each group's units reordered by ``perms[group]``.

    Args:
      variables: one member's variables.
      spec: the permutation spec.
      perms: ``{group: (units,) int}``.

    Returns:
      The permuted variables: the network computes the same function when
      the spec is right (jittable).
    """
    table = spec.as_dict()
    return _map(lambda path, x: _permute_leaf(x, table[path], perms) if path in table else x,
                variables)


def identity(spec: PermutationSpec, variables: Variables) -> Perms:
    """The identity permutation of every group."""
    return {g: jnp.arange(n, dtype=jnp.int32) for g, n in group_sizes(spec, variables).items()}


def derive(variables: Variables, forward: Forward) -> PermutationSpec:
    """The spec of any model, from its traced computation (the default :data:`Derivation`;
    see :mod:`genetic_dl.operators.spec_derivation`).

    Args:
      variables: one member's variables.
      forward: ``variables -> outputs`` in evaluation mode on a sample input.

    Returns:
      Groups ``P0, P1, ...`` in the order the model creates its variables, with
      notes on the variable axes left in place.
    """
    return spec_from_jaxpr(variables, forward)


def _spread(x: Any, scale: float) -> Any:
    """Constant variables (biases, norm scales, fresh statistics) made distinct, so
    that a wrong spec shows in the outputs."""
    flat = jnp.ravel(x)
    if x.size > 1 and bool(jnp.all(flat == flat[0])):
        return jnp.linspace(0.5, 1.5, x.size, dtype=x.dtype).reshape(x.shape) * scale
    return x


def verify(spec: PermutationSpec, variables: Variables, forward: Forward,
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
    check(err <= rtol,
          f"the permutation spec does not preserve the model's function (the permuted "
          f"network's outputs differ by {err:.2g} of their scale): print the spec with "
          f"gdl.permutation.describe(population), correct the groups of the layers that "
          f"break it and {FIX}")


def per_neuron(key: jax.Array, a: Variables, b: Variables, spec: PermutationSpec) -> Variables:
    """Each unit of each group whole from one parent (Montana & Davis, 1989, "Training
    feedforward neural networks using genetic algorithms": node crossover).

    A variable follows the unit of its last permuted axis: a kernel its output
    unit (so a unit's incoming weights, bias and norm statistics move together),
    the output layer's rows the unit they read. Variables without a permuted
    axis come from ``a``.

    Args:
      key: PRNG key (one fair coin per unit).
      a, b: one member's variables each.
      spec: the permutation spec.

    Returns:
      The child's variables.
    """
    sizes = group_sizes(spec, a)
    groups = spec.groups
    keys = jax.random.split(key, max(1, len(groups)))
    masks = {g: jax.random.bernoulli(k, 0.5, (sizes[g],)) for k, g in zip(keys, groups)}
    table = spec.as_dict()

    def mix(path, x, y):
        permuted = [(i, g) for i, g in enumerate(table.get(path, ())) if g is not None]
        if not permuted:
            return x
        i, g = permuted[-1]
        if isinstance(g, tuple):  # each segment follows its group; fixed entries from a
            m = jnp.concatenate([masks[seg] if isinstance(seg, str)
                                 else jnp.zeros(stop - start, bool)
                                 for seg, start, stop in segment_offsets(g, sizes)])
        else:
            m = masks[g][jnp.arange(x.shape[i]) % sizes[g]]
        m = m.reshape((-1,) + (1,) * (x.ndim - i - 1))
        return jnp.where(m, y, x)
    flat_b = flatten(b)
    return _map(lambda path, x: mix(path, x, flat_b[path]), a)


def _by_unit(x: Any, axis: int, units: int) -> Any:
    """``x`` as ``(units, rest)``: everything a unit of the axis touches."""
    if axis:  # the axis first, the others in order (numpy's moveaxis costs ~7 us a call)
        x = x.transpose((axis,) + tuple(i for i in range(x.ndim) if i != axis))
    n = x.shape[0]
    if n == units:
        return x.reshape(units, -1)
    return x.reshape(n // units, units, -1).transpose(1, 0, 2).reshape(units, -1)


def _flat(variables: Variables) -> Dict[str, Any]:
    """:func:`flatten`, skipped for a dict of arrays (already ``{path: leaf}``): the
    exact matcher calls :func:`similarity` hundreds of times on the host."""
    if isinstance(variables, dict) and all(hasattr(x, "shape") for x in variables.values()):
        return variables
    return flatten(variables)


@functools.lru_cache(maxsize=256)
def _occurrences(spec: PermutationSpec, group: str, sizes: Tuple[Tuple[str, int], ...]
                 ) -> Tuple[Tuple[str, int, Axes, Optional[Tuple[int, int]]], ...]:
    """``(path, axis, axes of path, (start, stop) or None)`` of every axis ``group``
    permutes: ``(start, stop)`` is each of its segments on a segmented axis."""
    table = spec.as_dict()
    out: List[Tuple[str, int, Axes, Optional[Tuple[int, int]]]] = []
    for path, axis in spec.occurrences(group):
        entry = table[path][axis]
        if isinstance(entry, tuple):
            out.extend((path, axis, table[path], (start, stop))
                       for seg, start, stop in segment_offsets(entry, dict(sizes))
                       if seg == group)
        else:
            out.append((path, axis, table[path], None))
    return tuple(out)


def similarity(spec: PermutationSpec, a: Variables, b: Variables, perms: Perms,
               group: str, sizes: Dict[str, int]) -> Any:
    """Weight matching's ``(units, units)`` similarity of ``a``'s and ``b``'s units of
    ``group`` (Ainsworth et al., 2022, Alg. 1).

    Args:
      spec: the permutation spec.
      a, b: one member's variables each (or their :func:`flatten` dicts);
        numpy arrays give a float64 numpy result (the exact matcher on the
        host), jax arrays float32.
      perms: ``{group: (units,)}``, the permutations of ``b``'s other groups.
      group: the group whose units are compared.
      sizes: :func:`group_sizes` of the spec.

    Returns:
      The dot products of everything each unit touches, ``b``'s other axes
      permuted by ``perms``.
    """
    fa, fb, n = _flat(a), _flat(b), sizes[group]
    s = None
    for path, axis, axes, part in _occurrences(spec, group, tuple(sorted(sizes.items()))):
        x, y = fa[path], _permute_leaf(fb[path], axes, perms, skip=axis)
        if part is not None:
            x = _xp(x).take(x, _xp(x).arange(*part), axis=axis)
            y = _xp(y).take(y, _xp(y).arange(*part), axis=axis)
        if _xp(x) is np:  # no copy of float64 host arrays
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        else:
            x, y = x.astype(jnp.float32), y.astype(jnp.float32)
        x, y = _by_unit(x, axis, n), _by_unit(y, axis, n).T
        term = x * y if x.shape[1] == 1 else x @ y  # one value per unit: an outer product
        s = term if s is None else s + term
    if s is None:
        fail(f"permutation group {group!r} permutes no axis: choose one of "
             f"{', '.join(spec.groups)}")
    return s


def permute_states(like: Any, spec: PermutationSpec, perms: Perms,
                   *states: Any) -> Tuple[Any, ...]:
    """Every subtree of ``states`` shaped like the stacked ``like`` (params: Adam's
    moments, momentum) permuted member by member by ``perms`` (each ``(P, units)``)."""
    treedef: Any = jax.tree_util.tree_structure(like)
    member = jax.vmap(lambda x, perm: permute(x, spec, perm))

    def is_like(x):
        return treedef == jax.tree_util.tree_structure(x)
    return tuple(jax.tree_util.tree_map(lambda x: member(x, perms) if is_like(x) else x,
                                        states, is_leaf=is_like))


class _Sample:
    """The hyperparameters a spec is verified with: member 0's of the first population
    seen. Not part of the cache key (every sample is equal): a spec is a property of the
    model, so it is verified once per learner, input shape and hyperparameter names, and
    a GA step after the first reads nothing from the devices."""

    def __init__(self, hparams: Mapping[str, Any]) -> None:
        self._hparams = hparams

    def values(self) -> Dict[str, jax.Array]:
        """Member 0's hyperparameters, in one host transfer."""
        return {k: jnp.asarray(np.asarray(v)[0])
                for k, v in jax.device_get(dict(self._hparams)).items()}

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sample)


@functools.lru_cache(maxsize=64)
def _cached(learner: Any, feature_shape: Tuple[int, ...], dtype: str, names: Tuple[str, ...],
            derivation: Derivation, sample: _Sample) -> PermutationSpec:
    del names  # part of the key only
    hp = sample.values()
    variables, forward = _model(learner, feature_shape, dtype, hp)
    given = getattr(learner, "permutation_spec", None)
    spec = given if given is not None else derivation(variables, forward)
    if not spec.groups:
        notes = "; ".join(f"{where}: {why}" for where, why in spec.notes[:3])
        fail(f"{FEW_UNITS}{' (' + notes + ')' if notes else ''}: use a crossover that moves "
             f"no units ({UNIT_FREE})")
    verify(spec, variables, forward, jax.random.key(2))
    return spec


def _model(learner: Any, feature_shape: Tuple[int, ...], dtype: str,
           hp: Mapping[str, Any]) -> Tuple[Variables, Forward]:
    """Member variables of ``learner`` and its evaluation on a fixed sample input: random
    normals, or for integer inputs (tokens) the indices 0 and 1."""
    shape = (2,) + tuple(feature_shape)
    if jnp.issubdtype(jnp.dtype(dtype), jnp.integer):
        sample_x = jax.random.randint(jax.random.key(1), shape, 0, 2).astype(dtype)
    else:
        sample_x = jax.random.normal(jax.random.key(1), shape, dtype)
    params, collections = learner.init(jax.random.key(0), jnp.zeros(shape, dtype))
    variables = {**params, **collections}

    def forward(v):
        p = {"params": v["params"]}
        return learner.apply_eval(p, {k: v[k] for k in v if k != "params"}, sample_x, hp)
    return variables, forward


def spec_of(population: Any, derivation: Derivation = derive) -> PermutationSpec:
    """The population's permutation spec: the learner's, else ``derivation``'s (by
    default :func:`derive`, from the model's traced computation); either is verified
    once with a permuted forward pass of member 0 (cached per learner, input shape
    and dtype, and hyperparameter names).

    Args:
      population: a :class:`~genetic_dl.Population`.
      derivation: how a model without an explicit spec gets one.

    Returns:
      The verified spec.

    Raises:
      ValueError: no valid spec (see :func:`derive` and :func:`verify`), or one
        that permutes nothing.
    """
    return _cached(population.learner, tuple(population.feature_shape), _dtype(population),
                   tuple(sorted(population.hparams)), derivation, _Sample(population.hparams))


def _dtype(population: Any) -> str:
    return str(jnp.dtype(population.feature_dtype))


def describe(population: Any) -> str:
    """The population's permutation spec as Python source: its groups, the axes each
    ties, the axes left in place and why; edit it and pass it as ``permutation_spec=``.

    Args:
      population: a :class:`~genetic_dl.Population`.

    Returns:
      The text of :meth:`~genetic_dl.PermutationSpec.describe` with unit counts.
    """
    spec = spec_of(population)
    variables, _ = _model(population.learner, tuple(population.feature_shape),
                          _dtype(population), _Sample(population.hparams).values())
    return spec.describe(variables)
