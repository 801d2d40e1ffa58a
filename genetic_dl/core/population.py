"""The population: P identically shaped networks as one pytree with leading axis P."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from numpy.typing import ArrayLike

from ..data import Dataset
from ..errors import check, check_choice, unknown
from .learner import Learner, zoo_learner
from .models import ModelSpec, build_model
from .optimizers import (DEFAULT_HPARAMS, HPARAM_NAMES, OPTIMIZERS, OptimizerLike,
                         check_optimizer, make_optimizer)
from .pytree import Params, PyTree

if TYPE_CHECKING:  # stream.py imports this module
    from .stream import Stream

# What a model may be fed: numbers, or integer indices (tokens).
FEATURE_DTYPES = ("float32", "int32")
# Per-member true shapes inside a padded spec (core.padding): layer widths, active blocks.
SHAPE_HPARAMS = ("widths", "depth")


# PyTreeNode's __init__ and replace are stubs: the dataclass it makes of a subclass defines them.
class Population(struct.PyTreeNode):  # pylint: disable=abstract-method
    """An immutable population of P networks of one shape.

    Every array leaf has leading axis P. The static fields (learner,
    optimizer, feature shape, output width) are compile-time configuration;
    everything else is traced, so members can differ in hyperparameters
    without recompiling.

    Attributes:
      params: stacked Flax params, ``{"params": ...}``.
      opt_state: stacked optax states of ``optimizer``.
      hparams: per-member traced hyperparameters, each ``(P,)``: the named
        optimizers' ``learning_rate, weight_decay, momentum`` and the zoo's
        ``dropout``, or whatever names a user's optimizer function reads.
      keys: ``(P, 2)`` uint32 PRNG keys, one stream per member.
      ids: ``(P,)`` int32 member ids (children get fresh ids).
      failed: ``(P,)`` bool, set when a member's loss went NaN/inf.
      learner, optimizer, feature_shape, out_dim: static configuration.
      collections: stacked mutable collections (e.g. ``batch_stats``),
        updated by training, used by evaluation, never mutated by the GA.
      feature_dtype: static, the dtype the model is fed: ``"float32"``, or
        ``"int32"`` for token indices (``Dataset(inputs="tokens")``).
    """
    params: Params
    opt_state: PyTree
    hparams: Dict[str, jax.Array]
    keys: jax.Array
    ids: jax.Array
    failed: jax.Array
    learner: Learner = struct.field(pytree_node=False)
    optimizer: OptimizerLike = struct.field(pytree_node=False)
    feature_shape: Tuple[int, ...] = struct.field(pytree_node=False)
    out_dim: int = struct.field(pytree_node=False)
    collections: PyTree = struct.field(default_factory=dict)
    feature_dtype: str = struct.field(pytree_node=False, default="float32")

    @property
    def spec(self) -> Optional[ModelSpec]:
        """The zoo spec of the members, or ``None`` for a user's model."""
        return self.learner.spec

    @property
    def size(self) -> int:
        """Number of members P."""
        return int(self.ids.shape[0])

    @property
    def model(self) -> Any:
        """The Flax module shared by all members."""
        return self.learner.module

    def member(self, i: int) -> Params:
        """Params of member ``i`` (no leading axis)."""
        return index_members(self.params, i)


def raw_key(key: jax.Array) -> jax.Array:
    """A ``uint32`` key array from a typed ``jax.random.key`` or a raw key."""
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _per_member(name: str, value: Any, size: int) -> jax.Array:
    value = np.asarray(value, np.float32)
    if value.ndim == 0:
        value = np.full((size,), value, np.float32)
    if value.shape != (size,):
        raise ValueError(f"hyperparameter {name!r} has shape {value.shape}: give a scalar "
                         f"or one value per member, shape ({size},)")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"hyperparameter {name!r} has NaN/inf values: give finite ones")
    return jnp.asarray(value)


def _resolve_hparams(optimizer: OptimizerLike, size: int,
                     hparams: Optional[Mapping[str, Union[float, np.ndarray]]],
                     spec: Optional[ModelSpec]) -> Dict[str, jax.Array]:
    hparams = dict(hparams or {})
    if callable(optimizer):
        return _resolve_user_hparams(size, hparams, spec)
    for name in hparams:
        if name not in HPARAM_NAMES and name not in SHAPE_HPARAMS:
            unknown("hyperparameter", name, (*HPARAM_NAMES, *SHAPE_HPARAMS))
    defaults = dict(DEFAULT_HPARAMS[optimizer], dropout=spec.dropout if spec else 0.0)
    out = {name: _per_member(name, hparams.get(name, defaults[name]), size)
           for name in HPARAM_NAMES}
    out.update(_resolve_shape(hparams, size, spec))
    if spec is None and np.any(np.asarray(out["dropout"]) > 0):
        raise ValueError("per-member dropout is a zoo feature: a user's module keeps its own "
                         "dropout rate")
    if spec is not None and np.any(np.asarray(out["dropout"]) > 0) and spec.dropout == 0:
        raise ValueError("per-member dropout > 0 needs dropout layers: build the spec with "
                         "dropout > 0 (e.g. MLPSpec(dropout=0.1))")
    if np.any(np.asarray(out["dropout"]) >= 1) or np.any(np.asarray(out["dropout"]) < 0):
        raise ValueError("dropout rates must be in [0, 1)")
    if np.any(np.asarray(out["learning_rate"]) <= 0):
        raise ValueError("learning rates must be positive")
    return out


