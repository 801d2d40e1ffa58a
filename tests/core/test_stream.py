"""Streamed data: generators and memory-mapped files through train, evaluate and the GA."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import genetic_dl as gdl
from test_learner import LEARNER, TOP2_CHANCE, clipped_adamw, smoothed_xent


def _batches(x, y, batch, seed, calls=None):
    if calls is not None:
        calls.append(seed)
    order = np.random.default_rng(seed).permutation(len(x))
    for i in range(len(order) // batch):
        idx = np.sort(order[i * batch:(i + 1) * batch])
        yield {"x": x[idx], "y": y[idx]}


@pytest.fixture(scope="module")
def arrays(digits):
    return digits.x_train[:256], digits.y_train[:256], digits.x_val[:128], digits.y_val[:128]


def _pop(arrays, peak_lr):
    x, y, xv, yv = arrays
    data = gdl.Dataset.from_arrays(x_train=x, y_train=y, x_val=xv, y_val=yv)
    return gdl.init_population(jax.random.key(0), LEARNER, data, len(peak_lr),
                               optimizer=clipped_adamw,
                               hparams={"peak_lr": np.asarray(peak_lr), "clip": 1.0}), data


def test_generator_stream_trains_a_user_model_and_evaluates_like_arrays(arrays):
    x, y, xv, yv = arrays
    pop, data = _pop(arrays, [3e-3, 1e-2, 3e-2])
    stream = gdl.Stream(lambda epoch, seed: _batches(x, y, 32, seed),
                        val={"x": xv, "y": yv}, eval_batch=48)  # 128 = 2 x 48 + 32
    trained, hist = gdl.train(pop, stream, 2)
    losses = np.asarray(hist["train_loss"])
    assert losses.shape == (3, 2) and np.all(losses[:, 1] < losses[:, 0])
    streamed, whole = gdl.evaluate(trained, stream, "val"), gdl.evaluate(trained, data, "val")
    for k in whole:
        np.testing.assert_allclose(streamed[k], whole[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hist["val_score"][:, -1], whole["top2"], atol=1e-6)
    for rule in ("ga", "pbt"):
        res = gdl.evolve_weights(jax.random.key(1), pop, stream, generations=2, epochs=1,
                                 config=gdl.WeightGAConfig(
                                     rule=rule, pbt_bounds=(("peak_lr", (1e-4, 1e-1)),)),
                                 fitness="top2")
        assert 0 < res.best_fitness <= 1 and len(res.history) == 2


def test_memory_mapped_stream_gives_members_their_own_batch_order(arrays, tmp_path):
    x, y, xv, yv = arrays
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    xm, ym = np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    calls = []
    stream = gdl.Stream(lambda epoch, seed: _batches(xm, ym, 64, seed, calls),
                        val={"x": xv, "y": yv})
    two, _ = gdl.train(_pop(arrays, [3e-3, 1e-2])[0], stream, 1)
    assert len(calls) == 2 and calls[0] != calls[1]  # one iterator, one seed, per member
    three, _ = gdl.train(_pop(arrays, [3e-3, 1e-2, 1e-3])[0], stream, 1)
    assert calls[2:4] == calls[:2]  # member i's order depends on its own key only
    for a, b in zip(jax.tree_util.tree_leaves(two.params), jax.tree_util.tree_leaves(three.params)):
        np.testing.assert_allclose(a, b[:2], rtol=1e-4, atol=1e-5)
    calls.clear()
    shared = gdl.Stream(stream.make_iter, val=stream.val, shared=True)
    gdl.train(_pop(arrays, [3e-3, 1e-2, 1e-3])[0], shared, 2)
    assert len(calls) == 2  # one iterator per epoch for every member


def test_bad_streams_are_clear_value_errors(arrays):
    x, y, xv, yv = arrays
    pop, _ = _pop(arrays, [1e-3, 1e-2])

    def ragged(epoch, seed):
        yield {"x": x[:32], "y": y[:32]}
        yield {"x": x[:16], "y": y[:16]}
    for make_iter, match in ((ragged, "one shape"), (lambda e, s: iter(()), "no batch"),
                             (lambda e, s: iter([x[:32]]), "not a dict"),
                             (lambda e, s: iter([{"x": x[:32], "y": y[:8]}]),
                              "different batch sizes")):
        with pytest.raises(ValueError, match=match):
            gdl.train(pop, gdl.Stream(make_iter, val={"x": xv, "y": yv}), 1)
    with pytest.raises(ValueError, match="no test split"):
        gdl.evaluate(pop, gdl.Stream(ragged, val={"x": xv, "y": yv}), "test")


def _confusion_init():
    return jnp.zeros((10, 10), jnp.float32)


def _confusion_update(acc, logits, batch):
    pred = jnp.argmax(logits, -1)
    return acc.at[batch["y"], pred].add(1.0)


def _macro_f1(acc):
    tp = jnp.diag(acc)
    f1 = 2 * tp / jnp.maximum(acc.sum(0) + acc.sum(1), 1.0)
    present = (acc.sum(0) + acc.sum(1)) > 0
    return jnp.sum(jnp.where(present, f1, 0.0)) / jnp.sum(present)


def test_an_accumulator_metric_equals_sklearn_on_the_whole_split(arrays):
    """Macro F1 does not average over batches: as an (init, update, finalize)
    accumulator it must equal sklearn's on the whole split, streamed or not."""
    from sklearn.metrics import f1_score  # pylint: disable=import-outside-toplevel
    x, y, xv, yv = arrays
    learner = dataclasses.replace(LEARNER, metrics=LEARNER.metrics + (
        ("macro_f1", gdl.metric((_confusion_init, _confusion_update, _macro_f1))),))
    pop, data = _pop(arrays, [1e-2, 3e-2])
    pop, _ = gdl.train(pop.replace(learner=learner), data, 2, batch_size=32)
    stream = gdl.Stream(lambda epoch, seed: _batches(x, y, 32, seed), val={"x": xv, "y": yv},
                        eval_batch=48)
    preds = np.argmax(np.asarray(gdl.predict(pop, xv)), -1)
    want = [f1_score(yv, p, average="macro") for p in preds]
    assert len(set(np.round(want, 6))) == 2 and min(want) < 0.99  # distinct, not trivial
    for source in (data, stream):
        np.testing.assert_allclose(gdl.evaluate(pop, source, "val")["macro_f1"], want,
                                   rtol=1e-5)


