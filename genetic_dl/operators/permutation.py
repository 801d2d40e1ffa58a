"""Operations on permutation specs: derive one, check it, permute by it, cross by it.

A :class:`~genetic_dl.core.permutation_spec.PermutationSpec` (Ainsworth et
al., 2022, "Git Re-Basin: Merging Models modulo Permutation Symmetries") says
which axes of a model's variables are the same hidden unit. Per-neuron and
aligned crossover use it to keep units whole and to match them
(:mod:`genetic_dl.operators.matching`); nothing here knows a model's layer names.

Where a spec comes from is one seam, :func:`spec_of`: the learner's own, or
one a :data:`Derivation` computes from the model (by default :func:`derive`,
which reads a Dense/Conv(+norm) chain), checked once by :func:`verify`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core.permutation_spec import Axes, PermutationSpec, flatten, group_sizes, path_name
from ..errors import check, fail

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


def _permute_leaf(x: Any, axes: Axes, perms: Perms, skip: Optional[int] = None) -> Any:
    xp = _xp(x)
    for i, a in enumerate(axes):
        if a is not None and i != skip:
            x = xp.take(x, _index(x.shape[i], perms[a]), axis=i)
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


def _in_order(tree: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
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
    check(current is not None and all(np.shape(x) == (size,) for x in leaves.values()),
          f"cannot derive a permutation spec at module {module!r} (not a Dense/Conv layer nor "
          f"a norm of the previous layer's units): {FIX}")
    out: Dict[str, Axes] = {f"params/{module}/{name}": (current,) for name in leaves}
    for path, shape in stats.items():
        if path.split("/", 1)[1].rpartition("/")[0] == module and shape == (size,):
            out[path] = (current,)
    return out


def derive(variables: Variables, forward: Optional[Forward] = None) -> PermutationSpec:
    """The spec of a chain of Dense/Conv layers with optional BatchNorm/LayerNorm
    (the default :data:`Derivation`).

    Modules are taken in the order of ``variables["params"]`` (a linen init
    lists them in call order). Each layer's output units form a group (the
    last layer's are the outputs: not permuted); the next layer's input axis
    reads them, and a norm layer's scale, bias and statistics follow them.
    A model that is not such a chain (a residual connection, an attention
    layer) gets a spec that :func:`verify` rejects.

    Args:
      variables: one member's variables, modules in call order.
      forward: unused: the chain is read from the variables' shapes.

    Returns:
      Groups ``P0, P1, ...``, one per hidden layer.

    Raises:
      ValueError: a module that is neither a layer with a ``kernel`` reading
        the previous layer's units nor a norm of them.
    """
    del forward
    params = variables.get("params", {}) if hasattr(variables, "get") else {}
    modules: Dict[str, Dict[str, Any]] = {}
    for path, leaf in _in_order(params):
        module, _, name = path.rpartition("/")
        modules.setdefault(module, {})[name] = leaf
    layers = [m for m, leaves in modules.items() if "kernel" in leaves]
    check(bool(layers), f"cannot derive a permutation spec: the model has no layer with a "
                        f"'kernel'; {FIX}")
    stats = {path: np.shape(x) for path, x in flatten(variables).items()
             if not path.startswith("params/")}
    spec: Dict[str, Axes] = {}
    current, size, count = None, None, 0
    for module, leaves in modules.items():
        if "kernel" not in leaves:
            spec.update(_norm_axes(module, leaves, stats, current, size))
            continue
        shape = np.shape(leaves["kernel"])
        axes: List[Optional[str]] = [None] * len(shape)
        if current is not None and len(shape) >= 2:
            check(shape[-2] % size == 0,
                  f"cannot derive a permutation spec: layer {module!r} reads {shape[-2]} "
                  f"inputs, not the {size} units of the layer before it (nor copies of them); "
                  f"{FIX}")
            axes[-2] = current
        if module == layers[-1]:
            current = None
        else:
            current, size, count = f"P{count}", shape[-1], count + 1
            axes[-1] = current
        spec[f"params/{module}/kernel"] = tuple(axes)
        for name, leaf in leaves.items():
            if name != "kernel":
                spec[f"params/{module}/{name}"] = ((current,) if np.ndim(leaf) == 1
                                                   else (None,) * np.ndim(leaf))
    return PermutationSpec.of(spec)


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
          f"network's outputs differ by {err:.2g} of their scale): a residual connection or a "
          f"layer outside a Dense/Conv/norm chain needs an explicit spec, e.g. the same group "
          f"on both ends of a skip connection; {FIX}")


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
def _occurrences(spec: PermutationSpec, group: str) -> Tuple[Tuple[str, int, Axes], ...]:
    """``(path, axis, axes of path)`` of every axis ``group`` permutes."""
    table = spec.as_dict()
    return tuple((path, axis, table[path]) for path, axis in spec.occurrences(group))


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
    for path, axis, axes in _occurrences(spec, group):
        x, y = fa[path], _permute_leaf(fb[path], axes, perms, skip=axis)
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
def _cached(learner: Any, feature_shape: Tuple[int, ...], names: Tuple[str, ...],
            derivation: Derivation, sample: _Sample) -> PermutationSpec:
    del names  # part of the key only
    hp = sample.values()
    x = jnp.zeros((2,) + tuple(feature_shape), jnp.float32)
    params, collections = learner.init(jax.random.key(0), x)
    variables = {**params, **collections}
    sample_x = jax.random.normal(jax.random.key(1), x.shape, x.dtype)

    def forward(v):
        p = {"params": v["params"]}
        return learner.apply_eval(p, {k: v[k] for k in v if k != "params"}, sample_x, hp)
    given = getattr(learner, "permutation_spec", None)
    spec = given if given is not None else derivation(variables, forward)
    verify(spec, variables, forward, jax.random.key(2))
    return spec


def spec_of(population: Any, derivation: Derivation = derive) -> PermutationSpec:
    """The population's permutation spec: the learner's, else ``derivation``'s (by
    default :func:`derive`, from its layer chain); either is verified once with a
    permuted forward pass of member 0 (cached per learner, input shape and
    hyperparameter names).

    Args:
      population: a :class:`~genetic_dl.Population`.
      derivation: how a model without an explicit spec gets one.

    Returns:
      The verified spec.

    Raises:
      ValueError: no valid spec (see :func:`derive` and :func:`verify`).
    """
    return _cached(population.learner, tuple(population.feature_shape),
                   tuple(sorted(population.hparams)), derivation, _Sample(population.hparams))
