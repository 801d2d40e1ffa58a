"""Caption metrics: per slot scikit-learn's, averaged over slots; classes beyond a slot's
vocabulary never count."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from genetic_dl.core import caption_metrics as cm

VOCAB = (5, 3, 2, 5)
WIDTH = max(VOCAB)


def _random(seed, n=60):
    rng = np.random.default_rng(seed)
    y = np.stack([rng.integers(0, v, n) for v in VOCAB], 1)
    for s, v in enumerate(VOCAB):
        y[:v, s] = np.arange(v)  # every class of every slot present, as AUC needs
    logits = rng.normal(size=(n, len(VOCAB) * WIDTH)).astype(np.float32)
    return logits, y


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_caption_metrics_match_sklearn_per_slot_and_averaged(seed):
    logits, y = _random(seed)
    m = jax.jit(cm.caption_metrics, static_argnums=2)(jnp.asarray(logits), jnp.asarray(y), VOCAB)
    assert set(m) == set(cm.caption_metric_names(len(VOCAB)))
    per_slot = logits.reshape(len(y), len(VOCAB), WIDTH)
    pred = np.stack([per_slot[:, s, :v].argmax(-1) for s, v in enumerate(VOCAB)], 1)
    scores = {"precision": [], "recall": [], "f1": [], "auc": [], "loss": []}
    for s, v in enumerate(VOCAB):
        p, r, f1, _ = skm.precision_recall_fscore_support(y[:, s], pred[:, s], average="macro",
                                                          zero_division=0)
        probs = np.asarray(jax.nn.softmax(per_slot[:, s, :v], -1), np.float64)
        auc = skm.roc_auc_score(y[:, s], probs[:, 1] if v == 2 else probs, multi_class="ovr")
        scores["loss"].append(skm.log_loss(y[:, s], probs, labels=list(range(v))))
        for name, value in zip(scores, (p, r, f1, auc)):
            scores[name].append(value)
        assert np.isclose(m[f"accuracy_{s}"], skm.accuracy_score(y[:, s], pred[:, s]))
        assert np.isclose(m[f"f1_{s}"], f1, atol=1e-6)
    for name, values in scores.items():
        assert np.isclose(m[name], np.mean(values), atol=1e-5, rtol=1e-4), name
    assert np.isclose(m["slot_accuracy"], np.mean(pred == y))
    assert np.isclose(m["exact_match"], np.mean((pred == y).all(1)))
    assert np.isclose(cm.slot_accuracy(jnp.asarray(logits), jnp.asarray(y), VOCAB),
                      m["slot_accuracy"])


def test_exact_match_counts_captions_with_every_slot_right():
    _, y = _random(3, n=8)
    logits = np.full((8, len(VOCAB), WIDTH), -5.0, np.float32)
    np.put_along_axis(logits, y[..., None], 5.0, -1)  # every slot right...
    logits[np.arange(3), 1, (y[:3, 1] + 1) % VOCAB[1]] = 9.0  # but one slot of 3 captions
    m = cm.caption_metrics(jnp.asarray(logits.reshape(8, -1)), jnp.asarray(y), VOCAB)
    assert np.isclose(m["exact_match"], 5 / 8)
    assert np.isclose(m["slot_accuracy"], 1 - 3 / (8 * len(VOCAB)))
    assert np.isclose(m["accuracy_1"], 5 / 8) and m["accuracy_0"] == 1.0


def test_logits_beyond_a_slots_vocabulary_never_change_the_loss_or_the_metrics():
    logits, y = _random(4, n=30)
    per_slot = logits.reshape(30, len(VOCAB), WIDTH)
    beyond = np.arange(WIDTH)[None, :] >= np.asarray(VOCAB)[:, None]
    assert beyond.any()
    changed = np.where(beyond, 100.0 + 50 * np.random.default_rng(0).normal(size=per_slot.shape),
                       per_slot).astype(np.float32).reshape(30, -1)
    a = cm.caption_metrics(jnp.asarray(logits), jnp.asarray(y), VOCAB)
    b = cm.caption_metrics(jnp.asarray(changed), jnp.asarray(y), VOCAB)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, err_msg=name)
    loss = cm.CaptionLoss(VOCAB)
    grads = jax.grad(lambda o: loss(o, {"y": jnp.asarray(y)}))(jnp.asarray(changed))
    assert np.all(np.asarray(grads).reshape(per_slot.shape)[:, beyond] == 0)
    assert np.isfinite(np.asarray(grads)).all()
    # inside the vocabulary the logits do count
    inside = per_slot.copy()
    inside[:, 0, 0] += 3.0
    assert cm.caption_loss(jnp.asarray(inside.reshape(30, -1)), jnp.asarray(y), VOCAB) != a["loss"]


def test_non_finite_outputs_give_nan_metrics():
    logits, y = _random(5, n=20)
    logits[3, 0] = np.nan
    m = cm.caption_metrics(jnp.asarray(logits), jnp.asarray(y), VOCAB)
    assert all(np.isnan(v) for v in m.values())