def test_outer_search_trains_a_user_model_family_on_a_stream(arrays):
    """The search objective takes a minibatch Stream like a Dataset: it trains the configs
    well above chance and reports the best one's test metrics."""
    from test_learner import _build  # pylint: disable=import-outside-toplevel
    x, y, xv, yv = arrays
    space = gdl.space({"peak_lr": gdl.Float(1e-3, 3e-2, log=True), "clip": gdl.Float(0.5, 2.0),
                       "width": gdl.Choice((8, 32)), "epochs": gdl.Choice((1, 2))})
    stream = gdl.Stream(lambda epoch, seed: _batches(x, y, 32, seed), val={"x": xv, "y": yv},
                        test={"x": xv[:64], "y": yv[:64]})
    objective = gdl.TrainerObjective(stream, metric="top2", build=_build)
    result = gdl.run_search("random", space, objective, 6, 0)
    fits = [e["fitness"] for e in result.evaluations]
    assert all(0 < f <= 1 for f in fits) and result.best_fitness == max(fits)
    assert result.best_fitness > 3 * TOP2_CHANCE  # trained, not a guess (digits: ~0.9)
    assert objective.groups_trained <= 2 * len(result.history)
    assert objective.test_metrics()["top2"] > 2.5 * TOP2_CHANCE
    with pytest.raises(ValueError, match="build="):
        gdl.TrainerObjective(stream)


def _full_batch_build(config):
    """test_learner's family with dropout off in training too, so that a member trained
    on whole-split batches updates alike whatever the order of the batch's rows."""
    from test_learner import Wide, smoothed_xent, top2  # pylint: disable=import-outside-toplevel
    return (gdl.Learner.from_linen(Wide(int(config["width"])), loss=smoothed_xent,
                                   metrics={"top2": top2}, train_kwargs={"train": False},
                                   eval_kwargs={"train": False}), clipped_adamw)


def test_outer_search_on_a_stream_reaches_the_array_paths_fitness(arrays):
    """The same configs reach the same validation fitness on a Stream as on the arrays.

    Equal only where the batches cannot differ: whole-split batches, no dropout. With
    minibatches the two paths see different batches by design: the array path permutes
    with jax.random from each member's epoch key, while make_iter gets only an int seed
    hashed from that key (stream._seeds), from which no stream can rebuild the order."""
    x, y, xv, yv = arrays
    space = gdl.space({"peak_lr": gdl.Float(1e-3, 3e-2, log=True), "clip": gdl.Float(0.5, 2.0),
                       "width": gdl.Choice((8, 32)), "epochs": gdl.Choice((1, 2)),
                       "batch_size": gdl.Choice((len(x),))})
    data = gdl.Dataset.from_arrays(x_train=x, y_train=y, x_val=xv, y_val=yv,
                                   x_test=xv[:64], y_test=yv[:64])
    stream = gdl.Stream(lambda epoch, seed: _batches(x, y, len(x), seed), val={"x": xv, "y": yv},
                        test={"x": xv[:64], "y": yv[:64]})
    objectives = [gdl.TrainerObjective(source, metric="top2", build=_full_batch_build)
                  for source in (data, stream)]
    on_arrays, on_stream = (gdl.run_search("random", space, o, 6, 0) for o in objectives)
    assert [e["config"] for e in on_stream.evaluations] == \
        [e["config"] for e in on_arrays.evaluations]
    fits = [e["fitness"] for e in on_arrays.evaluations]
    assert len(fits) >= 3 and len(set(fits)) >= 2  # configs that train differently
    np.testing.assert_allclose([e["fitness"] for e in on_stream.evaluations], fits, rtol=1e-6)
    # the best network's test loss agrees too (a continuous check of the trained weights)
    test = [o.test_metrics() for o in objectives]
    np.testing.assert_allclose(test[1]["loss"], test[0]["loss"], rtol=1e-5)


