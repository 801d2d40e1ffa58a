"""Losses and metrics of one member, written in JAX so they vmap over a population.

Definitions follow scikit-learn (tests compare against it): macro precision,
recall and F1 average over the classes present in ``y_true`` or ``y_pred``
with 0 for an undefined ratio; ROC AUC is the Mann-Whitney statistic with
average ranks for ties, one-vs-rest macro for more than two classes.
"""
from __future__ import annotations

from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import optax

CLASSIFICATION_METRICS = ("loss", "accuracy", "precision", "recall", "f1", "auc")
REGRESSION_METRICS = ("loss", "mse", "mae", "r2")


def loss_fn(outputs: jax.Array, y: jax.Array, classification: bool) -> jax.Array:
    """Mean cross-entropy (integer labels) or mean squared error.

    Args:
      outputs: logits ``(n, C)`` or predictions ``(n, T)``.
      y: int labels ``(n,)`` or float targets ``(n, T)``.
      classification: which loss.

    Returns:
      A scalar.
    """
    if classification:
        return optax.softmax_cross_entropy_with_integer_labels(outputs, y).mean()
    return jnp.mean((outputs - y) ** 2)


def accuracy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of examples whose arg-max class is the label."""
    return jnp.mean(jnp.argmax(logits, -1) == y)


def _safe_div(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.where(b > 0, a / jnp.where(b > 0, b, 1), 0.0)


def precision_recall_f1(y_pred: jax.Array, y: jax.Array,
                        num_classes: int) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Macro precision, recall and F1 as scikit-learn computes them."""
    classes = jnp.arange(num_classes)
    pred_1h = y_pred[:, None] == classes
    true_1h = y[:, None] == classes
    tp = jnp.sum(pred_1h & true_1h, 0).astype(jnp.float32)
    n_pred = jnp.sum(pred_1h, 0).astype(jnp.float32)
    n_true = jnp.sum(true_1h, 0).astype(jnp.float32)
    precision = _safe_div(tp, n_pred)
    recall = _safe_div(tp, n_true)
    f1 = _safe_div(2 * tp, n_pred + n_true)
    present = (n_pred + n_true) > 0
    count = jnp.sum(present)

    def macro(v: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(present, v, 0.0)) / count
    return macro(precision), macro(recall), macro(f1)


def binary_auc(scores: jax.Array, positive: jax.Array) -> jax.Array:
    """ROC AUC of ``scores`` for boolean labels ``positive`` (NaN if one class)."""
    s = jnp.sort(scores)
    # 1-based average rank of each score, ties sharing the mean of their ranks.
    ranks = (jnp.searchsorted(s, scores, side="left")
             + jnp.searchsorted(s, scores, side="right") + 1) / 2.0
    n_pos = jnp.sum(positive).astype(jnp.float32)
    n_neg = positive.shape[0] - n_pos
    u = jnp.sum(jnp.where(positive, ranks, 0.0)) - n_pos * (n_pos + 1) / 2
    return jnp.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), jnp.nan)


def roc_auc(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Binary AUC, or one-vs-rest macro AUC over the softmax probabilities."""
    num_classes = logits.shape[-1]
    if num_classes == 2:
        return binary_auc(logits[:, 1] - logits[:, 0], y == 1)
    probs = jax.nn.softmax(logits, -1)
    per_class = jax.vmap(lambda c: binary_auc(probs[:, c], y == c))(jnp.arange(num_classes))
    return jnp.mean(per_class)


def r2_score(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Coefficient of determination, uniform average over targets (sklearn's default)."""
    ss_res = jnp.sum((y - pred) ** 2, 0)
    ss_tot = jnp.sum((y - jnp.mean(y, 0)) ** 2, 0)
    # sklearn: a constant target scores 1 if predicted exactly, else 0.
    r2 = jnp.where(ss_tot > 0, 1 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1),
                   jnp.where(ss_res == 0, 1.0, 0.0))
    return jnp.mean(r2)


def compute_metrics(outputs: jax.Array, y: jax.Array, classification: bool) -> Dict[str, jax.Array]:
    """All metrics of one member's outputs on one split.

    Args:
      outputs: logits ``(n, C)`` or predictions ``(n, T)``.
      y: labels ``(n,)`` or targets ``(n, T)``.
      classification: the task.

    Returns:
      ``{loss, accuracy, precision, recall, f1, auc}`` or ``{loss, mse, mae, r2}``;
      values are NaN when the outputs are not finite.
    """
    outputs = outputs.astype(jnp.float32)
    if classification:
        p, r, f1 = precision_recall_f1(jnp.argmax(outputs, -1), y, outputs.shape[-1])
        out = {"loss": loss_fn(outputs, y, True), "accuracy": accuracy(outputs, y),
               "precision": p, "recall": r, "f1": f1, "auc": roc_auc(outputs, y)}
    else:
        mse = jnp.mean((outputs - y) ** 2)
        out = {"loss": mse, "mse": mse, "mae": jnp.mean(jnp.abs(outputs - y)),
               "r2": r2_score(outputs, y)}
    finite = jnp.all(jnp.isfinite(outputs))
    return {k: jnp.where(finite, v, jnp.nan) for k, v in out.items()}
