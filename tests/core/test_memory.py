"""The memory model: flat in the split's size, and a clear refusal before compiling."""
import importlib
import json

import jax
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.core import memory

from test_cli import _in_process

train_mod = importlib.import_module("genetic_dl.core.train")


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
    est = memory.estimate(pop, data, 64)
    # the population alone fits, with the data it does not
    monkeypatch.setenv(memory.ENV_LIMIT, str((est.total - est.data // 2) / memory.GB))
    args = ("evolve-weights", "--dataset", str(folder), "--model", "cnn", "--population", "4",
            "--generations", "2", "--epochs", "1", "--seed", "0")
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
