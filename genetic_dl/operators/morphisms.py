"""Function-preserving structure mutations of padded members (network morphisms).

A member of a padded population (:mod:`genetic_dl.core.padding`) holds its true
widths and depth as traced values, so changing them keeps every shape and every
compiled program. Each morphism maps one member's params, optimizer state and
widths or depth so that the child starts from its parent's function (Lamarckian
inheritance through morphisms, as LEMONADE, Elsken et al., 2019):

- :func:`widen`: Net2WiderNet (Chen et al., 2016) inside the padding. New units
  copy random live units' incoming weights; the outgoing rows of a unit and of
  its copies are divided by their count. Exact for any activation (noise 0).
- :func:`deepen`: activates the next residual block with its output layer
  zeroed, exact for any activation (Net2DeeperNet's identity layer is exact
  for ReLU only).
- :func:`narrow`: keeps the most useful units (by weights, or measured on a
  batch: :mod:`genetic_dl.operators.unit_scores`) and masks the rest:
  approximate, the dropped units' contribution is lost
  (:func:`~genetic_dl.operators.spec_morphisms.output_change` measures it).

The optimizer's moments take the map of the gradients (see :func:`widen`).
:func:`genetic_dl.operators.population_morphs.morph` applies one morphism per
member of a stacked population.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..core.models import ModelSpec
from ..core.padding import UnitGroup, unit_groups, widths_of
from ..core.pytree import Params, PyTree
from ..errors import check
from .unit_maps import Flat, flatten, map_state, map_units, unflatten
from .unit_scores import weight_scores

Layer = Union[int, jax.Array]


class Child(NamedTuple):
    """A morphed member: params, optimizer state (``None`` if none was given), the
    ``(layers,)`` true widths and the number of active residual blocks."""
    params: Params
    opt_state: PyTree
    widths: jax.Array
    depth: Optional[jax.Array]


def _groups(spec: ModelSpec, layer: int) -> List[Tuple[int, UnitGroup]]:
    return [(i, g) for i, g in enumerate(unit_groups(spec)) if g.layer == layer]


def _by_layer(spec: ModelSpec, layer: Layer, fn: Callable[..., Child], *args: Any) -> Child:
    """``fn(layer, *args)``: directly for a Python int, by ``lax.switch`` for a traced one."""
    if isinstance(layer, int):
        return fn(layer, *args)
    branches = [functools.partial(fn, i) for i in range(len(widths_of(spec)))]
    return jax.lax.switch(jnp.clip(layer, 0, len(branches) - 1), branches, *args)


def _with_state(opt_state: PyTree, params: Params, fn: Callable[[Flat, int], Flat]) -> PyTree:
    return None if opt_state is None else map_state(opt_state, params, fn)


def widen(key: jax.Array, spec: ModelSpec, params: Params, widths: jax.Array, layer: Layer,
          new_width: Any, opt_state: PyTree = None, depth: Any = 0.0,
          noise: float = 0.0) -> Child:
    """Net2WiderNet inside the padding (Chen et al., 2016, "Net2Net").

    Units ``w .. new_width - 1`` of ``layer`` copy uniformly drawn live units:
    incoming weights and bias (so the same activations, for any activation
    function), and the outgoing rows of a unit and of its copies are divided by
    their count c, so the next layer sees the same sums. On the last layer of a
    spec with residual blocks the blocks' output layers are producers and their
    input layers readers, and each block's inner units widen as well.

    The gradient of a copy's incoming weights is the source's divided by c, of
    its outgoing rows the source's: the moments follow that map (first moments
    ``/c``, second ``/c^2`` on producers, copied on readers), so Adam's first step
    after widening moves every copy as its source would have moved.

    Args:
      key: PRNG key (copied units, noise).
      spec: the padded spec (an MLP or CNN).
      params: one member's padded params.
      widths: its ``(layers,)`` true widths.
      layer: the hidden layer to widen (int, or a traced int).
      new_width: its new width, clipped to ``[w, padded width]``.
      opt_state: the member's optax state, or ``None``.
      depth: passed through to the child.
      noise: relative std of Gaussian noise multiplying the new units' incoming
        weights, to break their symmetry with their sources (0: exact).

    Returns:
      The :class:`Child`.
    """
    return _by_layer(spec, layer, functools.partial(_widen, spec, noise), key, params,
                     opt_state, jnp.asarray(widths), jnp.asarray(depth), new_width)


def _widen(spec: ModelSpec, noise: float, layer: int, key: jax.Array, params: Params,
           opt_state: PyTree, widths: jax.Array, depth: jax.Array, new_width: Any) -> Child:
    full = widths_of(spec)[layer]
    w = widths[layer].astype(jnp.int32)
    new = jnp.clip(jnp.asarray(new_width).astype(jnp.int32), w, full)
    idx = jnp.arange(full)
    added = (idx >= w) & (idx < new)
    maps = []
    for i, group in _groups(spec, layer):
        k_src, k_noise = jax.random.split(jax.random.fold_in(key, i))
        src = jnp.where(added, jax.random.randint(k_src, (full,), 0, w), idx)
        copies = jnp.zeros(full).at[src].add(1.0)[src]  # c of each position's source
        maps.append((group, src, copies, k_noise))
    flat = flatten(params)
    for group, src, copies, k_noise in maps:
        flat = map_units(flat, group, src, jnp.ones(full), 1.0 / copies)
        if noise:
            flat = _perturb(flat, group, added, noise, k_noise)

    def moments(tree: Flat, power: int) -> Flat:
        for group, src, copies, _ in maps:
            tree = map_units(tree, group, src, copies ** -power, jnp.ones(full))
        return tree
    return Child(unflatten(flat), _with_state(opt_state, params, moments),
                 widths.at[layer].set(new.astype(widths.dtype)), depth)


def _perturb(flat: Flat, group: UnitGroup, added: jax.Array, noise: float,
             key: jax.Array) -> Flat:
    """The added units' incoming weights times ``1 + noise * N(0, 1)``."""
    out = dict(flat)
    for j, (path, leaf) in enumerate(sorted(flat.items())):
        if path[-2] in group.producers:
            eps = jax.random.normal(jax.random.fold_in(key, j), leaf.shape, leaf.dtype)
            out[path] = leaf * (1.0 + noise * eps * added.astype(leaf.dtype))
    return out


