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


def _digits_arrays():
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    raw = load_digits()
    x = (raw.images * 15).astype(np.uint8)  # 0..240, like 8-bit images
    return x[:1200], raw.target[:1200], x[1200:], raw.target[1200:]


def test_uint8_images_stay_uint8_and_train_like_their_float_copy():
    """uint8 features stay uint8 (a quarter of the memory) and are standardised inside
    the programs with the train split's statistics: same results as float32 input."""
    import jax  # pylint: disable=import-outside-toplevel
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    raw = gdl.make_dataset("u8", x_tr, y_tr, x_te, y_te)
    flt = gdl.make_dataset("f32", x_tr.astype(np.float32), y_tr, x_te.astype(np.float32), y_te)
    assert raw.raw_inputs and raw.x_train.dtype == np.uint8 and raw.x_val.dtype == np.uint8
    assert not flt.raw_inputs and flt.x_train.dtype == np.float32
    np.testing.assert_allclose(raw.feature_mean, flt.feature_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(raw.feature_std, flt.feature_std, rtol=1e-5)
    np.testing.assert_allclose(raw.model_inputs(raw.x_val), flt.x_val, rtol=1e-4, atol=1e-4)
    for spec in (gdl.MLPSpec(hidden=(32,)), gdl.CNNSpec(filters=(8,), dense=(16,))):
        pops = [gdl.init_population(jax.random.key(0), spec, d, 2) for d in (raw, flt)]
        (a, hist_a), (b, hist_b) = (gdl.train(p, d, 2, batch_size=64)
                                    for p, d in zip(pops, (raw, flt)))
        np.testing.assert_allclose(hist_a["val_loss"], hist_b["val_loss"], rtol=1e-3)
        for split in ("val", "test"):
            ma, mb = gdl.evaluate(a, raw, split), gdl.evaluate(b, flt, split)
            np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-3)
            assert np.all(np.abs(np.asarray(ma["accuracy"]) - np.asarray(mb["accuracy"])) <= 0.01)
        assert float(np.min(hist_a["val_score"][:, -1])) > 0.3  # it learns (chance: 0.1)


def test_images_of_mixed_sizes_are_a_clear_error():
    ragged = [np.zeros((28, 28), np.uint8)] * 5 + [np.zeros((32, 32), np.uint8)] * 5
    with pytest.raises(ValueError, match="different shapes.*resize"):
        gdl.make_dataset("mixed", ragged, np.arange(10) % 2, np.zeros((4, 28, 28), np.uint8),
                         np.arange(4) % 2)


def test_a_folder_of_npy_files_is_memory_mapped_and_reads_like_an_npz(tmp_path):
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    arrays = {"x_train": x_tr[:1000], "y_train": y_tr[:1000], "x_val": x_tr[1000:],
              "y_val": y_tr[1000:], "x_test": x_te, "y_test": y_te}
    np.savez(tmp_path / "d.npz", **arrays)
    (tmp_path / "d").mkdir()
    for k, v in arrays.items():
        np.save(tmp_path / "d" / f"{k}.npy", v)
    folder = gdl.load_dataset(str(tmp_path / "d"))
    packed = gdl.load_dataset(str(tmp_path / "d.npz"))
    assert isinstance(folder.x_train, np.memmap) and folder.x_train.dtype == np.uint8
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(folder, k), getattr(packed, k))
    np.testing.assert_array_equal(folder.feature_std, packed.feature_std)
    (tmp_path / "d" / "y_test.npy").unlink()
    with pytest.raises(ValueError, match="lacks y_test.npy"):
        gdl.load_dataset(str(tmp_path / "d"))


def _from(x, y, **kw):
    return gdl.Dataset.from_arrays(x_train=x[:20], y_train=y[:20], x_val=x[20:], y_val=y[20:],
                                   **kw)


def test_integer_features_say_how_they_are_fed():
    rng = np.random.default_rng(0)
    ids, y = rng.integers(0, 50, (30, 7)), np.arange(30) % 3
    with pytest.raises(ValueError, match="integer dtype int64: pass inputs='tokens'.*"
                                         "inputs='pixels'"):
        _from(ids, y)
    tokens = _from(ids, y, inputs="tokens")
    assert tokens.inputs == "tokens" and tokens.feature_dtype == "int32"
    assert tokens.x_train.dtype == np.int64 and not tokens.raw_inputs  # stored as given
    np.testing.assert_array_equal(tokens.model_inputs(ids[:3]), ids[:3])  # never standardised
    assert tokens.model_inputs(ids[:3]).dtype == np.int32
    assert "inputs=tokens" in repr(tokens) and "task=classification" in repr(tokens)
    pixels = _from(ids.astype(np.uint16), y, inputs="pixels", standardize=True)
    assert pixels.raw_inputs and pixels.feature_dtype == "float32"
    np.testing.assert_allclose(pixels.model_inputs(pixels.x_train).mean(0), 0, atol=1e-5)
    assert _from(ids.astype(np.uint8), y).inputs == "pixels"  # uint8: images, as before
    assert _from(ids.astype(np.float32), y).inputs == "features"
    numbers = _from(ids, y, inputs="features")
    assert numbers.model_inputs(ids[:2]).dtype == np.float32
    # make_dataset keeps casting integer features other than uint8 to float32
    made = gdl.make_dataset("ints", ids[:20], y[:20], ids[20:], y[20:])
    assert made.inputs == "features" and made.x_train.dtype == np.float32


@pytest.mark.parametrize("change,kw,message", [
    (lambda x: x.astype(np.float32), {"inputs": "tokens"}, "needs integer features"),
    (lambda x: x - 1, {"inputs": "tokens"}, r"token indices in \[-1, 48\]"),
    (lambda x: x, {"inputs": "tokens", "standardize": True}, "never standardised"),
    (lambda x: x, {"inputs": "words"}, "unknown inputs 'words'"),
])
def test_bad_token_inputs_are_one_line_errors(change, kw, message):
    ids = np.random.default_rng(0).integers(0, 50, (30, 7))
    ids[0, 0] = 0
    ids[1, 1] = 49
    with pytest.raises(ValueError, match=message) as err:
        _from(change(ids), np.arange(30) % 3, **kw)
    assert "\n" not in str(err.value)


def test_float_labels_say_which_task_they_were_taken_as():
    x = np.random.default_rng(1).normal(size=(30, 4))
    whole = (np.arange(30) % 3).astype(np.float64)
    with pytest.warns(UserWarning, match="y_train is float64 with whole-number values: taken as "
                                         "regression targets.*task='classification'"):
        guessed = _from(x, whole)
    assert guessed.task == "regression" and "task=regression" in repr(guessed)
    chosen = _from(x, whole, task="classification")
    assert chosen.y_train.dtype == np.int32 and chosen.num_classes == 3
    np.testing.assert_array_equal(chosen.y_val, whole[20:])
    with pytest.raises(ValueError, match="non-integer"):
        _from(x, whole + 0.5, task="classification")
    import warnings  # pylint: disable=import-outside-toplevel
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real-valued targets and integer classes: no warning
        assert _from(x, whole + 0.5).task == "regression"
        assert _from(x, whole.astype(int)).task == "classification"
