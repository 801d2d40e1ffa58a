"""Multi-slot labels (n, slots) with each slot's own vocabulary, from arrays and from files."""
import os

import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.data.dataset import Dataset, make_multi_slot_dataset

VOCAB = (4, 2, 3)


def _slots(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = np.stack([rng.integers(0, v, n) for v in VOCAB], 1)
    return x, y


def test_slot_classes_set_the_width_and_default_to_the_largest_class():
    x, y = _slots(40)
    d = make_multi_slot_dataset("s", x, y, x[:8], y[:8], slot_classes=VOCAB)
    assert d.slot_classes == VOCAB and d.slots == 3 and d.num_classes == 4 and d.out_dim == 12
    uniform = make_multi_slot_dataset("s", x, y, x[:8], y[:8])
    assert uniform.slot_classes == (4, 4, 4)
    assert gdl.make_dataset("plain", x, y[:, 0], x[:8], y[:8, 0]).slot_classes == ()


@pytest.mark.parametrize("vocab,message", [
    ((4, 2), "for each of the 3 label columns"),
    ((4, 2, 2), "class 2 in slot 2, whose vocabulary has 2 classes"),
    ((4, 0, 3), "positive number of classes"),
])
def test_slot_classes_that_do_not_fit_the_labels_are_refused(vocab, message):
    x, y = _slots(40)
    y[0, 2] = 2  # slot 2 uses class 2
    with pytest.raises(ValueError, match=message):
        make_multi_slot_dataset("s", x, y, x[:8], y[:8], slot_classes=vocab)
    with pytest.raises(ValueError, match="num_classes=5 but the largest"):
        make_multi_slot_dataset("s", x, y, x[:8], y[:8], slot_classes=VOCAB, num_classes=5)


def test_from_arrays_takes_slot_labels_as_given_features():
    x, y = _slots(30)
    d = Dataset.from_arrays(x_train=x.astype(np.float64), y_train=y, x_val=x[:6], y_val=y[:6],
                            slot_classes=VOCAB)
    assert d.slot_classes == VOCAB and d.out_dim == 12 and d.y_train.dtype == np.int32
    assert d.x_train.dtype == np.float64  # features keep their dtype
    plain = Dataset.from_arrays(x_train=x, y_train=y, x_val=x[:6], y_val=y[:6])
    assert plain.slot_classes == () and plain.y_train.shape == (30, 3)  # taken as they are
    with pytest.raises(ValueError, match="slot_classes means multi-slot classification"):
        Dataset.from_arrays(x_train=x, y_train=y, x_val=x[:6], y_val=y[:6],
                            slot_classes=VOCAB, task="regression")
    with pytest.raises(ValueError, match="whose vocabulary has 2 classes"):
        Dataset.from_arrays(x_train=x, y_train=y + 1, x_val=x[:6], y_val=y[:6],
                            slot_classes=(5, 2, 4))


def test_npz_and_npy_folder_with_slot_classes(tmp_path):
    x, y = _slots(50)
    arrays = {"x_train": x, "y_train": y, "x_test": x[:10], "y_test": y[:10]}
    path = str(tmp_path / "slots.npz")
    np.savez(path, slot_classes=np.asarray(VOCAB), **arrays)
    d = gdl.load_dataset(path)
    assert d.slot_classes == VOCAB and d.y_val.shape[1] == 3 and len(d.y_train) == 40
    folder = tmp_path / "npy"
    folder.mkdir()
    for name, a in dict(arrays, slot_classes=np.asarray(VOCAB)).items():
        np.save(os.path.join(folder, name + ".npy"), a)
    assert gdl.load_dataset(str(folder)).slot_classes == VOCAB
    np.savez(path, **arrays)  # without slot_classes, (n, slots) labels say how to mark them
    with pytest.raises(ValueError, match="slot_classes in an .npz"):
        gdl.load_dataset(path)
    np.savez(path, slot_classes=np.asarray([4.0, 2.0, 3.0]), **arrays)
    with pytest.raises(ValueError, match="one integer per label column"):
        gdl.load_dataset(path)
