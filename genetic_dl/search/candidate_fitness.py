"""Fitness of trained search candidates: a validation metric, optionally composite.

The composite fitness ``alpha A - beta T + gamma R`` weighs the validation
metric A against the training cost T in GFLOP (6 x params x examples x epochs,
Kaplan et al., 2020: deterministic, unlike wall time) and the accuracy R under
gaussian input noise.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, List, Mapping, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from ..data import Dataset
from ..core.caption_metrics import caption_metric_names, slot_accuracy
from ..core.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, compute_metrics
from ..core.models import MLPSpec, ModelSpec, build_model, count_params
from ..core.population import Population
from ..core.stream import Stream
from ..core.train import evaluate, predict
from ..errors import check_choice


def zoo_metrics(data: Dataset) -> Tuple[str, ...]:
    """The metrics a zoo config can be scored on for ``data``'s task (caption slots: the
    caption family's)."""
    if data.slots:
        return caption_metric_names(data.slots)
    return CLASSIFICATION_METRICS if data.is_classification else REGRESSION_METRICS


def zoo_data(data: Union[Dataset, Stream]) -> Dataset:
    """``data`` as the in-memory :class:`Dataset` the zoo's configs train on.

    Raises:
      ValueError: ``data`` is a Stream, which trains only a ``build``'s own learner.
    """
    if isinstance(data, Stream):
        raise ValueError("a Stream trains your own learner: pass build=config -> (learner, "
                         "optimizer); the zoo's configs need an in-memory Dataset")
    return data


def validation_fitness(population: Population, data: Union[Dataset, Stream], metric: str,
                       history: Mapping[str, Any]) -> np.ndarray:
    """Each member's validation ``metric`` in its maximised direction (NaN: failed).

    ``history`` is the training call's: its last validation loss and score are
    read from there, which saves compiling an evaluation program per shape.
    """
    score = population.learner.score
    if population.spec is not None and score is None:  # the caption family names its own
        score = "accuracy" if zoo_data(data).is_classification else "r2"
    from_hist = {"loss": "val_loss", score: "val_score"}
    if metric in from_hist:
        value = np.asarray(history[from_hist[metric]][:, -1], np.float64)
    else:
        metrics = evaluate(population, data, "val")
        check_choice("metric", metric, metrics, "(the metrics the learner reports)")
        value = np.asarray(metrics[metric], np.float64)
    value = value if population.learner.maximize(metric) else -value
    return np.where(np.asarray(population.failed) | ~np.isfinite(value), np.nan, value)


def composite_fitness(value: np.ndarray, population: Population, data: Dataset, epochs: int,
                      weights: Tuple[float, float, float], noise_sigma: float,
                      seed: int) -> np.ndarray:
    """``alpha value - beta GFLOP + gamma noisy-accuracy`` per member.

    Args:
      value: each member's validation fitness.
      population: the trained zoo population.
      data: the dataset (its validation split gets the noise).
      epochs: epochs trained so far (the cost term's).
      weights: ``(alpha, beta, gamma)``.
      noise_sigma: std of the robustness term's input noise.
      seed: seed of that noise.

    Returns:
      ``(P,)`` fitness.
    """
    alpha, beta, gamma = weights
    params = np.array([param_count(s, data) for s in member_specs(population)], np.float64)
    gflop = 6.0 * params * len(data.y_train) * epochs / 1e9
    robust = noisy_accuracy(population, data, noise_sigma, seed) if gamma else 0.0
    return alpha * value - beta * gflop + gamma * robust


def noisy_accuracy(population: Population, data: Dataset, sigma: float,
                   seed: int) -> np.ndarray:
    """Validation accuracy (caption slots: mean slot accuracy) under gaussian input noise of
    std ``sigma`` (zeros for regression)."""
    if not data.is_classification:
        return np.zeros(population.size)
    x = data.model_inputs(data.x_val)
    noise = np.random.default_rng(seed).normal(0.0, sigma, x.shape)
    out = predict(population, jnp.asarray(x + noise, jnp.float32))
    y_val = jnp.asarray(data.y_val)
    if data.slots:
        return np.asarray(jax.vmap(lambda o: slot_accuracy(o, y_val, data.slot_classes))(out))
    return np.asarray(jax.vmap(lambda o: compute_metrics(o, y_val, True)["accuracy"])(out))


def member_specs(population: Population) -> List[ModelSpec]:
    """Each zoo member's spec at its own (unpadded) widths.

    Raises:
      ValueError: the population trains a ``build``'s own learner (no zoo spec).
    """
    spec = population.spec
    if spec is None:
        raise ValueError("member_specs reads zoo specs: this population trains its own learner")
    if "widths" not in population.hparams:
        return [spec] * population.size
    attr = "hidden" if isinstance(spec, MLPSpec) else "filters"
    changes: List[Dict[str, Any]] = [{attr: tuple(int(v) for v in w)}
                                     for w in np.asarray(population.hparams["widths"])]
    return [dataclasses.replace(spec, **c) for c in changes]


def param_count(spec: ModelSpec, data: Dataset) -> int:
    """Parameter count of the zoo ``spec`` on ``data``."""
    return _count_params(spec, tuple(data.feature_shape), int(data.out_dim))


@functools.lru_cache(maxsize=1024)
def _count_params(spec: ModelSpec, feature_shape: Tuple[int, ...], out_dim: int) -> int:
    """Parameter count of ``spec`` on inputs of ``feature_shape`` (cached: one trace
    per shape)."""
    model = build_model(spec, feature_shape, out_dim)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + feature_shape))
    return count_params(shapes)
