"""The memory model: flat in the split's size, and a clear refusal before compiling."""
import ctypes
import importlib
import json
import os
import re

import jax
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.core import memory

from test_cli import _in_process

train_mod = importlib.import_module("genetic_dl.core.train")
stream_mod = importlib.import_module("genetic_dl.core.stream")


def _images(n_val, n_train=512, size=28, seed=0):
    x, y = gdl.synthetic.digit_images(n_train + n_val + 64, size=size, seed=seed)
    return gdl.make_dataset("images", x[:n_train], y[:n_train], x[-64:], y[-64:],
                            x_val=x[n_train:n_train + n_val], y_val=y[n_train:n_train + n_val])


def test_activations_do_not_grow_with_the_validation_split():
    small, big = _images(1000), _images(8000)
    spec = gdl.CNNSpec((8, 16))
    estimates = []
    for data in (small, big):
        pop = gdl.init_population(jax.random.key(0), spec, data, 8)
        estimates.append(memory.estimate(pop, data, 64))
    a, b = estimates
    assert a.eval_activations == b.eval_activations > 0
    assert a.train_activations == b.train_activations > 0
    assert b.data - a.data == 7000 * (28 * 28 + 4)  # uint8 images, int32 labels
    # the evaluation batch shrinks as the population grows: its activations stay bounded
    rows = [memory.eval_rows(pop.learner, pop.feature_shape, p) for p in (1, 8, 64)]
    assert rows[0] >= rows[1] >= rows[2] >= 32 and rows[2] < rows[0]


def test_a_population_that_does_not_fit_is_refused_before_compiling(monkeypatch):
    data = _images(256)
    pop = gdl.init_population(jax.random.key(0), gdl.CNNSpec((16, 32)), data, 16)
    est, four = (memory.estimate(p, data, 64) for p in (pop, gdl.take(pop, np.arange(4))))
    budget = (est.total + four.total) // 2
    monkeypatch.setenv(memory.ENV_LIMIT, str(budget / memory.GB))
    compiled = train_mod._train._cache_size()  # pylint: disable=protected-access
    with pytest.raises(memory.MemoryLimitError, match=r"population of 16 needs .* at most (\d+)"):
        gdl.train(pop, data, 1, mesh=None)
    assert train_mod._train._cache_size() == compiled  # pylint: disable=protected-access
    fits = memory.fitting(pop, data, 64, budget)
    assert 4 <= fits < 16
    for size, ok in ((fits, True), (fits + 1, False)):
        smaller = gdl.take(pop, np.arange(size))
        assert (memory.estimate(smaller, data, 64).total <= budget) == ok


def test_the_cli_refuses_with_one_line_and_exit_2(capsys, monkeypatch, tmp_path):
    x, y = gdl.synthetic.digit_images(600, seed=1)
    np.savez(tmp_path / "img.npz", x_train=x[:500], y_train=y[:500], x_test=x[500:],
             y_test=y[500:])
    monkeypatch.setenv(memory.ENV_LIMIT, "0.62")
    code, _, err = _in_process(capsys, monkeypatch, "evolve-weights", "--dataset",
                               str(tmp_path / "img.npz"), "--model", "cnn", "--population", "64",
                               "--generations", "1", "--epochs", "1")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: a population of 64 needs") and "at most" in err


def test_the_cli_streams_data_that_does_not_fit_next_to_the_population(capsys, monkeypatch,
                                                                       tmp_path):
    x, y = gdl.synthetic.digit_images(1400, seed=2)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, arr in (("x_train", x[:1000]), ("y_train", y[:1000]), ("x_val", x[1000:1200]),
                      ("y_val", y[1000:1200]), ("x_test", x[1200:]), ("y_test", y[1200:])):
        np.save(folder / f"{name}.npy", arr)
    data = gdl.load_dataset(str(folder))
    assert isinstance(data.x_train, np.memmap)  # nothing copied on load
    pop = gdl.init_population(jax.random.key(0), gdl.CNNSpec((16, 32)), data, 4)
    # small batches: a staged step of every member's batch, in all its copies, is less than
    # the data, so the population and a stream fit where the population and the data do not
    est = memory.estimate(pop, data, 8)
    streamed = stream_mod.estimate_stream(pop, gdl.Stream.from_dataset(data, 8), steps=1)
    assert streamed.total < est.total
    monkeypatch.setenv(memory.ENV_LIMIT, str((streamed.total + est.total) / 2 / memory.GB))
    args = ("evolve-weights", "--dataset", str(folder), "--model", "cnn", "--population", "4",
            "--generations", "2", "--epochs", "1", "--seed", "0", "--batch-size", "8")
    code, _, err = _in_process(capsys, monkeypatch, *args, "--stream", "off", "--quiet")
    assert code == 2 and err.startswith("error: a population of 4 needs")
    out = tmp_path / "run"
    code, _, err = _in_process(capsys, monkeypatch, *args, "--out", str(out))
    assert code == 0, err
    assert "streaming batches" in err
    result = json.loads((out / "result.json").read_text())
    assert result["best"]["test"]["accuracy"] > 0.5  # 10 classes: it learned from the stream


