"""Bundled offline datasets and user files (``.npz``, a folder of ``.npy``) as :class:`Dataset`.

Every loader returns a :class:`~genetic_dl.data.Dataset` built by
:func:`~genetic_dl.data.make_dataset`, so bundled and user data pass the same checks.
"""
from __future__ import annotations

# scikit-learn's datasets and mnist1d (which imports requests) take about a second to import:
# they are imported by the loaders that need them.

import functools
import os
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..errors import fail as _fail, unknown
from .dataset import REGRESSION, Dataset, make_dataset, make_multi_slot_dataset
from .synthetic import CAPTION_VOCAB, captioned_moving_digits, moving_digits


def _sklearn_split(x: np.ndarray, y: np.ndarray, seed: int, test_size: float = 0.25,
                   stratify: bool = True) -> Any:
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel
    return train_test_split(x, y, test_size=test_size, random_state=seed,
                            stratify=y if stratify else None)


def _load_digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    raw = load_digits()
    x = raw.images.astype(np.float32)  # (n, 8, 8) so CNNs see an image and RNNs 8 rows
    x_tr, x_te, y_tr, y_te = _sklearn_split(x, raw.target, 0)
    return make_dataset("digits", x_tr, y_tr, x_te, y_te, seed=seed)


def _load_iris(seed: int) -> Dataset:
    from sklearn.datasets import load_iris  # pylint: disable=import-outside-toplevel
    raw = load_iris()
    x_tr, x_te, y_tr, y_te = _sklearn_split(raw.data, raw.target, 0, test_size=0.3)
    return make_dataset("iris", x_tr, y_tr, x_te, y_te, seed=seed)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # make_dataset reseeds numpy's global RNG; restore it so we leave no trace.
    from mnist1d.data import get_dataset_args, make_dataset as mnist1d_make  # pylint: disable=import-outside-toplevel
    state = np.random.get_state()
    try:
        raw = mnist1d_make(get_dataset_args())  # generated locally: never the download path
    finally:
        np.random.set_state(state)
    return raw["x"], raw["y"], raw["x_test"], raw["y_test"]


def _load_mnist1d(seed: int) -> Dataset:
    x_tr, y_tr, x_te, y_te = _mnist1d_arrays()
    return make_dataset("mnist1d", x_tr, y_tr, x_te, y_te, seed=seed)


def _load_friedman(seed: int) -> Dataset:
    from sklearn.datasets import make_friedman1  # pylint: disable=import-outside-toplevel
    x, y = make_friedman1(n_samples=2000, n_features=10, noise=1.0, random_state=0)
    x_tr, x_te, y_tr, y_te = _sklearn_split(x, y.astype(np.float32), 0, stratify=False)
    return make_dataset("friedman", x_tr, y_tr, x_te, y_te, task=REGRESSION, seed=seed)


def _load_binary(seed: int) -> Dataset:
    from sklearn.datasets import make_classification  # pylint: disable=import-outside-toplevel
    x, y = make_classification(n_samples=2000, n_features=20, n_informative=6,
                               n_redundant=4, class_sep=0.8, flip_y=0.05, random_state=0)
    x_tr, x_te, y_tr, y_te = _sklearn_split(x, y, 0)
    return make_dataset("binary", x_tr, y_tr, x_te, y_te, seed=seed)


MOVING_DIGITS: Dict[str, Any] = {"count": 3000, "frames": 10, "size": 32, "digits": 2,
                                 "label": "sum"}


def _clip_options(loader: str, defaults: Dict[str, Any], options: Dict[str, str]
                  ) -> Tuple[Dict[str, Any], Tuple[int, int, int, int]]:
    """A video loader's options over its defaults, and their integer ``(count, frames,
    size, digits)``; an unknown or non-integer option is refused in one line."""
    for name in options:
        if name not in defaults:
            unknown(f"{loader} option", name, defaults,
                    f"(e.g. {loader}:frames=20,size=64,count=10000)")
    opts = dict(defaults, **options)
    try:
        count, frames, size, digits = (int(opts[k]) for k in ("count", "frames", "size", "digits"))
    except ValueError:
        _fail(f"{loader} options count, frames, size and digits are integers, got {opts}")
    return opts, (count, frames, size, digits)


