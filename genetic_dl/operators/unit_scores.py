"""How useful each hidden unit of a padded member is: what narrowing keeps.

Both scores estimate how much a unit adds to the layers that read it, the size
of its output times the L2 norm of its outgoing rows. :func:`weight_scores`
takes the size from the incoming weights (magnitude pruning's criterion, Han et
al., 2015, "Learning both Weights and Connections"); :func:`activation_scores`
measures it on a batch (the root mean square of the unit's output), which also
sees dead units and the scale of the inputs. Neither wins everywhere: in one run
on digits, keeping the top three quarters of a CNN's last conv layer kept 0.81
accuracy by activations and 0.51 by weights, while halving the last hidden layer
of an MLP with residual blocks lost 0.29 by activations and 0.12 by weights.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..core.models import ACTIVATIONS
from ..core.padding import UnitGroup, unit_groups, widths_of
from ..core.pytree import Params
from .unit_maps import Flat, flatten


def _outgoing(flat: Flat, group: UnitGroup, full: int) -> jax.Array:
    """``(W,)`` L2 norm of each unit's rows in every reader."""
    total = jnp.zeros(full)
    for path, leaf in flat.items():
        if path[-2] in group.readers and path[-1] == "kernel":
            rows = leaf.reshape(leaf.shape[:-2] + (leaf.shape[-2] // full, full, leaf.shape[-1]))
            total += jnp.sum(jnp.square(jnp.moveaxis(rows, -2, 0)).reshape(full, -1), axis=1)
    return jnp.sqrt(total)


def weight_scores(flat: Flat, group: UnitGroup, full: int) -> jax.Array:
    """``(W,)``: the L2 norm of each unit's incoming weights and bias times that of its
    outgoing rows.

    Args:
      flat: one member's params, flattened (:func:`~genetic_dl.operators.unit_maps.flatten`).
      group: the unit group.
      full: its padded width W.
    """
    incoming = jnp.zeros(full)
    for path, leaf in flat.items():
        if path[-2] in group.producers:
            incoming += jnp.sum(jnp.square(leaf).reshape(-1, full), axis=0)
    return jnp.sqrt(incoming) * _outgoing(flat, group, full)


def activation_scores(model: nn.Module, params: Params, x: jax.Array, widths: jax.Array,
                      depth: Optional[jax.Array] = None) -> Dict[int, jax.Array]:
    """Every unit group's ``(W,)`` scores on a batch: the root mean square of each unit's
    output (over examples and positions) times the L2 norm of its outgoing rows.

    A hidden layer that residual blocks add to is scored after the active blocks;
    dead units (never active on ``x``) score 0.

    Args:
      model: the padded zoo module (an MLP or CNN, e.g. ``population.model``).
      params: one member's params.
      x: a batch of inputs.
      widths: the member's ``(layers,)`` true widths.
      depth: its active blocks (``None``: all).

    Returns:
      ``{group index: scores}`` in the order of
      :func:`~genetic_dl.core.padding.unit_groups`, for ``narrow(scores=...)``.
    """
    spec: Any = model.spec
    kwargs: Dict[str, Any] = {} if depth is None else {"depth": depth}
    _, state = model.apply(params, x, widths=widths, capture_intermediates=True,
                           mutable=["intermediates"], **kwargs)
    outputs = state["intermediates"]
    flat = flatten(params)
    act = ACTIVATIONS[spec.activation]
    scores = {}
    for i, group in enumerate(unit_groups(spec)):
        full = widths_of(spec)[group.layer]
        value = act(outputs[group.producers[0]]["__call__"][0])
        for b, name in enumerate(group.producers[1:]):  # block b's output adds to the layer
            gate = 1.0 if depth is None else (jnp.asarray(depth) > b).astype(value.dtype)
            value = value + gate * outputs[name]["__call__"][0]
        live = jnp.arange(full) < widths[group.layer]
        rms = jnp.sqrt(jnp.mean(jnp.square(value.reshape(-1, full)), axis=0))
        scores[i] = jnp.where(live, rms, 0.0) * _outgoing(flat, group, full)
    return scores