def test_the_estimate_and_the_chunk_size_read_shapes_only(iris):
    # Run before every training call. On members sharded over several CPU devices,
    # reading a member's values would dispatch a collective program per leaf, and
    # many in flight at once can stall XLA's CPU runtime until it aborts the process.
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16, 8)), iris, 4)
    shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), pop)
    expected = memory.estimate(pop, iris, 16, devices=2)
    assert memory.estimate(shapes, iris, 16, devices=2) == expected
    train_mod = importlib.import_module("genetic_dl.core.train")
    assert train_mod.chunk_members(shapes, 4) == train_mod.chunk_members(pop, 4)


def _status(field):
    with open("/proc/self/status", encoding="ascii") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1)) * 1024


def _peak_above(before, run):
    """Peak RSS while ``run()`` runs, above ``before`` (Linux: the peak is reset first)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    run()
    return _status("VmHWM") - before


def _images_stream(n=8192, batch=32, side=48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, side, side)).astype(np.float32)  # 9 KB a row
    y = rng.integers(0, 4, n).astype(np.int32)

    def make_iter(epoch, seed):
        del epoch
        order = np.random.default_rng(seed).permutation(n)
        for i in range(n // batch):
            rows = np.sort(order[i * batch:(i + 1) * batch])
            yield {"x": x[rows], "y": y[rows]}
    data = gdl.Dataset.from_arrays(x_train=x, y_train=y, x_val=x[:64], y_val=y[:64])
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), data, 2)
    return pop, {"make_iter": gdl.Stream(make_iter, val={"x": x[:64], "y": y[:64]}),
                 "rows": gdl.Stream.from_dataset(data, batch)}


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="needs Linux's reset of the peak RSS")
def test_the_stream_estimate_counts_its_staged_chunks_above_the_measured_peak():
    """Over an epoch of ~10 chunks of ~16 MB, peak RSS above the process before training
    stays under the estimate (less its runtime), and exceeds it without its staged
    chunks: they are counted, and bounded."""
    pop, streams = _images_stream()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", lambda pad: 0)
    for name, stream in streams.items():
        gdl.train(pop, stream, 1, mesh=None)  # compiles
        trim(0)  # the memory the first run freed goes back: the second is measured alone
        grew = _peak_above(_status("VmRSS"), lambda s=stream: gdl.train(pop, s, 1, mesh=None))
        est = stream_mod.estimate_stream(pop, stream)
        assert est.total - est.data - memory.RUNTIME_BYTES < grew, name
        assert grew <= est.total - memory.RUNTIME_BYTES, (name, grew / memory.GB, est)


def test_a_short_budget_stages_fewer_steps_with_the_same_bits(monkeypatch):
    pop, streams = _images_stream(n=1024)
    stream = streams["rows"]
    staged = []
    real = stream_mod._train_chunk  # pylint: disable=protected-access

    def spy(population, chunk, steps, *args, **kwargs):
        staged.append(int(steps))
        return real(population, chunk, steps, *args, **kwargs)
    monkeypatch.setattr(stream_mod, "_train_chunk", spy)
    want = gdl.train(pop, stream, 1, mesh=None)
    assert staged == [16, 16]  # 16 MB: the epoch's 32 steps in two even chunks
    one = stream_mod.estimate_stream(pop, stream, steps=1)
    two = stream_mod.estimate_stream(pop, stream, steps=2)
    per_step = (stream_mod.estimate_stream(pop, stream, steps=4).data - two.data) // 2
    monkeypatch.setenv(memory.ENV_LIMIT, str((two.total + 2 * per_step + 1) / memory.GB))
    staged.clear()
    got = gdl.train(pop, stream, 1, mesh=None)
    assert max(staged) == 4 and sum(staged) == 32  # 8 chunks of 4 steps
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setenv(memory.ENV_LIMIT, str((one.total - 1) / memory.GB))
    staged.clear()
    with pytest.raises(memory.MemoryLimitError, match=r"population of 2 needs .* 1 staged step"):
        gdl.train(pop, stream, 1, mesh=None)
    assert not staged  # refused before any program
