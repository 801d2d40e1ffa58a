"""Datasets: bundled loaders, .npz user data, and the errors bad data gets."""
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl import data as data_mod


@pytest.mark.parametrize("name,task,classes,shape", [
    ("digits", "classification", 10, (8, 8)),
    ("iris", "classification", 3, (4,)),
    ("mnist1d", "classification", 10, (40,)),
    ("friedman", "regression", 1, (10,)),
    ("binary", "classification", 2, (20,)),
])
def test_bundled_datasets(name, task, classes, shape):
    d = gdl.load_dataset(name)
    assert d.task == task and d.num_classes == classes and d.feature_shape == shape
    for split in ("train", "val", "test"):
        x, y = d.split(split)
        assert x.dtype == np.float32 and len(x) == len(y) > 0 and np.isfinite(x).all()
    # standardisation is fitted on train only: train is centred, the others need not be
    assert np.abs(d.x_train.reshape(len(d.x_train), -1).mean(0)).max() < 1e-4
    if task == "classification":
        assert set(np.unique(d.y_val)) == set(range(classes))  # stratified carve-out
    else:
        assert d.y_train.ndim == 2


def test_validation_split_is_seeded_and_disjoint(iris):
    again = gdl.load_dataset("iris", seed=0)
    other = gdl.load_dataset("iris", seed=1)
    np.testing.assert_array_equal(iris.x_val, again.x_val)
    assert not np.array_equal(iris.x_val, other.x_val)
    rows = {tuple(r) for r in iris.x_train.round(5)}
    assert not any(tuple(r) in rows for r in iris.x_val.round(5))


def test_mnist1d_leaves_numpy_global_rng_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    gdl.load_dataset("mnist1d")
    assert np.random.rand() == expected


def _save(tmp_path, **arrays):
    path = tmp_path / "user.npz"
    np.savez(path, **arrays)
    return str(path)


def _arrays(n=60, task="classification"):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n) if task == "classification" else rng.normal(size=n)
    return {"x_train": rng.normal(size=(n, 5)), "y_train": y,
            "x_test": rng.normal(size=(20, 5)), "y_test": y[:20]}


def test_load_npz_guesses_task_and_carves_validation(tmp_path):
    d = gdl.load_npz(_save(tmp_path, **_arrays()))
    assert d.task == "classification" and d.num_classes == 3
    assert len(d.y_train) + len(d.y_val) == 60 and len(d.y_test) == 20
    r = gdl.load_npz(_save(tmp_path, **_arrays(task="regression")))
    assert r.task == "regression" and r.y_train.shape[1] == 1


def test_load_npz_explicit_validation_and_task_override(tmp_path):
    a = _arrays()
    a.update(x_val=a["x_test"], y_val=a["y_test"])
    d = gdl.load_npz(_save(tmp_path, **a))
    assert len(d.y_train) == 60 and len(d.y_val) == 20
    r = gdl.load_dataset(_save(tmp_path, **a), task="regression")
    assert r.task == "regression"


@pytest.mark.parametrize("change,message", [
    (lambda a: a["x_train"].__setitem__((3, 1), np.nan), "NaN or inf"),
    (lambda a: a["x_train"].__setitem__((0, 0), np.inf), "NaN or inf"),
    (lambda a: a.update(y_train=a["y_train"][:-1]), "same length"),
    (lambda a: a["y_train"].__setitem__(0, -1), "relabel"),
    (lambda a: a.update(y_train=np.zeros(60, int)), "single class"),
    (lambda a: a.update(x_train=np.zeros((0, 5)), y_train=np.zeros(0, int)), "empty"),
    (lambda a: a.update(x_test=np.zeros((20, 6))), "feature shapes differ"),
    (lambda a: a.pop("y_test"), "lacks array"),
    (lambda a: a.update(x_train=np.arange(60.0)), "reshape"),
    (lambda a: a.update(y_train=np.full(60, 0.5)), None),  # floats: regression, fine
])
def test_bad_npz_data_gets_a_clear_error(tmp_path, change, message):
    a = _arrays()
    change(a)
    path = _save(tmp_path, **a)
    if message is None:
        assert gdl.load_npz(path).task == "regression"
        return
    with pytest.raises(ValueError, match=message):
        gdl.load_npz(path)


def test_other_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        gdl.load_dataset("imagenet")
    with pytest.raises(ValueError, match="does not exist"):
        gdl.load_npz(str(tmp_path / "missing.npz"))
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read"):
        gdl.load_npz(str(bad))
    a = _arrays()
    with pytest.raises(ValueError, match="non-integer"):
        data_mod.make_dataset("x", a["x_train"], a["y_train"] + 0.5, a["x_test"], a["y_test"],
                              task="classification")
    with pytest.raises(ValueError, match="classes are"):
        data_mod.make_dataset("x", a["x_train"], a["y_train"], a["x_test"], a["y_test"],
                              num_classes=2)
