"""One compiled shape for a family of widths: pad hidden layers, mask units per member.

A search proposes MLPs and CNNs of many widths; each distinct shape would
compile its own training program (seconds each, more than training a small
network). Instead, members of one layer count train in a spec whose hidden
layers (MLP widths, CNN filters) are all padded to one width W; each member's
true widths are a traced ``(layers,)`` array and the model zeroes the units
beyond them (:func:`genetic_dl.core.models.MLP`), so a member computes exactly the
function of its unpadded network. :func:`rescale_init` gives the padded
members the initial weight scale of their true fan-in, and :func:`shrink`
cuts a trained member back to its true spec (:func:`embed` is the inverse).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from numpy.typing import ArrayLike

from .models import CNNSpec, MLPSpec, ModelSpec
from .pytree import Params


def widths_of(spec: ModelSpec) -> Tuple[int, ...]:
    """The padded layers' widths: MLP hidden widths or CNN filters (``()`` for RNNs)."""
    if isinstance(spec, MLPSpec):
        return spec.hidden
    if isinstance(spec, CNNSpec):
        return spec.filters
    return ()


def _with_widths(spec: ModelSpec, widths: Tuple[int, ...]) -> ModelSpec:
    """``spec`` with its padded layers ``widths`` wide (RNN specs unchanged)."""
    if isinstance(spec, MLPSpec):
        return dataclasses.replace(spec, hidden=widths)
    if isinstance(spec, CNNSpec):
        return dataclasses.replace(spec, filters=widths)
    return spec


def pad_spec(spec: ModelSpec, width: int) -> ModelSpec:
    """``spec`` with every padded layer ``width`` wide (RNN specs unchanged)."""
    return _with_widths(spec, (width,) * len(widths_of(spec)))


def padded_width(specs: Sequence[ModelSpec]) -> int:
    """The power of two that holds every layer of ``specs`` (so paddings repeat)."""
    widest = max((w for s in specs for w in widths_of(s)), default=1)
    return 1 << max(0, math.ceil(math.log2(widest)))


@dataclasses.dataclass(frozen=True)
class UnitGroup:
    """Hidden units that are one set: produced together, read together, masked together.

    Attributes:
      layer: the index of the width (in ``widths``) that masks these units.
      producers: modules whose kernel's last axis and bias hold the units.
      readers: modules whose kernel rows (axis -2) read them; a flattened conv
        output interleaves channels, so row = position * W + unit.
    """
    layer: int
    producers: Tuple[str, ...]
    readers: Tuple[str, ...]


def unit_groups(spec: ModelSpec) -> Tuple[UnitGroup, ...]:
    """The unit groups of a padded spec: one per hidden layer, then one per residual block's
    inner layer; a block's output adds to the last hidden layer, so it joins that group."""
    n = len(widths_of(spec))
    blocks = getattr(spec, "blocks", 0)
    ins = tuple(f"Block_{b}_in" for b in range(blocks))
    outs = tuple(f"Block_{b}_out" for b in range(blocks))
    if isinstance(spec, MLPSpec):
        producers = [f"Dense_{i}" for i in range(n)]
        readers = [f"Dense_{i + 1}" for i in range(n)]
    else:
        producers = [f"Conv_{i}" for i in range(n)]
        readers = [f"Conv_{i + 1}" for i in range(n - 1)] + ["Dense_0"]
    groups = [UnitGroup(i, (producers[i],) + (outs if i == n - 1 else ()),
                        (readers[i],) + (ins if i == n - 1 else ())) for i in range(n)]
    return tuple(groups) + tuple(UnitGroup(n - 1, (i,), (o,)) for i, o in zip(ins, outs))