def _resolve_user_hparams(size: int, hparams: Dict[str, Any],
                          spec: Optional[ModelSpec]) -> Dict[str, jax.Array]:
    """An optimizer function's hyperparameters: the user's names, as given."""
    if spec is not None and "dropout" not in hparams:
        hparams["dropout"] = spec.dropout
    out = {k: _per_member(k, v, size) for k, v in sorted(hparams.items())
           if k not in SHAPE_HPARAMS}
    out.update(_resolve_shape(hparams, size, spec))
    return out


def _resolve_shape(hparams: Mapping[str, Any], size: int,
                   spec: Optional[ModelSpec]) -> Dict[str, jax.Array]:
    """The padded members' true shapes among ``hparams``: widths and depth."""
    out = {}
    if "widths" in hparams:
        out["widths"] = _resolve_widths(hparams["widths"], size, spec)
    if "depth" in hparams:
        blocks = getattr(spec, "blocks", 0)
        check(blocks > 0, "a per-member depth needs residual blocks: build the spec with "
              "blocks > 0 (e.g. MLPSpec(blocks=2))")
        depth = _per_member("depth", hparams["depth"], size)
        check(bool(np.all((np.asarray(depth) >= 0) & (np.asarray(depth) <= blocks)
                          & (np.asarray(depth) == np.round(np.asarray(depth))))),
              f"depth must be a whole number of blocks in [0, {blocks}]")
        out["depth"] = depth
    return out


def _resolve_widths(widths: Any, size: int, spec: Optional[ModelSpec]) -> jax.Array:
    padded = getattr(spec, "hidden", None) or getattr(spec, "filters", None)
    if padded is None:
        raise ValueError("per-member widths need an MLP or CNN spec (RNNs are not padded)")
    widths = np.asarray(widths, np.float32)
    if widths.shape != (size, len(padded)):
        raise ValueError(f"widths has shape {widths.shape}: give one width per member and "
                         f"layer, shape ({size}, {len(padded)})")
    if np.any(widths < 1) or np.any(widths > np.asarray(padded)):
        raise ValueError(f"widths must be in [1, {list(padded)}] (the padded spec's widths)")
    return jnp.asarray(widths)