def narrow(spec: ModelSpec, params: Params, widths: jax.Array, layer: Layer, new_width: Any,
           opt_state: PyTree = None, depth: Any = 0.0,
           scores: Optional[Mapping[int, jax.Array]] = None) -> Child:
    """Keeps ``layer``'s ``new_width`` most useful live units.

    The kept units move to the front in their order and the rest behind them,
    where the width mask zeroes them: a permutation of units, exact in itself, so
    the output changes by exactly the dropped units' contribution (none when
    their outgoing rows are zero). The optimizer state is permuted alike. On the
    last layer of a spec with residual blocks the blocks' inner units narrow too.

    Args:
      spec: the padded spec (an MLP or CNN).
      params: one member's padded params.
      widths: its ``(layers,)`` true widths.
      layer: the hidden layer to narrow (int, or a traced int).
      new_width: its new width, clipped to ``[1, w]``.
      opt_state: the member's optax state, or ``None``.
      depth: passed through to the child.
      scores: ``{group index: (W,)}`` usefulness of the units, e.g.
        :func:`~genetic_dl.operators.unit_scores.activation_scores` on a batch;
        groups without are scored by their weights
        (:func:`~genetic_dl.operators.unit_scores.weight_scores`).

    Returns:
      The :class:`Child`.
    """
    return _by_layer(spec, layer, functools.partial(_narrow, spec), params, opt_state,
                     jnp.asarray(widths), jnp.asarray(depth), new_width, dict(scores or {}))


def _narrow(spec: ModelSpec, layer: int, params: Params, opt_state: PyTree,
            widths: jax.Array, depth: jax.Array, new_width: Any,
            scores: Dict[int, jax.Array]) -> Child:
    full = widths_of(spec)[layer]
    w = widths[layer].astype(jnp.int32)
    new = jnp.clip(jnp.asarray(new_width).astype(jnp.int32), 1, w)
    live = jnp.arange(full) < w
    flat = flatten(params)
    orders = []
    for i, group in _groups(spec, layer):
        score = scores[i] if i in scores else weight_scores(flat, group, full)
        score = jnp.where(live, score, -jnp.inf)
        rank = jnp.argsort(jnp.argsort(-score, stable=True), stable=True)
        keep = live & (rank < new)
        # kept units first, in their order; then dropped live units; then the padding
        orders.append((group, jnp.argsort(jnp.where(keep, 0, jnp.where(live, 1, 2)),
                                          stable=True)))

    def permute(tree: Flat, power: int = 0) -> Flat:
        del power  # a permutation maps params and gradients alike
        ones = jnp.ones(full)
        for group, order in orders:
            tree = map_units(tree, group, order, ones, ones)
        return tree
    return Child(unflatten(permute(flat)), _with_state(opt_state, params, permute),
                 widths.at[layer].set(new.astype(widths.dtype)), depth)


def deepen(key: jax.Array, spec: ModelSpec, params: Params, widths: jax.Array, depth: Any,
           opt_state: PyTree = None) -> Child:
    """Activates residual block ``depth`` (if ``depth < spec.blocks``) as an identity.

    The block's output layer is zeroed, so ``h + 0`` preserves the function for
    any activation; its input layer is drawn afresh (LeCun normal at the live
    fan-in) so that the block learns from the first step, and the block's
    moments are reset, as a new layer's are.

    Args:
      key: PRNG key of the input layer's fresh weights.
      spec: the padded spec (an MLP or CNN with ``blocks > 0``).
      params: one member's padded params.
      widths: its ``(layers,)`` true widths.
      depth: its number of active blocks (float or int scalar, may be traced).
      opt_state: the member's optax state, or ``None``.

    Returns:
      The :class:`Child`, one block deeper (the same at full depth).
    """
    blocks = getattr(spec, "blocks", 0)
    check(blocks > 0, "deepening needs residual blocks: build the spec with blocks > 0")
    depth = jnp.asarray(depth)
    widths = jnp.asarray(widths)
    d = depth.astype(jnp.int32)
    last = len(widths_of(spec)) - 1
    gain = jnp.sqrt(widths_of(spec)[last] / widths[last].astype(jnp.float32))

    def fresh(tree: Flat, power: int = 0) -> Flat:
        out = dict(tree)
        for j, (path, leaf) in enumerate(sorted(tree.items())):
            for b in range(blocks):
                if path[-2] not in (f"Block_{b}_in", f"Block_{b}_out"):
                    continue
                new = jnp.zeros_like(leaf)
                if not power and path[-2].endswith("_in") and path[-1] == "kernel":
                    new = nn.initializers.lecun_normal()(jax.random.fold_in(key, j), leaf.shape,
                                                         leaf.dtype) * gain.astype(leaf.dtype)
                out[path] = jnp.where((d == b) & (d < blocks), new, leaf)
        return out
    return Child(unflatten(fresh(flatten(params))), _with_state(opt_state, params, fresh),
                 widths, jnp.where(d < blocks, d + 1, d).astype(depth.dtype))
