"""A supervised dataset's train / validation / test splits, and the one path that validates them.

Validation is carved out of train with a seeded, stratified split
(classification) so that selection and fitness never see the test split, and
feature standardisation is fitted on the training split only.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ..errors import check, check_choice, fail as _fail
from .checks import (AS_GIVEN, CHECKED, CLASSIFICATION, FEATURES, INPUTS, PIXELS,
                     REGRESSION, SLOTTED, SLOTTED_AS_GIVEN, SPLITS, TASKS, TOKENS, Checks,
                     Splits, resolve_inputs, slot_vocabularies, validated)

__all__ = ["CLASSIFICATION", "REGRESSION", "TASKS", "SPLITS", "Dataset", "feature_stats",
           "make_dataset", "make_multi_slot_dataset"]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train / validation / test arrays of one supervised task.

    Attributes:
      name: a short name for reports.
      task: ``"classification"`` or ``"regression"``.
      x_train, y_train, x_val, y_val, x_test, y_test: numpy arrays. Features are
        float32 with shape ``(n, *feature_shape)`` (integer images and tokens stay
        as given: see ``inputs``); labels are int32 ``(n,)`` for classification
        and float32 ``(n, targets)`` for regression (int32 ``(n, slots)`` if ``slot_classes``).
      num_classes: number of classes (of slots: the largest vocabulary) or regression targets.
      feature_mean, feature_std: the train split's standardisation, if any.
      raw_inputs: the features are pixels stored as given (uint8 images: a
        quarter of float32's memory) and the jitted programs standardise each
        batch with ``feature_mean``/``feature_std``.
      inputs: how the model is fed: ``"features"`` (float32), ``"pixels"``
        (integer images standardised to float32 inside the programs) or
        ``"tokens"`` (integer indices fed as int32, never standardised);
        empty means ``"pixels"`` if ``raw_inputs`` else ``"features"``.
      slot_classes: empty, or each label column's number of classes: the labels are
        ``(n, slots)`` class indices, one per slot (:func:`make_multi_slot_dataset`).
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
    inputs: str = ""
    slot_classes: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        inputs = self.inputs or (PIXELS if self.raw_inputs else FEATURES)
        check_choice("inputs", inputs, INPUTS)
        check(not self.raw_inputs or inputs == PIXELS,
              f"raw_inputs=True means inputs='pixels', not {inputs!r}: drop raw_inputs")
        # frozen: the resolved kind is set once, here
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "raw_inputs", inputs == PIXELS)

    @property
    def feature_dtype(self) -> str:
        """The dtype the model receives: ``"int32"`` for tokens, else ``"float32"``."""
        return "int32" if self.inputs == TOKENS else "float32"

    def model_inputs(self, x: ArrayLike) -> np.ndarray:
        """Features of this dataset as the model sees them: float32 (pixels
        standardised) or int32 tokens."""
        if self.inputs == TOKENS:
            return np.asarray(x, np.int32)
        return self.standardize(x) if self.raw_inputs else np.asarray(x, np.float32)

    def input_scaling(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` the jitted programs apply to each batch of raw inputs
        (float32 scalars 0 and 1 when the features are stored standardised)."""
        mean, std = self.feature_mean, self.feature_std
        if not self.raw_inputs or mean is None or std is None:
            return np.zeros((), np.float32), np.ones((), np.float32)
        return mean, std

    def standardize(self, x: ArrayLike) -> np.ndarray:
        """Applies the train-split standardisation to raw features ``x``."""
        x = np.asarray(x, np.float32)
        mean, std = self.feature_mean, self.feature_std
        if mean is None or std is None:
            return x
        return ((x - mean) / std).astype(np.float32)

    @property
    def feature_shape(self) -> Tuple[int, ...]:
        """Shape of one example, e.g. ``(8, 8)`` for digits."""
        return tuple(self.x_train.shape[1:])

    @property
    def slots(self) -> int:
        """Class indices per example (0: one label, not slots)."""
        return len(self.slot_classes)

    @property
    def out_dim(self) -> int:
        """Width of the model's output layer (slot-major ``slots * num_classes`` if slots)."""
        return self.num_classes * self.slots if self.slots else self.num_classes

    @property
    def is_classification(self) -> bool:
        """Whether the task is classification."""
        return self.task == CLASSIFICATION

    def split(self, which: str) -> Tuple[np.ndarray, np.ndarray]:
        """Returns ``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        check_choice("split", which, SPLITS)
        x, y = getattr(self, f"x_{which}"), getattr(self, f"y_{which}")
        if len(x) == 0:
            raise ValueError(f"dataset {self.name!r} has no {which} split: give x_{which} and "
                             f"y_{which} when you build it")
        return x, y

    @classmethod
    def from_arrays(cls, *, x_train: ArrayLike, y_train: ArrayLike, x_val: ArrayLike,
                    y_val: ArrayLike, x_test: Optional[ArrayLike] = None,
                    y_test: Optional[ArrayLike] = None, task: Optional[str] = None,
                    name: str = "arrays", standardize: bool = False,
                    inputs: Optional[str] = None,
                    slot_classes: Optional[Sequence[int]] = None) -> "Dataset":
        """A dataset from research code's own arrays, as they are.

        The checks are :func:`make_dataset`'s; unlike it, features keep their
        dtype, labels may have any shape the learner's loss accepts (one-hot,
        soft, multi-target) and nothing is standardised unless ``standardize``.
        Integer features other than uint8 need ``inputs``: the library cannot
        tell token indices from pixels.

        Args:
          x_train, y_train, x_val, y_val: the training and validation splits.
          x_test, y_test: an optional test split (reports only).
          task: ``"classification"`` or ``"regression"``; guessed from the
            label dtype when ``None`` (float labels: regression, with a warning
            when their values are whole numbers). Classification turns 1-D
            whole-number float labels into int32 class indices.
          name: shown in reports.
          standardize: standardise features with the train split's statistics.
          inputs: ``"features"``, ``"pixels"`` or ``"tokens"`` (see
            :class:`Dataset`); ``None``: float features are ``"features"``,
            uint8 ones ``"pixels"``, other integers must say which.
          slot_classes: each label column's number of classes: the labels are
            then ``(n, slots)`` class indices (multi-slot classification, e.g. a
            caption's fields; see :func:`make_multi_slot_dataset`).

        Returns:
          A :class:`Dataset`.
        """
        if (x_test is None) != (y_test is None):
            _fail("give both x_test and y_test, or neither")
        splits = {"train": (x_train, y_train), "val": (x_val, y_val)}
        if x_test is not None and y_test is not None:
            splits["test"] = (x_test, y_test)
        checks = AS_GIVEN if slot_classes is None else SLOTTED_AS_GIVEN
        if slot_classes is not None:
            check(task in (None, CLASSIFICATION), f"slot_classes means multi-slot "
                  f"classification, not task={task!r}: drop task or slot_classes")
            task = CLASSIFICATION
        inputs = resolve_inputs(inputs, splits["train"][0], checks)
        num_classes = None if not slot_classes else max(int(c) for c in slot_classes)
        task, width, arrays = validated(splits, task, num_classes, checks, inputs)
        vocab = slot_vocabularies(slot_classes, {s: a[1] for s, a in arrays.items()}, width,
                                  checks)
        x_va, y_va = arrays["val"]
        x_te, y_te = arrays.get("test", (x_va[:0], y_va[:0]))
        return _assembled(name, task, width, (*arrays["train"], x_va, y_va, x_te, y_te),
                          standardize, inputs, vocab)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, task={self.task}, inputs={self.inputs}, "
                f"features={self.feature_shape}, classes={self.num_classes}, "
                f"{f'slots={self.slots}, ' if self.slots else ''}"
                f"train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)})")


def _assembled(name: str, task: str, width: int, arrays: Tuple[np.ndarray, ...],
               standardize: bool, inputs: str, slot_classes: Tuple[int, ...] = ()) -> Dataset:
    """The :class:`Dataset` of validated ``(x_train, y_train, x_val, y_val, x_test, y_test)``,
    standardised with the train split's statistics when ``standardize``."""
    x_tr, y_tr, x_va, y_va, x_te, y_te = arrays
    mean = std = None
    check(not (standardize and inputs == TOKENS),
          "standardize=True does not apply to inputs='tokens' (embedding indices are never "
          "standardised): drop standardize")
    if inputs == PIXELS:  # integers stay as they are: the programs standardise each batch
        mean, std = feature_stats(x_tr) if standardize else _unit_scaling(x_tr)
    elif standardize:
        (x_tr, x_va, x_te), mean, std = _standardise(
            *(np.asarray(a, np.float32) for a in (x_tr, x_va, x_te)))
    return Dataset(name, task, x_tr, y_tr, x_va, y_va, x_te, y_te, width, mean, std,
                   inputs=inputs, slot_classes=slot_classes)


def _unit_scaling(x_train: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    shape = x_train.shape[1:]
    return np.zeros(shape, np.float32), np.ones(shape, np.float32)


def feature_stats(x_train: np.ndarray, chunk: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of ``x_train`` (float32), in float64 over chunks of rows,
    so a uint8 image set is never copied whole as floats. Constant features get std 1.

    Args:
      x_train: the training features ``(n, *feature_shape)``.
      chunk: rows converted to float64 at a time.

    Returns:
      ``(mean, std)``, each of shape ``feature_shape``.
    """
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


def _standardise(x_train: np.ndarray, *others: np.ndarray
                 ) -> Tuple[Tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    # Constant features (e.g. digits' blank corner pixels) keep scale 1 rather than dividing by 0.
    std = np.where(std < 1e-8, 1.0, std)
    scaled = tuple(((a - mean) / std).astype(np.float32) for a in (x_train,) + others)
    return scaled, mean.astype(np.float32), std.astype(np.float32)


def _carve_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int,
                      stratify: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(y)
    if stratify:
        per_class = []
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            per_class.append(idx[:int(round(fraction * len(idx)))])
        val_idx = np.sort(np.concatenate(per_class))
    else:
        val_idx = np.sort(rng.permutation(n)[:int(round(fraction * n))])
    if len(val_idx) == 0 or len(val_idx) == n:
        _fail(f"a validation fraction of {fraction} leaves an empty split of {n} examples: "
              f"use a fraction in (0, 1) or provide x_val, y_val")
    mask = np.zeros(n, bool)
    mask[val_idx] = True
    return x[~mask], y[~mask], x[mask], y[mask]


def make_dataset(name: str, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike,
                 y_test: ArrayLike, *, x_val: Optional[ArrayLike] = None,
                 y_val: Optional[ArrayLike] = None, task: Optional[str] = None,
                 num_classes: Optional[int] = None, val_fraction: float = 0.2, seed: int = 0,
                 standardize: bool = True) -> Dataset:
    """Validates raw arrays and builds a :class:`Dataset`.

    Features are stored as float32 (uint8 images stay uint8); classification
    labels must be 1-D integer class indices (``(n, slots)``: :func:`make_multi_slot_dataset`).
    :meth:`Dataset.from_arrays` runs the same checks on arrays kept as they are.

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
    splits = _splits(x_train, y_train, x_test, y_test, x_val, y_val)
    return _made(name, splits, task, num_classes, CHECKED, val_fraction, seed, standardize)


def make_multi_slot_dataset(name: str, x_train: ArrayLike, y_train: ArrayLike,
                            x_test: ArrayLike, y_test: ArrayLike, *,
                            x_val: Optional[ArrayLike] = None, y_val: Optional[ArrayLike] = None,
                            num_classes: Optional[int] = None,
                            slot_classes: Optional[Sequence[int]] = None,
                            val_fraction: float = 0.2, seed: int = 0,
                            standardize: bool = True) -> Dataset:
    """:func:`make_dataset` of multi-slot classification: int labels ``(n, slots)``, a class
    index per slot (e.g. a caption's fields).

    ``slot_classes`` gives each slot's number of classes (default: ``num_classes``
    for every slot); ``num_classes`` is the largest, :attr:`Dataset.out_dim`
    ``slots * num_classes`` (slot-major). Validation is carved unstratified.
    """
    if slot_classes is not None:
        largest = max((int(c) for c in slot_classes), default=0)
        check(num_classes in (None, largest), f"num_classes={num_classes} but the largest of "
              f"slot_classes is {largest}: drop num_classes")
        num_classes = largest
    splits = _splits(x_train, y_train, x_test, y_test, x_val, y_val)
    return _made(name, splits, CLASSIFICATION, num_classes, SLOTTED, val_fraction, seed,
                 standardize, slot_classes)


def _splits(x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike, y_test: ArrayLike,
            x_val: Optional[ArrayLike], y_val: Optional[ArrayLike]) -> Splits:
    if (x_val is None) != (y_val is None):
        _fail("give both x_val and y_val, or neither (validation is then carved from train)")
    splits = {"train": (x_train, y_train), "test": (x_test, y_test)}
    if x_val is not None and y_val is not None:
        splits["val"] = (x_val, y_val)
    return splits


def _made(name: str, splits: Splits, task: Optional[str], num_classes: Optional[int],
          checks: Checks, val_fraction: float, seed: int, standardize: bool,
          slot_classes: Optional[Sequence[int]] = None) -> Dataset:
    """The dataset of :func:`make_dataset` (``checks``: :data:`CHECKED`) or
    :func:`make_multi_slot_dataset` (:data:`SLOTTED`)."""
    inputs = resolve_inputs(None, splits["train"][0], checks)
    task, width, arrays = validated(splits, task, num_classes, checks, inputs, caller=5)
    vocab = slot_vocabularies(slot_classes, {s: a[1] for s, a in arrays.items()}, width, checks)
    x_tr, y_tr = arrays["train"]
    if "val" in arrays:
        x_va, y_va = arrays["val"]
    else:
        x_tr, y_tr, x_va, y_va = _carve_validation(x_tr, y_tr, val_fraction, seed,
                                                   task == CLASSIFICATION and not vocab)
    return _assembled(name, task, width, (x_tr, y_tr, x_va, y_va, *arrays["test"]), standardize,
                      inputs, vocab)