def test_a_population_initialises_from_a_stream_like_from_its_arrays(arrays):
    x, y, xv, yv = arrays
    stream = gdl.Stream(lambda e, s: _batches(x, y, 32, s), val={"x": xv, "y": yv})
    from_arrays, _ = _pop(arrays, [1e-3, 1e-2])
    from_stream = gdl.init_population(jax.random.key(0), LEARNER, stream, 2,
                                      optimizer=clipped_adamw,
                                      hparams={"peak_lr": np.asarray([1e-3, 1e-2]), "clip": 1.0})
    for a, b in zip(jax.tree_util.tree_leaves(from_arrays.params),
                    jax.tree_util.tree_leaves(from_stream.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="output width"):
        gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), stream, 2)
    three_classes = gdl.Learner.from_linen(nn.Dense(3), loss=smoothed_xent)
    with pytest.raises(ValueError, match="do not fit"):  # checked on the stream's first batch
        gdl.init_population(jax.random.key(0), three_classes, stream, 2)


def test_a_dataset_as_a_stream_evaluates_and_trains_like_the_dataset():
    x, y = gdl.synthetic.digit_images(700, size=12, seed=3)
    data = gdl.make_dataset("small", x[:400], y[:400], x[600:], y[600:], x_val=x[400:600],
                            y_val=y[400:600])
    assert data.raw_inputs  # uint8 kept; the stream standardises on the host
    stream = gdl.Stream.from_dataset(data, 32, eval_batch=64)
    pop = gdl.init_population(jax.random.key(0), gdl.CNNSpec((4,)), data, 3)
    for split in ("val", "test"):
        want, got = gdl.evaluate(pop, data, split, mesh=None), gdl.evaluate(pop, stream, split)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)
    first = next(stream.make_iter(0, 7))
    assert first["x"].dtype == np.float32 and first["x"].shape == (32,) + data.feature_shape
    rows = [int(np.flatnonzero((data.x_train == raw).all(axis=(1, 2)))[0])
            for raw in np.round(first["x"] * data.feature_std + data.feature_mean)
            .astype(np.uint8).reshape((32,) + data.x_train.shape[1:])]
    np.testing.assert_array_equal(first["y"], data.y_train[rows])  # labels follow their images
    assert len(list(stream.make_iter(0, 7))) == 400 // 32
    trained, _ = gdl.train(pop, stream, 2)
    after = gdl.evaluate(trained, stream, "val")
    assert np.all(np.asarray(after["loss"]) < np.asarray(gdl.evaluate(pop, stream, "val")["loss"]))


def _leaves(tree):
    return [np.asarray(v) for v in jax.tree_util.tree_leaves(tree)]


def test_staged_chunks_train_the_same_bits_for_any_chunk_length(arrays):
    """One step per program or several (a scan over a chunk, the epoch's last chunk
    shorter): the same batches, keys and order, so the same bits; row-addressable
    data gathers every member's chunk at once and trains as its make_iter does."""
    x, y, xv, yv = arrays
    pop, data = _pop(arrays, [3e-3, 1e-2, 3e-2])  # dropout: the keys advance per step
    runs = {}
    for shared, lengths in ((False, (1, 3, None)), (True, (1, 3))):
        for steps in lengths:  # 8 steps per epoch: chunks of 1, of 3, 3 and 2, or all 8
            stream = gdl.Stream(lambda epoch, seed: _batches(x, y, 32, seed),
                                val={"x": xv, "y": yv}, shared=shared, steps_per_dispatch=steps)
            runs[shared, steps] = _leaves(gdl.train(pop, stream, 2))
        for steps in lengths[1:]:
            for a, b in zip(runs[shared, steps], runs[shared, 1]):
                np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(runs[False, 1], runs[True, 1]))
    rows = gdl.Stream.from_dataset(data, 32)
    assert rows.rows is not None and not data.raw_inputs
    by_rows = [_leaves(gdl.train(pop, dataclasses.replace(rows, steps_per_dispatch=s), 2))
               for s in (3, None)]
    by_iter = _leaves(gdl.train(pop, dataclasses.replace(rows, rows=None), 2))
    for got in by_rows:
        for a, b in zip(got, by_iter):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="steps_per_dispatch"):
        gdl.Stream(rows.make_iter, val=rows.val, steps_per_dispatch=0)


