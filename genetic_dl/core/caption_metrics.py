"""Loss and metrics of caption slots: labels ``(n, slots)``, each slot of its own vocabulary.

A model's outputs are slot-major logits ``(n, slots * C)``, ``C`` the largest
vocabulary (:attr:`~genetic_dl.data.Dataset.out_dim`). Slot ``s`` reads its
first ``slot_classes[s]`` logits; the classes beyond are masked out, so they
never change the loss, a prediction or a probability. Per slot, the metrics are
:mod:`genetic_dl.core.metrics`' (scikit-learn's definitions); the caption's
are averaged over the slots, and a caption is right when every slot is.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import optax

from .metrics import precision_recall_f1, roc_auc

# Whole-caption metrics; per slot i also accuracy_i and f1_i (see caption_metric_names).
CAPTION_METRICS = ("loss", "exact_match", "slot_accuracy", "precision", "recall", "f1", "auc")


def caption_metric_names(slots: int) -> Tuple[str, ...]:
    """The names :func:`caption_metrics` returns for ``slots`` slots, in report order."""
    return CAPTION_METRICS + tuple(f"accuracy_{i}" for i in range(slots)) + tuple(
        f"f1_{i}" for i in range(slots))


def slot_logits(outputs: jax.Array, slot_classes: Tuple[int, ...]) -> jax.Array:
    """``(n, slots, C)`` logits, ``-inf`` for each slot's classes beyond its vocabulary.

    Args:
      outputs: slot-major logits ``(n, slots * C)``.
      slot_classes: each slot's number of classes (``C`` is the largest).

    Returns:
      The masked logits per slot.
    """
    slots, width = len(slot_classes), max(slot_classes)
    logits = outputs.reshape(outputs.shape[0], slots, width)
    inside = jnp.arange(width)[None, :] < jnp.asarray(slot_classes)[:, None]
    return jnp.where(inside, logits, -jnp.inf)


def slot_predictions(outputs: jax.Array, slot_classes: Tuple[int, ...]) -> jax.Array:
    """Each slot's arg-max class within its vocabulary: int ``(n, slots)``."""
    return jnp.argmax(slot_logits(outputs, slot_classes), -1)


def slot_accuracy(outputs: jax.Array, y: jax.Array, slot_classes: Tuple[int, ...]) -> jax.Array:
    """Fraction of slots, over all examples, whose arg-max class is the label."""
    return jnp.mean(slot_predictions(outputs, slot_classes) == y)


def caption_loss(outputs: jax.Array, y: jax.Array, slot_classes: Tuple[int, ...]) -> jax.Array:
    """Mean over slots of each slot's mean cross-entropy within its vocabulary."""
    logits = slot_logits(outputs.astype(jnp.float32), slot_classes)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@dataclasses.dataclass(frozen=True)
class CaptionLoss:
    """:func:`caption_loss` as a learner's ``loss(outputs, batch)``; equal vocabularies make
    equal losses, so equal learners share compiled programs."""
    slot_classes: Tuple[int, ...]

    def __call__(self, outputs: jax.Array, batch: Mapping[str, Any]) -> jax.Array:
        return caption_loss(outputs, batch["y"], self.slot_classes)


def caption_metrics(outputs: jax.Array, y: jax.Array,
                    slot_classes: Tuple[int, ...]) -> Dict[str, jax.Array]:
    """All metrics of one member's caption outputs on one split.

    Args:
      outputs: slot-major logits ``(n, slots * C)``.
      y: int labels ``(n, slots)``.
      slot_classes: each slot's number of classes.

    Returns:
      ``{loss, exact_match, slot_accuracy, precision, recall, f1, auc,
      accuracy_i, f1_i}``: exact match is the fraction of examples with every
      slot right; precision, recall, F1 (macro) and AUC (one-vs-rest over the
      slot's softmax) are each slot's, averaged over slots. NaN when the
      outputs are not finite.
    """
    outputs = outputs.astype(jnp.float32)
    logits = slot_logits(outputs, slot_classes)
    pred = jnp.argmax(logits, -1)
    right = pred == y
    out = {"loss": caption_loss(outputs, y, slot_classes),
           "exact_match": jnp.mean(jnp.all(right, 1)), "slot_accuracy": jnp.mean(right)}
    per_slot = [precision_recall_f1(pred[:, s], y[:, s], v) + (roc_auc(logits[:, s, :v], y[:, s]),)
                for s, v in enumerate(slot_classes)]
    for k, name in enumerate(("precision", "recall", "f1", "auc")):
        out[name] = jnp.mean(jnp.stack([m[k] for m in per_slot]))
    for s, metrics in enumerate(per_slot):
        out[f"accuracy_{s}"] = jnp.mean(right[:, s])
        out[f"f1_{s}"] = metrics[2]
    finite = jnp.all(jnp.isfinite(outputs))
    return {k: jnp.where(finite, v, jnp.nan) for k, v in out.items()}
