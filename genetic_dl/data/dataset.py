"""A supervised dataset's train / validation / test splits, and the one path that validates them.

Validation is carved out of train with a seeded, stratified split
(classification) so that selection and fitness never see the test split, and
feature standardisation is fitted on the training split only.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

from ..errors import fail as _fail

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
