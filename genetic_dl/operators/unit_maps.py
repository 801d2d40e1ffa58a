"""Per-unit maps of one member's padded params and of the optimizer state that mirrors them.

A structure morphism that copies, reorders or rescales hidden units
(:mod:`genetic_dl.operators.morphisms`) is, per unit group
(:func:`genetic_dl.core.padding.unit_groups`), a source index and two scales per
unit position: the producers' last axis and the readers' kernel rows take
``leaf[..., index] * scale``. The optimizer's moments take the map of the
*gradients*, which need not be the map of the params: :func:`map_state` hands each
params-shaped subtree of an optax state to the morphism with the power of the
gradient it accumulates (1: momentum, Adam's ``mu``; 2: ``nu``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
from flax import traverse_util

from ..core.padding import UnitGroup
from ..core.pytree import Params, PyTree

# One member's params (or a moment tree mirroring them) by path, ("params", module, leaf).
Flat = Dict[Tuple[str, ...], jax.Array]
# Optax state fields that accumulate squared gradients.
SECOND_MOMENTS = ("nu",)


def flatten(tree: Params) -> Flat:
    """``tree`` as ``{path: leaf}``."""
    return dict(traverse_util.flatten_dict(tree))


def unflatten(flat: Flat) -> Params:
    """Inverse of :func:`flatten`."""
    return traverse_util.unflatten_dict(flat)


def _take_rows(leaf: jax.Array, index: jax.Array, scale: jax.Array) -> jax.Array:
    """Reader kernel rows of units ``index`` times ``scale``; rows are position * W + unit."""
    full = index.shape[0]
    rows = leaf.shape[-2]
    view = leaf.reshape(leaf.shape[:-2] + (rows // full, full, leaf.shape[-1]))
    view = jnp.take(view, index, axis=-2) * scale[:, None].astype(leaf.dtype)
    return view.reshape(leaf.shape)


def map_units(flat: Flat, group: UnitGroup, index: jax.Array, producer_scale: jax.Array,
              reader_scale: jax.Array) -> Flat:
    """Unit position j of ``group`` takes unit ``index[j]``, scaled.

    Args:
      flat: one member's params (or a tree mirroring them), flattened.
      group: the unit group.
      index: ``(W,)`` int, the source unit of every padded position.
      producer_scale: ``(W,)``, multiplies the producers' kernel columns and bias.
      reader_scale: ``(W,)``, multiplies the readers' kernel rows.

    Returns:
      The mapped tree, flattened.
    """
    out = dict(flat)
    for path, leaf in flat.items():
        if path[-2] in group.producers:
            out[path] = jnp.take(leaf, index, axis=-1) * producer_scale.astype(leaf.dtype)
        elif path[-2] in group.readers and path[-1] == "kernel":
            out[path] = _take_rows(leaf, index, reader_scale)
    return out


def _mirrors(node: Any, params: Params) -> bool:
    """Whether ``node`` has the tree structure and leaf shapes of ``params``."""
    structure: Any = jax.tree_util.tree_structure(node)
    if structure != jax.tree_util.tree_structure(params):
        return False
    return all(jnp.shape(a) == jnp.shape(b) for a, b in
               zip(jax.tree_util.tree_leaves(node), jax.tree_util.tree_leaves(params)))


def map_state(state: PyTree, params: Params, fn: Callable[[Flat, int], Flat]) -> PyTree:
    """Every params-shaped subtree of an optimizer state through ``fn(flat, power)``.

    ``power`` is 2 for fields named in :data:`SECOND_MOMENTS` (optax's ``nu``),
    1 for any other (``mu``, momentum ``trace``); counts and empty states are
    left as they are.

    Args:
      state: one member's optimizer state (an optax state: nested tuples and
        named tuples).
      params: the member's params before the morphism (shapes only).
      fn: the morphism of a moment tree of the given gradient power.

    Returns:
      The mapped state, same structure.
    """
    def walk(node: Any, power: int) -> Any:
        if _mirrors(node, params):
            return unflatten(fn(flatten(node), power))
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(walk(v, 2 if f in SECOND_MOMENTS else power)
                                for f, v in zip(node._fields, node)))
        if isinstance(node, (tuple, list)):
            return type(node)(walk(v, power) for v in node)
        if isinstance(node, dict):
            return {k: walk(v, power) for k, v in node.items()}
        return node
    return walk(state, 1)