def init_population(key: jax.Array, model: Union[ModelSpec, Learner],
                    data: Union[Dataset, Stream, Tuple[Any, ...]], size: int,
                    optimizer: OptimizerLike = "adam",
                    hparams: Optional[Mapping[str, Any]] = None) -> Population:
    """Creates a population by mapping the model's init over split keys.

    Args:
      key: a PRNG key; member i's init and training stream derive from
        ``fold_in(key, i)`` alone, so member i is the same whatever ``size``.
      model: a zoo spec (``MLPSpec``...) or a :class:`~genetic_dl.Learner`
        (``Learner.from_linen(module, loss=...)``), shared by all members.
      data: a :class:`Dataset`, a :class:`~genetic_dl.Stream` (a Learner's
        input shape and dtype are read from its first validation batch:
        integer ``x`` is fed as int32 tokens), ``(feature_shape, out_dim)``
        (float32 inputs) or ``(feature_shape, out_dim, "int32")`` for tokens.
      size: number of members P.
      optimizer: a key of :data:`~genetic_dl.core.optimizers.OPTIMIZERS`, or a
        function ``hparams -> optax.GradientTransformation`` of one member's
        traced hyperparameter scalars (names of your choosing).
      hparams: per-member hyperparameters, each a scalar or a ``(P,)`` array;
        missing ones take the named optimizer's defaults (dropout: the spec's).
        Optional ``widths``, ``(P, layers)``: each member's true layer widths
        inside the spec's padded ones (:mod:`genetic_dl.core.padding`); and
        ``depth``, ``(P,)``: how many of the spec's residual blocks are active.

    Returns:
      A :class:`Population` of ``size`` members.

    Raises:
      ValueError: an unknown optimizer, hyperparameters the optimizer needs
        but were not given, model outputs that do not fit the loss, or (a
        Learner on a Dataset or Stream) a loss that is NaN/inf on a sample
        batch with member 0's initial weights, e.g. an output layer narrower
        than the classes.
    """
    if not callable(optimizer) and optimizer not in OPTIMIZERS:
        unknown("optimizer", optimizer, OPTIMIZERS,
                "or pass a function hparams -> optax.GradientTransformation")
    if size < 1:
        raise ValueError(f"population size must be at least 1, got {size}")
    feature_shape, out_dim, dtype, sample, note = _data_shape(model, data)
    if isinstance(model, Learner):
        learner = model
    elif hasattr(model, "family"):
        check(dtype == "float32", "a zoo spec takes float features, not int32 tokens: wrap a "
              "flax module with an nn.Embed in gdl.Learner.from_linen(module, loss=...)")
        _check_slots(model, data)
        build_model(model, feature_shape, out_dim)  # validates the spec against the features
        learner = zoo_learner(model, feature_shape, out_dim)
    else:
        raise ValueError(f"model must be a zoo spec (MLPSpec, CNNSpec, RNNSpec) or a "
                         f"genetic_dl.Learner, got {type(model).__name__}: wrap a flax module "
                         f"with gdl.Learner.from_linen(module, loss=...)")
    hp = _resolve_hparams(optimizer, size, hparams, learner.spec)
    key = raw_key(key)
    keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(size))
    dummy = jax.ShapeDtypeStruct((1,) + tuple(feature_shape), jnp.dtype(dtype))
    checked = sample if learner.spec is None else None  # a user's learner, with a sample
    if checked is not None or callable(optimizer):
        first = jax.tree_util.tree_map(lambda v: v[0], hp)
        params, collections = jax.eval_shape(learner.init, keys[0], dummy)
        if checked is not None:
            learner.check(params, collections, jax.tree_util.tree_map(jnp.asarray, checked),
                          first, note)
        check_optimizer(optimizer, first, params)
    population = _init(keys, hp, optimizer, feature_shape, out_dim, learner, dtype)
    if checked is not None:  # concrete: a NaN loss at initialisation fails every member, silently
        classes = out_dim if isinstance(data, Dataset) and data.is_classification else None
        learner.check_loss(population.params, population.collections, checked,
                           population.hparams, classes)
    return population


def _check_slots(spec: ModelSpec, data: Any) -> None:
    """Raises ``ValueError`` unless the zoo ``spec`` predicts what ``data``'s labels hold: the
    caption family one class per slot of the dataset's ``slot_classes``, the others one label."""
    slot_classes = getattr(data, "slot_classes", ())
    if spec.family != "caption":
        check(not slot_classes, f"the {spec.family} model predicts one label per example, this "
              f"dataset has several (caption slots): use --model caption (CaptionSpec("
              f"slot_classes=data.slot_classes)), or wrap a flax module whose loss reads "
              f"(n, slots) labels in gdl.Learner.from_linen(module, loss=...)")
        return
    if isinstance(data, Dataset):
        check(bool(slot_classes), "the caption model predicts caption slots, (n, slots) labels, "
              "but this dataset has one label per example: use --model frames")
        check(tuple(getattr(spec, "slot_classes")) == tuple(slot_classes),
              f"the caption model's slot_classes {list(getattr(spec, 'slot_classes'))} are not "
              f"the dataset's {list(slot_classes)}: build it with "
              f"CaptionSpec(slot_classes=data.slot_classes)")


def _data_shape(model: Any, data: Any) -> Tuple[Tuple[int, ...], int, str,
                                                Optional[Dict[str, np.ndarray]], str]:
    """``(feature_shape, out_dim, feature dtype, sample batch or None, note on its labels)``
    of ``init_population``'s ``data``."""
    if isinstance(data, Dataset):
        return (data.feature_shape, data.out_dim, data.feature_dtype, _dataset_sample(data),
                _labels_note(data.y_train, "y_train", data.task))
    if isinstance(data, tuple) and len(data) in (2, 3):
        dtype = np.dtype(data[2]).name if len(data) == 3 else "float32"
        check_choice("feature dtype", dtype, FEATURE_DTYPES)
        return tuple(data[0]), int(data[1]), dtype, None, ""
    if callable(getattr(data, "first_batch", None)):  # a Stream (its module imports this one)
        if not isinstance(model, Learner):
            raise ValueError("a zoo spec on a Stream needs its output width: pass data as "
                             "(feature_shape, out_dim), e.g. ((28, 28), 10)")
        first = {k: np.asarray(v) for k, v in data.first_batch("val").items()}
        rows = _sample_rows(first.get("y"), len(first["x"]))
        dtype = "int32" if np.issubdtype(first["x"].dtype, np.integer) else "float32"
        note = _labels_note(first["y"], "the Stream's y", None) if "y" in first else ""
        return (tuple(first["x"].shape[1:]), 0, dtype, {k: v[rows] for k, v in first.items()},
                note)
    raise ValueError(f"data must be a Dataset, a Stream or (feature_shape, out_dim), got "
                     f"{type(data).__name__}")


