"""Structure changes that keep the weights but not exactly the function, and their measure.

Changing a member's activation function (a static field of the spec: the child
compiles its own program) keeps every param, so the child starts near its
parent rather than from scratch; how near is :func:`output_change` of the two on
a batch. Changing dropout never changes evaluation outputs: the rate is a
traced per-member hyperparameter wherever the spec has dropout layers.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple, cast

import jax
import jax.numpy as jnp

from ..core.models import ACTIVATIONS, ModelSpec
from ..errors import check, check_choice


def change_activation(spec: ModelSpec, activation: str) -> ModelSpec:
    """``spec`` with another activation function; its params tree is unchanged.

    Args:
      spec: an MLP, CNN or frames spec.
      activation: a key of :data:`~genetic_dl.core.models.ACTIVATIONS`.

    Returns:
      The child's spec (a new static configuration: it compiles once).
    """
    check(hasattr(spec, "activation"), f"a {spec.family} spec has no activation to change")
    check_choice("activation", activation, ACTIVATIONS)
    return cast(ModelSpec, dataclasses.replace(cast(Any, spec), activation=activation))


def change_dropout(spec: ModelSpec, rate: float) -> Tuple[ModelSpec, float]:
    """The spec and per-member ``dropout`` hyperparameter of a member with dropout ``rate``.

    A spec with dropout layers takes any rate as the traced hyperparameter (no
    new program); one without gets them (``dropout=rate``: it compiles once).
    Neither changes params or evaluation outputs.

    Args:
      spec: a zoo spec.
      rate: the new rate, in ``[0, 1)``.

    Returns:
      ``(spec, rate)``: the child's spec and its ``dropout`` hyperparameter.
    """
    check(0.0 <= rate < 1.0, f"dropout must be in [0, 1), got {rate}")
    if spec.dropout > 0 or rate == 0:
        return spec, float(rate)
    return dataclasses.replace(spec, dropout=float(rate)), float(rate)


def output_change(before: jax.Array, after: jax.Array,
                  labels: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """How much a morphism changed a member's outputs on one batch.

    Args:
      before: ``(B, out)`` outputs (logits) of the parent.
      after: ``(B, out)`` outputs of the child on the same inputs.
      labels: ``(B,)`` int class labels, for the change of accuracy.

    Returns:
      ``max_abs`` (largest absolute change), ``relative`` (that over the
      parent's largest absolute output), ``agreement`` (fraction of equal argmax
      predictions) and, with labels, ``accuracy_change`` (child minus parent).
    """
    diff = jnp.max(jnp.abs(after - before))
    out = {"max_abs": diff,
           "relative": diff / jnp.maximum(jnp.max(jnp.abs(before)), 1e-12),
           "agreement": jnp.mean(jnp.argmax(before, -1) == jnp.argmax(after, -1))}
    if labels is not None:
        out["accuracy_change"] = (jnp.mean(jnp.argmax(after, -1) == labels)
                                  - jnp.mean(jnp.argmax(before, -1) == labels))
    return out