class _Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Conv(4, (3, 3))(x[..., None])).mean(axis=(1, 2)))


def test_staged_steps_of_a_conv_model_run_in_the_fast_cpu_layout(arrays, monkeypatch):
    """The loop over a chunk's steps has its (gradient) convolutions rewritten to XLA:CPU's
    canonical layout, as the array path's scan does, whatever the chunk length."""
    from genetic_dl.core import conv_layout  # pylint: disable=import-outside-toplevel
    x, y, xv, yv = arrays
    learner = gdl.Learner.from_linen(_Conv(), loss=smoothed_xent)
    pop = gdl.init_population(jax.random.key(0), learner, (x.shape[1:], 10), 2)
    used = []
    original = conv_layout.canonical_convolutions
    monkeypatch.setattr(conv_layout, "canonical_convolutions",
                        lambda fn: used.append(fn) or original(fn))
    runs = [_leaves(gdl.train(pop, gdl.Stream(lambda e, s: _batches(x, y, 64, s),
                                              val={"x": xv, "y": yv}, steps_per_dispatch=k), 1))
            for k in (1, 3)]
    assert used
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def _prefetch_threads():
    import threading  # pylint: disable=import-outside-toplevel
    return [t for t in threading.enumerate() if t.name == "genetic_dl-prefetch" and t.is_alive()]


def test_the_prefetch_thread_reraises_errors_and_stops(arrays):
    from genetic_dl.core import staging  # pylint: disable=import-outside-toplevel
    x, y, xv, yv = arrays
    pop, _ = _pop(arrays, [1e-3, 1e-2])

    def broken(epoch, seed):
        for i, batch in enumerate(_batches(x, y, 32, seed)):
            if epoch == 1 and i == 2:
                raise OSError(f"shard {seed % 7} unreadable")
            yield batch
    with pytest.raises(OSError, match=r"^shard \d unreadable$"):
        gdl.train(pop, gdl.Stream(broken, val={"x": xv, "y": yv}, steps_per_dispatch=1), 3)
    assert not _prefetch_threads()

    def failing_val():  # the consumer fails while the producer works ahead
        raise KeyError("no validation today")
    with pytest.raises(KeyError, match="no validation today"):
        gdl.train(pop, gdl.Stream(lambda e, s: _batches(x, y, 32, s), val=failing_val), 3)
    assert not _prefetch_threads()
    made = []

    def endless():
        while True:
            made.append(len(made))
            yield len(made)
    with staging.Prefetch(endless()) as items:
        assert [v for v, _ in zip(items, range(5))] == [1, 2, 3, 4, 5]
    assert not _prefetch_threads() and len(made) <= 7  # one item ahead of the consumer


TWO_DEVICES = """
import jax, numpy as np, genetic_dl as gdl
assert jax.device_count() == 2
raw = gdl.load_dataset("digits")
data = gdl.Dataset.from_arrays(x_train=raw.x_train[:320], y_train=raw.y_train[:320],
                               x_val=raw.x_val[:96], y_val=raw.y_val[:96])
pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16,)), data, 3)  # padded to 4
def gen(epoch, seed):
    order = np.random.default_rng(seed).permutation(320)
    for i in range(10):
        yield {"x": data.x_train[np.sort(order[i * 32:(i + 1) * 32])],
               "y": data.y_train[np.sort(order[i * 32:(i + 1) * 32])]}
val = {"x": data.x_val, "y": data.y_val}
for stream in (gdl.Stream(gen, val=val, steps_per_dispatch=4),
               gdl.Stream(gen, val=val, shared=True, steps_per_dispatch=3),
               gdl.Stream.from_dataset(data, 32)):
    one, h1 = gdl.train(pop, stream, 3, mesh=None)
    two, h2 = gdl.train(pop, stream, 3)
    assert len(two.params["params"]["Dense_0"]["kernel"]) == 3
    for a, b in zip(jax.tree_util.tree_leaves((one.params, h1)),
                    jax.tree_util.tree_leaves((two.params, h2))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print("ok")
"""


def test_streams_with_prefetch_train_alike_on_two_devices_and_end():
    """The producer thread puts chunks on a 2-device mesh while sharded programs run:
    it ends (a hang detector: ~30x the normal run time) and matches one device."""
    import subprocess  # pylint: disable=import-outside-toplevel
    from conftest import run_python  # pylint: disable=import-outside-toplevel
    try:
        out = run_python(TWO_DEVICES, devices=2, timeout=300, optimized=True)
    except subprocess.TimeoutExpired:
        pytest.fail("streaming on 2 devices did not finish in 300 s")
    assert out.strip().endswith("ok")
