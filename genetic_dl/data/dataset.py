"""A supervised dataset's train / validation / test splits, and the one path that validates them.

Validation is carved out of train with a seeded, stratified split
(classification) so that selection and fitness never see the test split, and
feature standardisation is fitted on the training split only.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ..errors import check, check_choice, fail as _fail

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)
SPLITS = ("train", "val", "test")
# How features are fed: numbers (float32), integer images standardised to float32
# inside the programs, or integer indices (embeddings) fed as int32.
FEATURES = "features"
PIXELS = "pixels"
TOKENS = "tokens"
INPUTS = (FEATURES, PIXELS, TOKENS)
INT32_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train / validation / test arrays of one supervised task.

    Attributes:
      name: a short name for reports.
      task: ``"classification"`` or ``"regression"``.
      x_train, y_train, x_val, y_val, x_test, y_test: numpy arrays. Features are
        float32 with shape ``(n, *feature_shape)`` (integer images and tokens stay
        as given: see ``inputs``); labels are int32 ``(n,)`` for classification
        and float32 ``(n, targets)`` for regression (int32 ``(n, slots)`` if ``slots``).
      num_classes: number of classes (of slots: the largest vocabulary) or regression targets.
      feature_mean, feature_std: the train split's standardisation, if any.
      raw_inputs: the features are pixels stored as given (uint8 images: a
        quarter of float32's memory) and the jitted programs standardise each
        batch with ``feature_mean``/``feature_std``.
      inputs: how the model is fed: ``"features"`` (float32), ``"pixels"``
        (integer images standardised to float32 inside the programs) or
        ``"tokens"`` (integer indices fed as int32, never standardised);
        empty means ``"pixels"`` if ``raw_inputs`` else ``"features"``.
      slots: 0, or the class indices per example (:func:`make_multi_slot_dataset`).
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
    slots: int = 0

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
                    inputs: Optional[str] = None) -> "Dataset":
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

        Returns:
          A :class:`Dataset`.
        """
        if (x_test is None) != (y_test is None):
            _fail("give both x_test and y_test, or neither")
        splits = {"train": (x_train, y_train), "val": (x_val, y_val)}
        if x_test is not None and y_test is not None:
            splits["test"] = (x_test, y_test)
        inputs = _resolve_inputs(inputs, splits["train"][0], AS_GIVEN)
        task, width, arrays = _validated(splits, task, None, AS_GIVEN, inputs)
        x_va, y_va = arrays["val"]
        x_te, y_te = arrays.get("test", (x_va[:0], y_va[:0]))
        return _assembled(name, task, width, (*arrays["train"], x_va, y_va, x_te, y_te),
                          standardize, inputs)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, task={self.task}, inputs={self.inputs}, "
                f"features={self.feature_shape}, classes={self.num_classes}, "
                f"{f'slots={self.slots}, ' if self.slots else ''}"
                f"train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)})")


@dataclasses.dataclass(frozen=True)
class Checks:
    """How :func:`make_dataset` and :meth:`Dataset.from_arrays` differ; every other check
    (lengths, empty splits, NaN/inf, feature shapes, task, output width) is shared.

    Attributes:
      float_features: store features as float32 (integer pixels stay as given);
        otherwise they keep their dtype.
      class_indices: classification labels must be a 1-D vector of integer
        class indices (stored int32) and regression targets are stored float32
        ``(n, targets)``; otherwise labels keep the shape and dtype they have.
      class_slots: classification labels are ``(n, slots)`` class indices.
    """
    float_features: bool
    class_indices: bool
    class_slots: bool = False


CHECKED = Checks(float_features=True, class_indices=True)  # make_dataset
AS_GIVEN = Checks(float_features=False, class_indices=False)  # Dataset.from_arrays
SLOTTED = Checks(float_features=True, class_indices=True, class_slots=True)  # multi-slot
_SLOTS = "multi-slot classification"  # make_multi_slot_dataset's task for make_dataset

Splits = Mapping[str, Tuple[Any, Any]]


