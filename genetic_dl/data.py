"""Datasets: bundled offline loaders, user ``.npz`` files and input validation.

Every loader returns a :class:`Dataset` with separate train / validation / test
splits. Validation is carved out of train with a seeded, stratified split
(classification) so that selection and fitness never see the test split, and
feature standardisation is fitted on the training split only.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .errors import fail as _fail

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train / validation / test arrays of one supervised task.

    Attributes:
      name: a short name for reports.
      task: ``"classification"`` or ``"regression"``.
      x_train, y_train, x_val, y_val, x_test, y_test: numpy arrays. Features are
        float32 with shape ``(n, *feature_shape)`` (uint8 images stay uint8:
        see ``raw_inputs``); labels are int32 ``(n,)`` for classification and
        float32 ``(n, targets)`` for regression.
      num_classes: number of classes (classification) or regression targets.
      feature_mean, feature_std: the train split's standardisation, if any.
      raw_inputs: the features are stored as given (uint8 images: a quarter of
        float32's memory) and the jitted programs standardise each batch with
        ``feature_mean``/``feature_std``; otherwise they are stored standardised.
    """
    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    feature_mean: Optional[np.ndarray] = None
    feature_std: Optional[np.ndarray] = None
    raw_inputs: bool = False

    def model_inputs(self, x) -> np.ndarray:
        """Features of this dataset as the model sees them (float32, standardised)."""
        return self.standardize(x) if self.raw_inputs else np.asarray(x, np.float32)

    def input_scaling(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` the jitted programs apply to each batch of raw inputs
        (float32 scalars 0 and 1 when the features are stored standardised)."""
        if not self.raw_inputs:
            return np.zeros((), np.float32), np.ones((), np.float32)
        return self.feature_mean, self.feature_std

    def standardize(self, x) -> np.ndarray:
        """Applies the train-split standardisation to raw features ``x``."""
        x = np.asarray(x, np.float32)
        if self.feature_mean is None:
            return x
        return ((x - self.feature_mean) / self.feature_std).astype(np.float32)

    @property
    def feature_shape(self) -> Tuple[int, ...]:
        """Shape of one example, e.g. ``(8, 8)`` for digits."""
        return tuple(self.x_train.shape[1:])

    @property
    def out_dim(self) -> int:
        """Width of the model's output layer."""
        return self.num_classes

    @property
    def is_classification(self) -> bool:
        """Whether the task is classification."""
        return self.task == CLASSIFICATION

    def split(self, which: str) -> Tuple[np.ndarray, np.ndarray]:
        """Returns ``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if which not in ("train", "val", "test"):
            raise ValueError(f"unknown split {which!r}: use 'train', 'val' or 'test'")
        x, y = getattr(self, f"x_{which}"), getattr(self, f"y_{which}")
        if len(x) == 0:
            raise ValueError(f"dataset {self.name!r} has no {which} split: give x_{which} and "
                             f"y_{which} when you build it")
        return x, y

    @classmethod
    def from_arrays(cls, *, x_train, y_train, x_val, y_val, x_test=None, y_test=None,
                    task: Optional[str] = None, name: str = "arrays",
                    standardize: bool = False) -> "Dataset":
        """A dataset from research code's own arrays, as they are.

        Labels may have any shape the learner's loss accepts (one-hot, soft,
        multi-target); nothing is standardised unless ``standardize``.

        Args:
          x_train, y_train, x_val, y_val: the training and validation splits.
          x_test, y_test: an optional test split (reports only).
          task: ``"classification"`` or ``"regression"``; guessed from the
            label dtype when ``None``.
          name: shown in reports.
          standardize: standardise features with the train split's statistics.

        Returns:
          A :class:`Dataset`.
        """
        if (x_test is None) != (y_test is None):
            _fail("give both x_test and y_test, or neither")
        splits = {"train": (x_train, y_train), "val": (x_val, y_val)}
        if x_test is not None:
            splits["test"] = (x_test, y_test)
        arrays = {}
        for split, (x, y) in splits.items():
            x, y = np.asarray(x), np.asarray(y)
            if x.ndim < 1 or len(x) == 0:
                _fail(f"x_{split} is empty: give at least one example")
            if len(x) != len(y):
                _fail(f"x_{split} has {len(x)} examples but y_{split} has {len(y)}: give one "
                      f"label per example")
            if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
                _fail(f"x_{split} has NaN/inf values: clean or impute them first")
            arrays[split] = (x, y)
        if len({a[0].shape[1:] for a in arrays.values()}) > 1:
            _fail(f"feature shapes differ between splits "
                  f"{ {k: a[0].shape[1:] for k, a in arrays.items()} }: use one feature shape")
        y_tr = arrays["train"][1]
        task = _resolve_task(task, y_tr)
        if task == CLASSIFICATION and y_tr.ndim == 1:
            width = int(max(a[1].max() for a in arrays.values())) + 1
        else:
            width = int(np.prod(y_tr.shape[1:])) if y_tr.ndim > 1 else 1
        x_tr, x_va = arrays["train"][0], arrays["val"][0]
        x_te, y_te = arrays.get("test", (x_va[:0], arrays["val"][1][:0]))
        mean = std = None
        raw = x_tr.dtype == np.uint8
        if raw:
            mean, std = feature_stats(x_tr) if standardize else _unit_scaling(x_tr)
        elif standardize:
            (x_tr, x_va, x_te), mean, std = _standardise(
                *(np.asarray(a, np.float32) for a in (x_tr, x_va, x_te)))
        return cls(name, task, x_tr, y_tr, x_va, arrays["val"][1], x_te, y_te, width, mean, std,
                   raw)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, task={self.task}, features={self.feature_shape}, "
                f"classes={self.num_classes}, train={len(self.y_train)}, val={len(self.y_val)}, "
                f"test={len(self.y_test)})")


def _resolve_task(task: Optional[str], y_train) -> str:
    """``task``, or its guess from the label dtype (integers: classification), checked."""
    if task is None:
        task = CLASSIFICATION if np.issubdtype(np.asarray(y_train).dtype, np.integer) \
            else REGRESSION
    if task not in TASKS:
        _fail(f"unknown task {task!r}: use 'classification' or 'regression'")
    return task


def _check_features(x: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):  # an ndarray (a memory map too) is used as it is
        try:
            x = np.asarray(x)
        except ValueError:
            x = np.asarray(x, dtype=object)
    if x.dtype == object:
        _fail(f"{name} holds examples of different shapes (or non-numbers): every example "
              f"needs the same shape, e.g. resize all images to one size")
    if x.ndim < 2:
        _fail(f"{name} has shape {x.shape}: features need shape (examples, features...); "
              f"reshape a single feature column with x.reshape(-1, 1)")
    if x.shape[0] == 0:
        _fail(f"{name} is empty: provide at least one example")
    if x.dtype == np.uint8:  # images: kept as they are, standardised inside the programs
        return x
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        _fail(f"{name} has dtype {x.dtype}: features must be real numbers")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(len(x), -1))[0])
        _fail(f"{name} contains NaN or inf in {len(rows)} example(s) (first at row {rows[0]}): "
              f"impute or drop those rows before training")
    return x


def _check_labels(y: np.ndarray, n: int, name: str, task: str, num_classes: Optional[int]):
    y = np.asarray(y)
    if y.shape[:1] != (n,):
        _fail(f"{name} has {y.shape[0] if y.ndim else 0} labels but its features have {n} "
              f"examples: features and labels must have the same length")
    if task == CLASSIFICATION:
        if y.ndim != 1:
            _fail(f"{name} has shape {y.shape}: classification labels must be a 1-D vector of "
                  f"class indices (use y.argmax(-1) for one-hot labels)")
        if np.issubdtype(y.dtype, np.floating):
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                _fail(f"{name} has non-integer values: classification needs integer class "
                      f"indices (or pass task='regression')")
        elif not np.issubdtype(y.dtype, np.integer):
            _fail(f"{name} has dtype {y.dtype}: classification labels must be integers "
                  f"0..C-1 (map strings with np.unique(y, return_inverse=True))")
        y = y.astype(np.int64)
        if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
            _fail(f"{name} has labels in [{y.min()}, {y.max()}] but the classes are "
                  f"0..{(num_classes or 1) - 1}: relabel to 0..C-1")
        return y.astype(np.int32)
    if not np.issubdtype(y.dtype, np.number):
        _fail(f"{name} has dtype {y.dtype}: regression targets must be numbers")
    y = y.astype(np.float32)
    if not np.all(np.isfinite(y)):
        _fail(f"{name} contains NaN or inf targets: drop or impute those rows")
    return y.reshape(n, -1)


def _unit_scaling(x_train) -> Tuple[np.ndarray, np.ndarray]:
    shape = x_train.shape[1:]
    return np.zeros(shape, np.float32), np.ones(shape, np.float32)


def feature_stats(x_train, chunk: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of ``x_train`` (float32), in float64 over chunks of rows,
    so a uint8 image set is never copied whole as floats. Constant features get std 1."""
    total = np.zeros(x_train.shape[1:], np.float64)
    square = np.zeros(x_train.shape[1:], np.float64)
    for start in range(0, len(x_train), chunk):
        part = np.asarray(x_train[start:start + chunk], np.float64)
        total += part.sum(0)
        square += (part * part).sum(0)
    n = len(x_train)
    mean = total / n
    std = np.sqrt(np.maximum(square / n - mean * mean, 0.0))
    std = np.where(std < 1e-8, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def _standardise(x_train, *others):
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    # Constant features (e.g. digits' blank corner pixels) keep scale 1 rather than dividing by 0.
    std = np.where(std < 1e-8, 1.0, std)
    scaled = tuple(((a - mean) / std).astype(np.float32) for a in (x_train,) + others)
    return scaled, mean.astype(np.float32), std.astype(np.float32)


def _carve_validation(x, y, fraction: float, seed: int, stratify: bool):
    rng = np.random.default_rng(seed)
    n = len(y)
    if stratify:
        val_idx = []
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            val_idx.append(idx[:int(round(fraction * len(idx)))])
        val_idx = np.sort(np.concatenate(val_idx))
    else:
        val_idx = np.sort(rng.permutation(n)[:int(round(fraction * n))])
    if len(val_idx) == 0 or len(val_idx) == n:
        _fail(f"a validation fraction of {fraction} leaves an empty split of {n} examples: "
              f"use a fraction in (0, 1) or provide x_val, y_val")
    mask = np.zeros(n, bool)
    mask[val_idx] = True
    return x[~mask], y[~mask], x[mask], y[mask]


def make_dataset(name: str, x_train, y_train, x_test, y_test, *, x_val=None, y_val=None,
                 task: Optional[str] = None, num_classes: Optional[int] = None,
                 val_fraction: float = 0.2, seed: int = 0, standardize: bool = True) -> Dataset:
    """Validates raw arrays and builds a :class:`Dataset`.

    Args:
      name: name shown in reports.
      x_train, y_train, x_test, y_test: features ``(n, *shape)`` and labels.
      x_val, y_val: an explicit validation split; carved from train if absent.
      task: ``"classification"`` or ``"regression"``; guessed from the label
        dtype when ``None`` (integers: classification, floats: regression).
      num_classes: number of classes; inferred from the labels when ``None``.
      val_fraction: fraction of train held out for validation.
      seed: seed of the validation split.
      standardize: standardise features with train statistics.

    Returns:
      A validated :class:`Dataset`.

    Raises:
      ValueError: with the problem and its fix, for NaN/inf features, length
        mismatches, labels out of range, a single class or empty arrays.
    """
    task = _resolve_task(task, y_train)
    if (x_val is None) != (y_val is None):
        _fail("give both x_val and y_val, or neither (validation is then carved from train)")
    splits = {"train": (x_train, y_train), "test": (x_test, y_test)}
    if x_val is not None:
        splits["val"] = (x_val, y_val)
    arrays = {}
    for split, (x, y) in splits.items():
        x = _check_features(x, f"x_{split}")
        arrays[split] = (x, _check_labels(y, len(x), f"y_{split}", task, num_classes))
    shapes = {s: a[0].shape[1:] for s, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        _fail(f"feature shapes differ between splits {shapes}: every split needs the same "
              f"feature shape")
    x_tr, y_tr = arrays["train"]
    num_classes = _output_width(arrays, task, num_classes)
    if "val" in arrays:
        x_va, y_va = arrays["val"]
    else:
        x_tr, y_tr, x_va, y_va = _carve_validation(x_tr, y_tr, val_fraction, seed,
                                                   task == CLASSIFICATION)
    x_te, y_te = arrays["test"]
    mean = std = None
    raw = x_tr.dtype == np.uint8
    if raw:  # uint8 stays uint8: the programs standardise each batch
        mean, std = feature_stats(x_tr) if standardize else _unit_scaling(x_tr)
    elif standardize:
        (x_tr, x_va, x_te), mean, std = _standardise(*(np.asarray(a, np.float32)
                                                       for a in (x_tr, x_va, x_te)))
    return Dataset(name, task, x_tr, y_tr, x_va, y_va, x_te, y_te, int(num_classes), mean, std,
                   raw)


def _output_width(arrays, task: str, num_classes: Optional[int]) -> int:
    y_tr = arrays["train"][1]
    if task == REGRESSION:
        if len({a[1].shape[1] for a in arrays.values()}) > 1:
            _fail("regression targets have a different width in each split: use the same")
        return y_tr.shape[1]
    if len(np.unique(y_tr)) < 2:
        _fail(f"y_train has a single class ({y_tr[0]}): classification needs at least two")
    if num_classes is None:
        num_classes = int(max(a[1].max() for a in arrays.values())) + 1
    return num_classes


def _sklearn_split(x, y, seed, test_size=0.25, stratify=True):
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
def _mnist1d_arrays():
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


MOVING_DIGITS = {"count": 3000, "frames": 10, "size": 32, "digits": 2, "label": "sum"}


def _load_moving_digits(seed: int, **options) -> Dataset:
    from .synthetic import moving_digits  # pylint: disable=import-outside-toplevel
    unknown = set(options) - set(MOVING_DIGITS)
    if unknown:
        _fail(f"unknown moving_digits option(s) {sorted(unknown)}: valid are "
              f"{', '.join(MOVING_DIGITS)} (e.g. moving_digits:frames=20,size=64,count=10000)")
    opts = dict(MOVING_DIGITS, **options)
    try:
        count, frames, size, digits = (int(opts[k]) for k in ("count", "frames", "size", "digits"))
    except ValueError:
        _fail(f"moving_digits options count, frames, size and digits are integers, got {opts}")
    x, y = moving_digits(count, frames=frames, size=size, digits=digits, label=str(opts["label"]),
                         seed=0)
    test = max(1, count // 5)
    classes = 9 * digits + 1 if opts["label"] == "sum" else 10 ** digits
    return make_dataset("moving_digits", x[test:], y[test:], x[:test], y[:test],
                        num_classes=classes, seed=seed)


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
    if name.startswith("moving_digits:"):
        try:
            options = dict(item.split("=", 1) for item in name.split(":", 1)[1].split(",") if item)
        except ValueError:
            _fail(f"cannot read the options of {name!r}: write moving_digits:key=value,...")
        return _load_moving_digits(seed, **options)
    if name.endswith(".npz") or os.path.sep in name:
        return load_npz(name, seed=seed, task=task)
    if name not in DATASETS:
        _fail(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} "
              f"or give a path to an .npz file")
    data = DATASETS[name][0](seed)
    if task is not None and task != data.task:
        _fail(f"dataset {name!r} is a {data.task} task; drop task={task!r}")
    return data


def load_npz(path: str, *, seed: int = 0, task: Optional[str] = None,
             val_fraction: float = 0.2) -> Dataset:
    """Loads user data from an ``.npz`` file.

    The file holds ``x_train, y_train, x_test, y_test`` and optionally
    ``x_val, y_val``. Integer labels mean classification, floats regression,
    unless ``task`` says otherwise.

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
    return make_dataset(name, arrays["x_train"], arrays["y_train"], arrays["x_test"],
                        arrays["y_test"], x_val=arrays.get("x_val"), y_val=arrays.get("y_val"),
                        task=task, val_fraction=val_fraction, seed=seed)


NPY_SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load_npy_dir(path: str, *, seed: int = 0, task: Optional[str] = None,
                 val_fraction: float = 0.2) -> Dataset:
    """Loads user data from a folder of ``.npy`` files, memory-mapped.

    The folder holds ``x_train.npy, y_train.npy, x_test.npy, y_test.npy`` and
    optionally ``x_val.npy, y_val.npy``, as :func:`load_npz` reads them from an
    archive. Unlike an ``.npz`` (numpy cannot map an archive), each file is
    opened with ``mmap_mode="r"``: uint8 images are read from the page cache,
    not copied, until a program needs them.

    Returns:
      The validated :class:`Dataset`.
    """
    arrays = {}
    for key in NPY_SPLITS:
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
    name = os.path.basename(os.path.normpath(path))
    return make_dataset(name, arrays["x_train"], np.asarray(arrays["y_train"]),
                        arrays["x_test"], np.asarray(arrays["y_test"]),
                        x_val=arrays.get("x_val"),
                        y_val=None if "y_val" not in arrays else np.asarray(arrays["y_val"]),
                        task=task, val_fraction=val_fraction, seed=seed)