def _plan(spec: ModelSpec, widths: Sequence[int], flat: Dict[Tuple, Any]) -> Dict[Tuple, tuple]:
    """Per leaf of one member's padded params: the index arrays of its true entries."""
    padded = widths_of(spec)
    plan = {path: tuple(np.arange(d) for d in leaf.shape) for path, leaf in flat.items()}
    for group in unit_groups(spec):
        width, full = int(widths[group.layer]), padded[group.layer]
        for path, leaf in flat.items():
            module = path[-2]
            if module in group.producers:  # its own units: the last axis
                plan[path] = plan[path][:-1] + (np.arange(width),)
            elif module in group.readers and path[-1] == "kernel":  # inputs: rows of the reader
                rows = leaf.shape[-2]
                # a flattened conv output interleaves channels: row = position * W + channel
                rows_kept = (np.arange(rows // full)[:, None] * full
                             + np.arange(width)[None, :]).ravel()
                plan[path] = plan[path][:-2] + (rows_kept,) + plan[path][-1:]
    return plan


def shrink(spec: ModelSpec, params: Params, widths: ArrayLike) -> Tuple[ModelSpec, Params]:
    """One member's padded params cut to its true widths.

    Args:
      spec: the padded spec.
      params: one member's params (no leading axis).
      widths: the member's true widths, one per padded layer (a sequence or an array).

    Returns:
      ``(true_spec, true_params)``: a network computing the same function.
    """
    true = [int(w) for w in np.asarray(widths)]
    flat = traverse_util.flatten_dict(params)
    plan = _plan(spec, true, flat)
    out = {p: jnp.asarray(leaf)[np.ix_(*plan[p])] for p, leaf in flat.items()}
    true_spec = _with_widths(spec, tuple(true))
    return true_spec, traverse_util.unflatten_dict(out)


def embed(spec: ModelSpec, true_params: Params, template: Params) -> Params:
    """Inverse of :func:`shrink`: true params placed in a padded member (zeros elsewhere).

    Args:
      spec: the true (unpadded) spec.
      true_params: its params.
      template: one padded member's params (only shapes are used).
    """
    widths = widths_of(spec)
    flat_t = traverse_util.flatten_dict(template)
    plan = _plan(_pad_like(spec, flat_t), widths, flat_t)
    flat = traverse_util.flatten_dict(true_params)
    out = {p: jnp.zeros_like(leaf).at[np.ix_(*plan[p])].set(flat[p])
           for p, leaf in flat_t.items()}
    return traverse_util.unflatten_dict(out)


def _pad_like(spec: ModelSpec, flat_template: Dict[Tuple, Any]) -> ModelSpec:
    groups = unit_groups(spec)
    full = {p[-2]: leaf.shape[-1] for p, leaf in flat_template.items() if p[-1] == "bias"}
    return pad_spec(spec, full[groups[0].producers[0]]) if groups else spec


def rescale_init(spec: ModelSpec, params: Params, widths: ArrayLike) -> Params:
    """Scales each reader layer's kernel by ``sqrt(W / w)`` (stacked members).

    A padded layer's fan-in is W units while only w are live; LeCun-normal
    init would then start the member ``sqrt(w / W)`` too small.

    Args:
      spec: the padded spec.
      params: stacked params, leading axis P.
      widths: ``(P, layers)`` true widths.
    """
    padded = np.asarray(widths_of(spec), np.float32)
    scale = jnp.sqrt(padded[None, :] / jnp.asarray(widths, jnp.float32))  # (P, layers)
    flat = dict(traverse_util.flatten_dict(params))
    for group in unit_groups(spec):
        for path, leaf in flat.items():
            if path[-2] in group.readers and path[-1] == "kernel":
                flat[path] = leaf * scale[:, group.layer].reshape((-1,) + (1,) * (leaf.ndim - 1))
    return traverse_util.unflatten_dict(flat)


def member_widths(specs: Sequence[ModelSpec]) -> jax.Array:
    """``(P, layers)`` float32 true widths of ``specs`` (one layer count)."""
    return jnp.asarray([widths_of(s) for s in specs], jnp.float32)
