"""The checks every dataset passes: features, labels, task and output width of its splits.

:func:`validated` is the one validation of :func:`~genetic_dl.data.dataset.make_dataset`
and :meth:`~genetic_dl.data.dataset.Dataset.from_arrays`; :class:`Checks` holds how
they differ.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

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
SLOTTED_AS_GIVEN = Checks(float_features=False, class_indices=True,
                          class_slots=True)  # Dataset.from_arrays(slot_classes=...)

Splits = Mapping[str, Tuple[Any, Any]]


def _resolve_task(task: Optional[str], y_train: ArrayLike, caller: int) -> str:
    """``task``, or its guess from the label dtype (integers: classification), checked.

    Whole-number float labels guessed as regression targets get a warning (at
    stack level ``caller``: the user's call): they may well be class indices.
    """
    if task is None:
        y = np.asarray(y_train)
        task = CLASSIFICATION if np.issubdtype(y.dtype, np.integer) else REGRESSION
        if (np.issubdtype(y.dtype, np.floating) and y.ndim == 1 and y.size
                and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            warnings.warn(f"y_train is {y.dtype} with whole-number values: taken as regression "
                          f"targets because the labels are floats; for classes pass "
                          f"task='classification' (or integer labels)", UserWarning,
                          stacklevel=caller)
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


def resolve_inputs(inputs: Optional[str], x_train: Any, checks: Checks) -> str:
    """``inputs``, or its guess from ``x_train``'s dtype, checked against it (:class:`Checks`).

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
              f"class indices (use y.argmax(-1) for one-hot labels; for a class index per slot "
              f"give each slot's classes: make_multi_slot_dataset, or slot_classes in an .npz)")
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


def validated(splits: Splits, task: Optional[str], num_classes: Optional[int],
              checks: Checks, inputs: str = FEATURES, caller: int = 4
              ) -> Tuple[str, int, Dict[str, Tuple[np.ndarray, np.ndarray]]]:
    """The one validation of a dataset's splits.

    Args:
      splits: ``{split: (x, y)}``, ``"train"`` among them.
      task: the task, or ``None`` to guess it from ``y_train``'s dtype.
      num_classes: the classes of class-index labels, or ``None`` to count them.
      checks: :data:`CHECKED`, :data:`AS_GIVEN` or a slotted one.
      inputs: how the features are fed (:func:`resolve_inputs`).
      caller: the ``stacklevel`` of a warning about the task: the user's call
        (4: the caller of the function that called this one).

    Returns:
      ``(task, output width, {split: (x, y)})`` with the arrays as stored.
    """
    task = _resolve_task(task, splits["train"][1], caller)
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


def slot_vocabularies(slot_classes: Optional[Sequence[int]], labels: Mapping[str, np.ndarray],
                      num_classes: int, checks: Checks) -> Tuple[int, ...]:
    """Each slot's number of classes, checked against the labels of every split.

    Args:
      slot_classes: the slots' vocabulary sizes as given, or ``None``.
      labels: ``{split: labels}`` as validated.
      num_classes: the classes of the labels (the largest vocabulary).
      checks: the labels are slots when ``checks.class_slots``.

    Returns:
      ``()`` for labels that are not slots; else ``slot_classes``, or
      ``num_classes`` for every slot when it is ``None``.
    """
    if not checks.class_slots:
        return ()
    slots = labels["train"].shape[1]
    if slot_classes is None:
        return (int(num_classes),) * slots
    vocab = tuple(int(c) for c in slot_classes)
    check(len(vocab) == slots and min(vocab) >= 1,
          f"slot_classes {list(vocab)} must give a positive number of classes for each of the "
          f"{slots} label columns")
    for split, y in labels.items():
        over = np.flatnonzero((y >= np.asarray(vocab)).any(0))
        if len(over):
            col = int(over[0])
            _fail(f"y_{split} has class {int(y[:, col].max())} in slot {col}, whose vocabulary "
                  f"has {vocab[col]} classes (slot_classes): relabel that slot to "
                  f"0..{vocab[col] - 1} or raise its slot_classes")
    return vocab