def _load_moving_digits(seed: int, **options: str) -> Dataset:
    opts, (count, frames, size, digits) = _clip_options("moving_digits", MOVING_DIGITS, options)
    x, y = moving_digits(count, frames=frames, size=size, digits=digits, label=str(opts["label"]),
                         seed=0)
    test = max(1, count // 5)
    classes = 9 * digits + 1 if opts["label"] == "sum" else 10 ** digits
    return make_dataset("moving_digits", x[test:], y[test:], x[:test], y[:test],
                        num_classes=classes, seed=seed)


CAPTIONED_MOVING_DIGITS: Dict[str, Any] = {"count": 3000, "frames": 10, "size": 32, "digits": 2}


def _load_captioned_moving_digits(seed: int, **options: str) -> Dataset:
    """:func:`~genetic_dl.data.synthetic.captioned_moving_digits` as multi-slot classification:
    labels are its ``(n, 4 * digits)`` caption targets, ``slot_classes`` their vocabularies
    (:data:`~genetic_dl.data.synthetic.CAPTION_VOCAB` per digit), the sentences
    ``synthetic.render_captions(data.y_test)``."""
    _, (count, frames, size, digits) = _clip_options("captioned_moving_digits",
                                                     CAPTIONED_MOVING_DIGITS, options)
    x, y, _ = captioned_moving_digits(count, frames=frames, size=size, digits=digits, seed=0)
    test = max(1, count // 5)
    return make_multi_slot_dataset("captioned_moving_digits", x[test:], y[test:], x[:test],
                                   y[:test], slot_classes=CAPTION_VOCAB * digits, seed=seed)


# loaders that take options after a colon: name:key=value,...
_WITH_OPTIONS: Dict[str, Callable[..., Dataset]] = {
    "moving_digits": _load_moving_digits,
    "captioned_moving_digits": _load_captioned_moving_digits,
}


DATASETS: Dict[str, Tuple[Callable[[int], Dataset], str]] = {
    "digits": (_load_digits, "8x8 handwritten digits, 10 classes, 1797 examples (scikit-learn)"),
    "iris": (_load_iris, "iris flowers, 3 classes, 4 features, 150 examples (scikit-learn)"),
    "mnist1d": (_load_mnist1d, "MNIST-1D, 10 classes, length-40 signals, 5000 examples "
                "(generated locally by the mnist1d package)"),
    "friedman": (_load_friedman, "Friedman #1 regression, 10 features, 2000 examples"),
    "binary": (_load_binary, "seeded two-class make_classification, 20 features, 2000 examples"),
    "moving_digits": (_load_moving_digits, "Moving-MNIST-style sequences of 2 bouncing digits "
                      "(10 frames of 32x32 uint8, label: their sum, 19 classes), 3000 examples, "
                      "generated from scikit-learn's digits; options after a colon: "
                      "moving_digits:count=10000,frames=20,size=64,digits=2,label=sum|class"),
    "captioned_moving_digits": (
        _load_captioned_moving_digits, "moving_digits' clips with caption targets: per digit "
        "(left to right) its class, direction (8), first wall (none|top|bottom|left|right) and "
        "whether it overlaps another digit, labels (n, 8), 3000 examples; sentences: "
        "synthetic.render_captions(y); --model caption; options: "
        "captioned_moving_digits:count=10000,frames=20,size=64,digits=2"),
}


def load_dataset(name: str, *, seed: int = 0, task: Optional[str] = None) -> Dataset:
    """Loads a bundled dataset by name, or a user ``.npz`` file by path.

    Args:
      name: one of :data:`DATASETS`, a path ending in ``.npz``, or a folder of
        ``.npy`` files (:func:`load_npy_dir`).
      seed: seed of the validation split.
      task: overrides the task guessed for an ``.npz`` file.

    Returns:
      The :class:`Dataset`.
    """
    if os.path.isdir(name):
        return load_npy_dir(name, seed=seed, task=task)
    prefix = name.split(":", 1)[0]
    if ":" in name and prefix in _WITH_OPTIONS:
        try:
            options = dict(item.split("=", 1) for item in name.split(":", 1)[1].split(",") if item)
        except ValueError:
            _fail(f"cannot read the options of {name!r}: write {prefix}:key=value,...")
        return _WITH_OPTIONS[prefix](seed, **options)
    if name.endswith(".npz") or os.path.sep in name:
        return load_npz(name, seed=seed, task=task)
    if name not in DATASETS:
        unknown("dataset", name, DATASETS, "or give a path to an .npz file or a folder of .npy")
    data = DATASETS[name][0](seed)
    if task is not None and task != data.task:
        _fail(f"dataset {name!r} is a {data.task} task; drop task={task!r}")
    return data


NPY_SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load_npz(path: str, *, seed: int = 0, task: Optional[str] = None,
             val_fraction: float = 0.2) -> Dataset:
    """Loads user data from an ``.npz`` file.

    The file holds ``x_train, y_train, x_test, y_test`` and optionally
    ``x_val, y_val``. Integer labels mean classification, floats regression,
    unless ``task`` says otherwise. With ``slot_classes`` (int, one per label
    column) the labels are ``(n, slots)`` class indices, slot ``i`` of
    ``slot_classes[i]`` classes (:func:`~genetic_dl.data.dataset.make_multi_slot_dataset`).

    Args:
      path: path of the ``.npz`` file.
      seed: seed of the validation split when the file has none.
      task: ``"classification"`` or ``"regression"`` to override the guess.
      val_fraction: fraction of train held out when the file has no ``x_val``.

    Returns:
      The validated :class:`Dataset`.
    """
    if not os.path.exists(path):
        _fail(f"dataset file {path!r} does not exist: check the path")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as err:  # numpy raises several types for a corrupt archive
        raise ValueError(f"cannot read {path!r} as an .npz archive ({err}); save it with "
                         f"np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)") \
            from err
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        _fail(f"{path!r} lacks array(s) {', '.join(missing)}: it needs x_train, y_train, "
              f"x_test, y_test (and optionally x_val, y_val); it has {', '.join(arrays) or 'none'}")
    name = os.path.splitext(os.path.basename(path))[0]
    return _made(name, arrays, task, val_fraction, seed)


def _made(name: str, arrays: Dict[str, Any], task: Optional[str], val_fraction: float,
          seed: int) -> Dataset:
    """The dataset of a file's arrays (:data:`NPY_SPLITS` and optionally ``slot_classes``)."""
    x_tr, y_tr = arrays["x_train"], np.asarray(arrays["y_train"])
    x_te, y_te = arrays["x_test"], np.asarray(arrays["y_test"])
    x_va, y_va = arrays.get("x_val"), None if "y_val" not in arrays else np.asarray(arrays["y_val"])
    if "slot_classes" not in arrays:
        return make_dataset(name, x_tr, y_tr, x_te, y_te, x_val=x_va, y_val=y_va, task=task,
                            val_fraction=val_fraction, seed=seed)
    vocab = np.asarray(arrays["slot_classes"])
    if vocab.ndim != 1 or not np.issubdtype(vocab.dtype, np.integer):
        _fail(f"{name}'s slot_classes has shape {vocab.shape} of {vocab.dtype}: it is one "
              f"integer per label column, each slot's number of classes")
    if task not in (None, "classification"):
        _fail(f"{name} has slot_classes (multi-slot classification): drop task={task!r}")
    return make_multi_slot_dataset(name, x_tr, y_tr, x_te, y_te, x_val=x_va, y_val=y_va,
                                   slot_classes=vocab.tolist(), val_fraction=val_fraction,
                                   seed=seed)


def load_npy_dir(path: str, *, seed: int = 0, task: Optional[str] = None,
                 val_fraction: float = 0.2) -> Dataset:
    """Loads user data from a folder of ``.npy`` files, memory-mapped.

    The folder holds ``x_train.npy, y_train.npy, x_test.npy, y_test.npy`` and
    optionally ``x_val.npy, y_val.npy`` (and ``slot_classes.npy``), as
    :func:`load_npz` reads them from an archive. Unlike an ``.npz`` (numpy
    cannot map an archive), each file is opened with ``mmap_mode="r"``: uint8
    images are read from the page cache, not copied, until a program needs them.

    Returns:
      The validated :class:`Dataset`.
    """
    arrays = {}
    for key in (*NPY_SPLITS, "slot_classes"):
        file = os.path.join(path, key + ".npy")
        if not os.path.exists(file):
            continue
        try:
            arrays[key] = np.load(file, mmap_mode="r", allow_pickle=False)
        except Exception as err:  # numpy raises several types for a corrupt file
            raise ValueError(f"cannot read {file!r} as a .npy array ({err}); save it with "
                             f"np.save(path, array)") from err
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        _fail(f"folder {path!r} lacks {', '.join(k + '.npy' for k in missing)}: it needs "
              f"x_train.npy, y_train.npy, x_test.npy, y_test.npy (and optionally x_val.npy, "
              f"y_val.npy)")
    return _made(os.path.basename(os.path.normpath(path)), arrays, task, val_fraction, seed)