def _resolve_task(task: Optional[str], y_train: ArrayLike) -> str:
    """``task``, or its guess from the label dtype (integers: classification), checked.

    Whole-number float labels guessed as regression targets get a warning: they
    may well be class indices.
    """
    if task is None:
        y = np.asarray(y_train)
        task = CLASSIFICATION if np.issubdtype(y.dtype, np.integer) else REGRESSION
        if (np.issubdtype(y.dtype, np.floating) and y.ndim == 1 and y.size
                and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            warnings.warn(f"y_train is {y.dtype} with whole-number values: taken as regression "
                          f"targets because the labels are floats; for classes pass "
                          f"task='classification' (or integer labels)", UserWarning, stacklevel=4)
    check_choice("task", task, TASKS)
    return task


def _as_features(x: Any, name: str) -> np.ndarray:
    """``x`` as an array of examples, checked for shape (not for dtype)."""
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
    return x


def _resolve_inputs(inputs: Optional[str], x_train: Any, checks: Checks) -> str:
    """``inputs``, or its guess from ``x_train``'s dtype, checked against it.

    uint8 features are pixels and floats features; other integers are
    ambiguous (tokens or pixels) unless ``checks`` casts every feature to float32.
    """
    x = _as_features(x_train, "x_train")
    integer = np.issubdtype(x.dtype, np.integer)
    if inputs is None:
        if x.dtype == np.uint8:
            return PIXELS
        if integer and not checks.float_features:
            _fail(f"x_train has integer dtype {x.dtype}: pass inputs='tokens' (embedding "
                  f"indices, fed to the model as int32) or inputs='pixels' (images, "
                  f"standardised to float32); inputs='features' casts them to float32")
        return FEATURES
    check_choice("inputs", inputs, INPUTS)
    check(inputs == FEATURES or integer,
          f"inputs={inputs!r} needs integer features but x_train is {x.dtype}: pass "
          f"inputs='features' for real numbers, or cast indices with x.astype(np.int32)")
    return inputs


def _check_features(x: Any, name: str, checks: Checks, inputs: str) -> np.ndarray:
    x = _as_features(x, name)
    if inputs != FEATURES:  # pixels and tokens: kept as they are
        check(np.issubdtype(x.dtype, np.integer),
              f"{name} has dtype {x.dtype} but inputs={inputs!r} needs integers: give every "
              f"split the same integer dtype")
        if inputs == TOKENS and (x.min() < 0 or x.max() > INT32_MAX):
            _fail(f"{name} has token indices in [{x.min()}, {x.max()}]: tokens index embedding "
                  f"rows and must be in [0, {INT32_MAX}]; map them to 0..vocab-1")
        return x
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        _fail(f"{name} has dtype {x.dtype}: features must be real numbers")
    if checks.float_features:
        x = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.unique(np.nonzero(bad.reshape(len(x), -1))[0])
            _fail(f"{name} contains NaN or inf in {len(rows)} example(s) (first at row "
                  f"{rows[0]}): impute or drop those rows before training")
    return x


def _check_labels(y: Any, n: int, name: str, task: str, num_classes: Optional[int],
                  checks: Checks) -> np.ndarray:
    y = np.asarray(y)
    if y.shape[:1] != (n,):
        _fail(f"{name} has {y.shape[0] if y.ndim else 0} labels for {n} examples: give one "
              f"label per example (features and labels must have the same length)")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        _fail(f"{name} has dtype {y.dtype}: labels must be numbers (map strings to class "
              f"indices with np.unique(y, return_inverse=True))")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        _fail(f"{name} contains NaN or inf labels: drop or impute those rows")
    if task == REGRESSION:
        return y.astype(np.float32).reshape(n, -1) if checks.class_indices else y
    if checks.class_slots and (y.ndim != 2 or y.shape[1] < 1):
        _fail(f"{name} has shape {y.shape}: multi-slot labels are (examples, slots) classes")
    if checks.class_indices and not checks.class_slots and y.ndim != 1:
        _fail(f"{name} has shape {y.shape}: classification labels must be a 1-D vector of "
              f"class indices (use y.argmax(-1) for one-hot labels, or make_multi_slot_dataset "
              f"for a class index per slot)")
    if y.ndim == 1 or checks.class_slots:  # class indices
        if np.any(y != np.round(y)):
            _fail(f"{name} has non-integer values: classification needs integer class "
                  f"indices (or pass task='regression')")
        if checks.class_indices or not np.issubdtype(y.dtype, np.integer):
            y = y.astype(np.int32)
        if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
            classes = "0..C-1" if num_classes is None else f"0..{num_classes - 1}"
            _fail(f"{name} has labels in [{y.min()}, {y.max()}] but the classes are {classes}: "
                  f"relabel to 0..C-1")
    return y


def _output_width(labels: Mapping[str, np.ndarray], task: str, num_classes: Optional[int],
                  checks: Checks) -> int:
    """Classes of class-index labels (of slots too); else the width of one example's labels."""
    y_tr = labels["train"]
    if checks.class_slots:  # the same number of slots in every split
        _output_width(labels, REGRESSION, None, CHECKED)
    if task == CLASSIFICATION and (y_tr.ndim == 1 or checks.class_slots):  # class indices
        if len(np.unique(y_tr)) < 2:
            _fail(f"y_train has a single class ({y_tr[0]}): classification needs at least two")
        if num_classes is None:
            num_classes = int(max(y.max() for y in labels.values())) + 1
        return int(num_classes)
    widths = {int(np.prod(y.shape[1:])) for y in labels.values()}
    if len(widths) > 1:
        _fail(f"labels have a different width in each split {sorted(widths)}: use the same")
    return widths.pop()


def _validated(splits: Splits, task: Optional[str], num_classes: Optional[int],
               checks: Checks, inputs: str = FEATURES
               ) -> Tuple[str, int, Dict[str, Tuple[np.ndarray, np.ndarray]]]:
    """The one validation of a dataset's splits.

    Args:
      splits: ``{split: (x, y)}``, ``"train"`` among them.
      task: the task, or ``None`` to guess it from ``y_train``'s dtype.
      num_classes: the classes of class-index labels, or ``None`` to count them.
      checks: :data:`CHECKED` or :data:`AS_GIVEN`.
      inputs: how the features are fed (:func:`_resolve_inputs`).

    Returns:
      ``(task, output width, {split: (x, y)})`` with the arrays as stored.
    """
    task = _resolve_task(task, splits["train"][1])
    arrays = {}
    for split, (x, y) in splits.items():
        x = _check_features(x, f"x_{split}", checks, inputs)
        arrays[split] = (x, _check_labels(y, len(x), f"y_{split}", task, num_classes, checks))
    shapes = {s: a[0].shape[1:] for s, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        _fail(f"feature shapes differ between splits {shapes}: every split needs the same "
              f"feature shape")
    width = _output_width({s: a[1] for s, a in arrays.items()}, task, num_classes, checks)
    return task, width, arrays


def _assembled(name: str, task: str, width: int, arrays: Tuple[np.ndarray, ...],
               standardize: bool, inputs: str, slots: int = 0) -> Dataset:
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
                   inputs=inputs, slots=slots)


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
    if (x_val is None) != (y_val is None):
        _fail("give both x_val and y_val, or neither (validation is then carved from train)")
    splits = {"train": (x_train, y_train), "test": (x_test, y_test)}
    if x_val is not None and y_val is not None:
        splits["val"] = (x_val, y_val)
    checks = SLOTTED if task == _SLOTS else CHECKED
    inputs = _resolve_inputs(None, x_train, checks)
    task, width, arrays = _validated(splits, CLASSIFICATION if task == _SLOTS else task,
                                     num_classes, checks, inputs)
    x_tr, y_tr = arrays["train"]
    if "val" in arrays:
        x_va, y_va = arrays["val"]
    else:
        x_tr, y_tr, x_va, y_va = _carve_validation(x_tr, y_tr, val_fraction, seed,
                                                   task == CLASSIFICATION and checks == CHECKED)
    return _assembled(name, task, width, (x_tr, y_tr, x_va, y_va, *arrays["test"]), standardize,
                      inputs, y_tr.shape[1] if checks == SLOTTED else 0)


def make_multi_slot_dataset(name: str, x_train: ArrayLike, y_train: ArrayLike,
                            x_test: ArrayLike, y_test: ArrayLike, *,
                            x_val: Optional[ArrayLike] = None, y_val: Optional[ArrayLike] = None,
                            num_classes: Optional[int] = None, val_fraction: float = 0.2,
                            seed: int = 0, standardize: bool = True) -> Dataset:
    """:func:`make_dataset` of multi-slot classification: int labels ``(n, slots)``, a class
    index per slot (e.g. a caption's fields); ``num_classes`` is the largest slot vocabulary,
    :attr:`Dataset.out_dim` ``slots * num_classes``; validation is carved unstratified."""
    return make_dataset(name, x_train, y_train, x_test, y_test, x_val=x_val, y_val=y_val,
                        task=_SLOTS, num_classes=num_classes, val_fraction=val_fraction,
                        seed=seed, standardize=standardize)