def _sample_rows(y: Optional[np.ndarray], n: int) -> np.ndarray:
    """The first two rows, and the row of the largest class index when ``y`` holds class
    indices: an output layer too narrow for it gives a NaN loss on that row only."""
    rows = list(range(min(2, n)))
    if y is not None and y.ndim == 1 and np.issubdtype(y.dtype, np.integer) and len(y):
        rows.append(int(np.argmax(y)))
    return np.asarray(rows)


def _dataset_sample(data: Dataset) -> Dict[str, np.ndarray]:
    """A few training rows with the largest class index of train and val among them."""
    xs, ys = [], []
    for split in ("train", "val"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        rows = _sample_rows(np.asarray(y), len(y))
        if split == "val":  # train's first rows are enough
            rows = rows[2:]
        xs.append(np.asarray(x[rows]))
        ys.append(np.asarray(y[rows]))
    return {"x": data.model_inputs(np.concatenate(xs)), "y": np.concatenate(ys)}


def _labels_note(y: Any, name: str, task: Optional[str]) -> str:
    """The labels as given (dtype, shape, task), for errors of a loss that does not fit."""
    y = np.asarray(y)
    device = jax.dtypes.canonicalize_dtype(y.dtype)
    note = f"{name} is {y.dtype}" + (f" ({device} on the device)" if device != y.dtype else "")
    note += f" of shape {y.shape}"
    if task == "regression":
        note += (", taken as regression targets: for classes pass task='classification' "
                 "(or integer labels)")
    elif task is not None:
        note += f", taken as {task} labels"
    return note


@functools.lru_cache(maxsize=256)
def _init_fn(learner: Learner, optimizer: OptimizerLike, feature_shape: Tuple[int, ...],
             out_dim: int, feature_dtype: str
             ) -> Callable[[jax.Array, Dict[str, jax.Array]], Tuple]:
    # Cached so that a second population of the same shape does not recompile its init.
    del out_dim  # part of the cache key only
    dummy = jnp.zeros((1,) + tuple(feature_shape), jnp.dtype(feature_dtype))

    def one(key_h: Tuple[jax.Array, Dict[str, jax.Array]]) -> Tuple:
        key, h = key_h
        k_init, k_train = jax.random.split(key)
        params, collections = learner.init(k_init, dummy)
        return params, make_optimizer(optimizer, h).init(params), k_train, collections
    # One member at a time, not vmap: a vmapped orthogonal init (LSTM/GRU
    # recurrent kernels) becomes batched QR custom calls, and jaxlib's LAPACK
    # kernels fan a batch out onto the intra-op thread pool they already run
    # on and block on it; when every worker blocks so, the process deadlocks
    # (benchmarks/xla_qr_deadlock.py). A batch of one runs inline.
    return jax.jit(lambda keys, hp: jax.lax.map(one, (keys, hp)))


def _init(keys: jax.Array, hp: Dict[str, jax.Array], optimizer: OptimizerLike,
          feature_shape: Tuple[int, ...], out_dim: int, learner: Learner,
          feature_dtype: str = "float32") -> Population:
    init = _init_fn(learner, optimizer, tuple(feature_shape), int(out_dim), feature_dtype)
    params, opt_state, train_keys, collections = init(keys, hp)
    size = keys.shape[0]
    return Population(params=params, opt_state=opt_state, hparams=hp, keys=train_keys,
                      ids=jnp.arange(size, dtype=jnp.int32), failed=jnp.zeros(size, bool),
                      learner=learner, optimizer=optimizer, feature_shape=tuple(feature_shape),
                      out_dim=int(out_dim), collections=collections, feature_dtype=feature_dtype)


@jax.jit
def _index_leaves(leaves: list, index: jax.Array) -> list:
    return [x[index] for x in leaves]


def index_members(tree: Any, index: Union[int, ArrayLike]) -> Any:
    """``x[index]`` of every leaf, as one program that has finished when it returns.

    On members sharded over several CPU devices an index is a collective. Leaf by
    leaf, many small collective programs would be in flight at once, and XLA's
    CPU runtime can then hold every thread of its pool in one program's
    rendezvous while the other programs' parts wait for a thread: the process
    aborts after 40 s. One program, waited for, leaves nothing in flight.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = jax.block_until_ready(_index_leaves(leaves, jnp.asarray(index)))
    return jax.tree_util.tree_unflatten(treedef, out)


def take(population: Population, index: ArrayLike) -> Population:
    """Members ``index`` (int array) of ``population``, as a new population."""
    return index_members(population, index)


def concat(*populations: Population) -> Population:
    """Stacks populations of the same static configuration along axis 0."""
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *populations)
