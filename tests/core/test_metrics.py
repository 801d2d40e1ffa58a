"""Metrics agree with scikit-learn, ties and absent classes included."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from genetic_dl.core import metrics


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([2, 3, 5]), st.booleans())
def test_classification_metrics_match_sklearn(seed, classes, ties):
    rng = np.random.default_rng(seed)
    n = 40
    y = rng.integers(0, classes, n)
    y[:classes] = np.arange(classes)  # every class present, as AUC needs
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    if ties:  # coarse logits create tied scores
        logits = np.round(logits)
    m = jax.jit(metrics.compute_metrics, static_argnums=2)(jnp.asarray(logits), jnp.asarray(y),
                                                           True)
    pred = logits.argmax(-1)
    assert np.isclose(m["accuracy"], skm.accuracy_score(y, pred))
    assert np.isclose(m["precision"], skm.precision_score(y, pred, average="macro",
                                                          zero_division=0), atol=1e-6)
    assert np.isclose(m["recall"], skm.recall_score(y, pred, average="macro", zero_division=0),
                      atol=1e-6)
    assert np.isclose(m["f1"], skm.f1_score(y, pred, average="macro", zero_division=0),
                      atol=1e-6)
    # the float32 probabilities we score: float64 ones would break some near-ties differently
    probs = np.asarray(jax.nn.softmax(logits, -1), np.float64)
    if classes == 2:
        auc = skm.roc_auc_score(y, logits[:, 1] - logits[:, 0])
    else:
        auc = skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert np.isclose(m["auc"], auc, atol=1e-5)
    loss = skm.log_loss(y, probs, labels=list(range(classes)))
    assert np.isclose(m["loss"], loss, rtol=1e-4)


def test_macro_average_ignores_classes_absent_from_truth_and_prediction():
    y = jnp.array([0, 0, 1, 1])
    pred = jnp.array([0, 1, 1, 1])
    p, r, f1 = metrics.precision_recall_f1(pred, y, 5)  # classes 2..4 never appear
    assert np.isclose(p, skm.precision_score(y, pred, average="macro"))
    assert np.isclose(r, skm.recall_score(y, pred, average="macro"))
    assert np.isclose(f1, skm.f1_score(y, pred, average="macro"))


@pytest.mark.parametrize("targets", [1, 3])
def test_regression_metrics_match_sklearn(targets):
    rng = np.random.default_rng(targets)
    y = rng.normal(size=(50, targets)).astype(np.float32)
    pred = (y + rng.normal(scale=0.5, size=y.shape)).astype(np.float32)
    m = metrics.compute_metrics(jnp.asarray(pred), jnp.asarray(y), False)
    assert np.isclose(m["mse"], skm.mean_squared_error(y, pred), rtol=1e-5)
    assert np.isclose(m["mae"], skm.mean_absolute_error(y, pred), rtol=1e-5)
    assert np.isclose(m["r2"], skm.r2_score(y, pred), rtol=1e-5)


def test_non_finite_outputs_give_nan_metrics():
    m = metrics.compute_metrics(jnp.array([[jnp.nan, 0.0], [1.0, 0.0]]), jnp.array([0, 1]), True)
    assert all(np.isnan(v) for v in m.values())
