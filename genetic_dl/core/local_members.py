"""One device's members through a training program: the fixed rule both paths share.

The array path (a whole epoch per program) and the stream path (a staged chunk of
steps per program) run a device's members the same way: on CPU, a model with
convolutions trains one member at a time with its convolutions in XLA:CPU's
canonical layout (:mod:`~genetic_dl.core.conv_layout`); anything else trains in
chunks of members that fit the cache (:func:`~genetic_dl.core.sharding.member_chunk`),
all at once on accelerators.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Tuple

import jax

from . import conv_layout
from . import memory
from . import sharding


def state_bytes(tree: Any) -> int:
    """Bytes of one member of ``tree`` (leaves with a leading member axis)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(math.prod(x.shape[1:]) * x.dtype.itemsize for x in leaves if x.ndim)


def run_members(member: Callable[[Tuple], Tuple], args: Tuple, step: Any,
                per_member: int) -> Tuple:
    """``member`` over the leading (member) axis of ``args``, by the fixed rule.

    Members one at a time run ``member`` itself in a loop, not a vmap over chunks
    of one: XLA:CPU kept the unit member axis in the vmapped program, and copying
    a frames model's image patches into 5-D arrays took 12x as long.

    Args:
      member: one member's training program, on one member's ``args``.
      args: its arguments, each with a leading member axis.
      step: the closed jaxpr of one member's training step (picks the lowering
        and sizes the chunks).
      per_member: bytes of one member's weights and optimizer state.

    Returns:
      ``jax.vmap(member)(args)``, the same pytree.
    """
    lowering, lowered = conv_layout.lowered(step, jax.default_backend())
    if lowering == conv_layout.CPU_CONV_LOWERING:
        return conv_layout.canonical_convolutions(lambda a: jax.lax.map(member, a))(args)
    members = jax.vmap(member)
    local = jax.tree_util.tree_leaves(args)[0].shape[0]
    chunk = sharding.member_chunk(local, per_member, memory.jaxpr_bytes(lowered))
    if chunk >= local:
        return members(args)
    return sharding.map_chunks(members, args, chunk)
