"""How much memory training a population takes, estimated from shapes before compiling.

Peak resident memory of :func:`genetic_dl.train` on a :class:`~genetic_dl.Dataset`
is modelled as

    runtime + devices x data + P x (params + optimizer state + collections)
    + max(members trained at once x one training step's activations,
          members evaluated at once x one evaluation batch's activations)

where the activations of one member are the sum of every value its traced
program computes (the jaxpr of one gradient step, or of one evaluation batch,
im2col patches included): no compile, no allocation. XLA fuses and frees
some of them; the sum errs on the safe side.
The split sizes enter only through ``data``; evaluation runs in fixed-size
batches. ``benchmarks/real_size.py`` compares the model with the peak RSS
measured per arm in its own process.

On a :class:`~genetic_dl.Stream` the data term is the batches in flight instead:
the staged chunks (:mod:`~genetic_dl.core.staging`) in all their copies
(:func:`stream_estimate`, :func:`fit_stream`); evaluation also holds the members'
outputs on the validation split. ``tests/core/test_memory.py`` compares it with
the peak RSS of training.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Iterable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ..data import Dataset
from . import conv_layout
from .learner import Learner
from .optimizers import OptimizerLike, make_optimizer
from .population import Population
from .pytree import Params, PyTree
from .sharding import member_chunk
from .step import member_step

# ``((name, shape), ...)`` of one member's hyperparameters: hashable, for caches.
HparamShapes = Tuple[Tuple[str, Tuple[int, ...]], ...]
# ``(shape, dtype name)`` of a batch's array.
ArraySpec = Tuple[Tuple[int, ...], str]
# ``((key, ArraySpec), ...)`` of one minibatch: hashable, for caches.
BatchSpec = Tuple[Tuple[str, ArraySpec], ...]

GB = 1 << 30
# A JAX process before any population: Python, jaxlib, XLA's compiled code.
RUNTIME_BYTES = 600 << 20
# Overrides the memory budget (GB), e.g. below a machine shared with other jobs.
ENV_LIMIT = "GENETIC_DL_MEMORY_GB"


# Activations of all members' evaluation batches together stay under this many bytes.
EVAL_BUDGET = 256 << 20


class MemoryLimitError(ValueError):
    """A population that will not fit in memory (raised before compiling)."""


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory (bytes) of training a population; see the module docstring.

    Attributes:
      runtime: the process before any population.
      data: the dataset's arrays, once per device holding them; on a Stream, the
        staged batches in flight.
      state: params, optimizer states and collections of all members.
      train_activations: members trained at once x one step's activations.
      eval_activations: members evaluated at once x one evaluation batch's.
      size: the population size P.
    """
    runtime: int
    data: int
    state: int
    train_activations: int
    eval_activations: int
    size: int

    @property
    def total(self) -> int:
        """The estimated peak."""
        return (self.runtime + self.data + self.state
                + max(self.train_activations, self.eval_activations))


def _bytes(avals: Iterable[Any]) -> int:
    return int(sum(np.prod(a.shape, dtype=np.int64) * a.dtype.itemsize for a in avals
                   if hasattr(a, "shape") and hasattr(a, "dtype")))


def _values(jaxpr: Any) -> int:
    """Bytes of every value a jaxpr computes (a scan's body counted once per step)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += _bytes(v.aval for v in eqn.outvars)
        inner = 0
        for param in eqn.params.values():
            subs = param if isinstance(param, (tuple, list)) else (param,)
            for sub in subs:
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    inner = max(inner, _values(sub))
        total += inner * int(eqn.params.get("length", 1) or 1)
    return total


def _resident() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _cgroup_limit() -> Optional[int]:
    """The container's memory limit (cgroup v2 or v1), if any."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return None


def available_bytes() -> Optional[int]:
    """Memory this process may grow to: ``$GENETIC_DL_MEMORY_GB``, else the
    accelerator's limit, else what the process holds now plus the host's
    available memory (``MemAvailable``, capped by a container's limit); ``None``
    when unknown."""
    env = os.environ.get(ENV_LIMIT, "")
    if env:
        try:
            return int(float(env) * GB)
        except ValueError:
            raise ValueError(f"{ENV_LIMIT}={env!r} is not a number of GB, e.g. 8") from None
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return None if limit is None else int(limit)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    host = int(line.split()[1]) * 1024 + _resident()
                    limit = _cgroup_limit()
                    return host if limit is None else min(host, limit)
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclasses.dataclass(frozen=True)
class _LearnerOnly:
    """A population's learner without its arrays: all that a step's shapes need."""
    learner: Learner


@functools.lru_cache(maxsize=128)
def step_bytes(learner: Learner, optimizer: OptimizerLike, x_spec: ArraySpec, y_spec: ArraySpec,
               hp_names: HparamShapes) -> int:
    """Bytes of every value one member's training step computes (its jaxpr, as the
    backend's :mod:`~genetic_dl.core.conv_layout` lowering runs it).

    Args:
      learner, optimizer: the population's.
      x_spec, y_spec: ``(shape, dtype name)`` of one minibatch's inputs and labels.
      hp_names: :func:`hparam_shapes`.
    """
    return batch_step_bytes(learner, optimizer, (("x", x_spec), ("y", y_spec)), hp_names)


@functools.lru_cache(maxsize=128)
def batch_step_bytes(learner: Learner, optimizer: OptimizerLike, batch: BatchSpec,
                     hp_names: HparamShapes) -> int:
    """:func:`step_bytes` of a minibatch of any keys (:func:`batch_step_jaxpr`)."""
    step = batch_step_jaxpr(learner, optimizer, batch, hp_names)
    return jaxpr_bytes(conv_layout.lowered(step, jax.default_backend())[1])


def jaxpr_bytes(jaxpr: Any) -> int:
    """Bytes of every value a (closed) jaxpr computes, a scan's body once per step."""
    return _values(getattr(jaxpr, "jaxpr", jaxpr))


def step_jaxpr(learner: Learner, optimizer: OptimizerLike, x_spec: ArraySpec, y_spec: ArraySpec,
               hp_names: HparamShapes) -> Any:
    """The closed jaxpr of one member's training step (arguments as :func:`step_bytes`)."""
    return batch_step_jaxpr(learner, optimizer, (("x", x_spec), ("y", y_spec)), hp_names)


def batch_step_jaxpr(learner: Learner, optimizer: OptimizerLike, batch: BatchSpec,
                     hp_names: HparamShapes) -> Any:
    """The closed jaxpr of one member's training step on a batch of any keys.

    Args:
      learner, optimizer: the population's.
      batch: ``((key, (shape, dtype name)), ...)`` of one minibatch, ``"x"`` as
        the model is fed.
      hp_names: :func:`hparam_shapes`.
    """
    specs = {k: jax.ShapeDtypeStruct(shape, jnp.dtype(dtype)) for k, (shape, dtype) in batch}
    hp = {k: jax.ShapeDtypeStruct(shape, jnp.float32) for k, shape in hp_names}
    key = jax.random.key_data(jax.random.key(0))
    params, collections = jax.eval_shape(learner.init, jax.random.key(0), specs["x"])
    pop = _LearnerOnly(learner)  # what member_step reads of a population

    def step(p: Params, c: PyTree, h: Any, b: Any) -> Any:
        tx = make_optimizer(optimizer, h)
        return member_step(pop, tx, h, (p, tx.init(p), c, key), b)
    return jax.make_jaxpr(step)(params, collections, hp, specs)


def _abstract_eval_inputs(learner: Learner, feature_shape: Tuple[int, ...],
                          hp_names: HparamShapes, dtype: str) -> Tuple[Any, Any, Any, Any]:
    """Shapes of one member's ``(params, collections, hparams)`` and of an 8-row batch."""
    params, collections = jax.eval_shape(learner.init, jax.random.key(0),
                                         jax.ShapeDtypeStruct((1,) + feature_shape, dtype))
    hp = {k: jax.ShapeDtypeStruct(shape, jnp.float32) for k, shape in hp_names}
    return params, collections, hp, jax.ShapeDtypeStruct((8,) + feature_shape, dtype)


@functools.lru_cache(maxsize=256)
def _row_bytes(learner: Learner, feature_shape: Tuple[int, ...], hp_names: HparamShapes,
               dtype: str = "float32") -> float:
    params, collections, hp, x = _abstract_eval_inputs(learner, feature_shape, hp_names, dtype)
    jaxpr = jax.make_jaxpr(lambda p, c, h, xb: learner.apply_eval(p, c, xb, h))(
        params, collections, hp, x).jaxpr
    return _values(jaxpr) / 8


def hparam_shapes(population: Population) -> HparamShapes:
    """``((name, shape), ...)`` of one member's hyperparameters (hashable)."""
    return tuple((k, tuple(np.shape(v)[1:])) for k, v in sorted(population.hparams.items()))


def eval_budget() -> int:
    """The evaluation activation budget: EVAL_BUDGET on CPU; on an accelerator a
    sixteenth of its memory (large batches keep it busy)."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return EVAL_BUDGET
    limit = (device.memory_stats() or {}).get("bytes_limit")
    return EVAL_BUDGET if not limit else max(EVAL_BUDGET, int(limit) // 16)


def eval_rows(learner: Learner, feature_shape: Tuple[int, ...], members: int,
              hp_names: HparamShapes = (), at_most: int = 1024,
              budget: Optional[int] = None, dtype: str = "float32") -> int:
    """Rows per evaluation batch: as many as keep ``members`` members' activations
    under ``budget`` bytes (a multiple of 32, between 32 and ``at_most``).

    Small models get ``at_most`` rows (splits that small run whole); a CNN on
    28x28 images gets fewer, so that validation memory stays flat in both the
    split's size and the population's.

    Args:
      learner: the members' :class:`~genetic_dl.Learner`.
      feature_shape: shape of one example.
      members: members evaluated at once.
      hp_names: ``((name, shape), ...)`` of one member's hyperparameters
        (:func:`hparam_shapes`).
      at_most, budget: the largest batch, and the activation budget in bytes
        (default :func:`eval_budget`).
      dtype: the dtype the model is fed (``"int32"`` for tokens).
    """
    per_row = _row_bytes(learner, tuple(feature_shape), tuple(hp_names), dtype)
    budget = eval_budget() if budget is None else budget
    rows = int(budget // max(members * per_row, 1.0))
    return int(min(at_most, max(32, rows - rows % 32)))


def _device_bytes(a: np.ndarray) -> int:
    """Bytes of ``a`` on the devices: without x64, 64-bit arrays go there as 32-bit."""
    a = np.asarray(a)
    return int(a.size) * jax.dtypes.canonicalize_dtype(a.dtype).itemsize


def _model(population: Population, data: Dataset, batch_size: int, devices: int,
           eval_batch: int) -> Callable[[int], MemoryEstimate]:
    """``size -> MemoryEstimate`` for populations shaped like ``population``."""
    arrays = [data.x_train, data.y_train, data.x_val, data.y_val]
    data_bytes = devices * sum(_device_bytes(a) for a in arrays)
    leaves = jax.tree_util.tree_leaves(
        (population.params, population.opt_state, population.collections))
    per_member = sum(math.prod(x.shape[1:]) * x.dtype.itemsize for x in leaves if x.ndim)
    hp_names = hparam_shapes(population)
    dtype = population.feature_dtype
    x_spec = ((batch_size,) + tuple(data.feature_shape), dtype)
    y_spec = ((batch_size,) + tuple(np.shape(data.y_train)[1:]), str(data.y_train.dtype))

    def at(size: int) -> MemoryEstimate:
        rows = int(min(len(data.y_val), eval_rows(population.learner, population.feature_shape,
                                                  size, hp_names, eval_batch, dtype=dtype)))
        train = step_bytes(population.learner, population.optimizer, x_spec, y_spec, hp_names)
        evaluate = rows * _row_bytes(population.learner, tuple(population.feature_shape),
                                     hp_names, dtype)
        local = -(-size // devices)
        chunk = member_chunk(local, per_member, train)
        return MemoryEstimate(RUNTIME_BYTES, data_bytes, int(per_member * size),
                              int(train * chunk * devices), int(evaluate * local * devices), size)
    return at


def estimate(population: Population, data: Dataset, batch_size: int, devices: int = 1,
             eval_batch: int = 1024) -> MemoryEstimate:
    """The memory model's estimate for training ``population`` on the Dataset ``data``.

    Args:
      population: the population (its shapes only are read).
      data: a :class:`~genetic_dl.Dataset`.
      batch_size: the training minibatch size.
      devices: devices the members are spread over (each holds the data).
      eval_batch: the largest evaluation batch.

    Returns:
      A :class:`MemoryEstimate`.
    """
    return _model(population, data, batch_size, devices, eval_batch)(population.size)


def fitting(population: Population, data: Dataset, batch_size: int, budget: int, devices: int = 1,
            eval_batch: int = 1024) -> int:
    """The largest population of ``population``'s shape whose estimate fits in ``budget``
    (0: none)."""
    at = _model(population, data, batch_size, devices, eval_batch)
    lo, hi = 0, population.size
    while lo < hi:  # the estimate grows with the size
        mid = (lo + hi + 1) // 2
        if at(mid).total <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_fits(population: Population, data: Dataset, batch_size: int, devices: int = 1,
               budget: Optional[int] = None) -> MemoryEstimate:
    """Raises :class:`MemoryLimitError` when training will not fit in memory.

    Args:
      population, data, batch_size, devices: as :func:`estimate`.
      budget: bytes available (default: :func:`available_bytes`; no check
        when unknown).

    Returns:
      The estimate.
    """
    est = estimate(population, data, batch_size, devices)
    budget = available_bytes() if budget is None else budget
    if budget is not None and est.total > budget:
        fits = fitting(population, data, batch_size, budget, devices)
        raise MemoryLimitError(
            f"a population of {est.size} needs about {est.total / GB:.1f} GB to train on "
            f"{getattr(data, 'name', 'this data')} (data {est.data / GB:.2f} GB, weights and "
            f"optimizer states {est.state / GB:.2f} GB, activations "
            f"{max(est.train_activations, est.eval_activations) / GB:.2f} GB) but "
            f"{budget / GB:.1f} GB is available: use a population of at most {fits}"
            f"{'' if fits else ' (none fits: use a smaller model or batch size)'}, a smaller "
            f"batch size or model, or a Stream for data larger than memory")
    return est


# Members' outputs on a streamed validation split are held this many times at once:
# on the devices, gathered to the host, concatenated, and on a device again to be scored.
OUTPUT_COPIES = 4


@functools.lru_cache(maxsize=256)
def _output_row_bytes(learner: Learner, feature_shape: Tuple[int, ...], hp_names: HparamShapes,
                      dtype: str = "float32") -> float:
    params, collections, hp, x = _abstract_eval_inputs(learner, feature_shape, hp_names, dtype)
    out = jax.eval_shape(lambda p, c, h, xb: learner.apply_eval(p, c, xb, h),
                         params, collections, hp, x)
    return _bytes(jax.tree_util.tree_leaves(out)) / 8


def stream_estimate(population: Population, batch: BatchSpec, devices: int = 1,
                    eval_batch: int = 512, val_rows: int = 0) -> MemoryEstimate:
    """The memory model's estimate for training ``population`` on a Stream, nothing staged.

    Its ``data`` is the batches in flight: :func:`fit_stream` adds those of the
    chosen chunk. Evaluation also holds the members' outputs on the validation
    split (collected to be scored whole), :data:`OUTPUT_COPIES` times.

    Args:
      population: the population (its shapes only are read).
      batch: ``((key, (shape, dtype name)), ...)`` of one member's minibatch,
        ``"x"`` as the model is fed.
      devices: devices the members are spread over.
      eval_batch: the largest evaluation batch (the Stream's).
      val_rows: rows of the validation split (0 when unknown).
    """
    leaves = jax.tree_util.tree_leaves(
        (population.params, population.opt_state, population.collections))
    per_member = sum(math.prod(x.shape[1:]) * x.dtype.itemsize for x in leaves if x.ndim)
    hp_names = hparam_shapes(population)
    shape, dtype, size = tuple(population.feature_shape), population.feature_dtype, population.size
    train = batch_step_bytes(population.learner, population.optimizer, batch, hp_names)
    local = -(-size // devices)
    rows = eval_rows(population.learner, shape, size, hp_names, eval_batch, dtype=dtype)
    evaluate = rows * _row_bytes(population.learner, shape, hp_names, dtype) * local * devices
    per_row = _output_row_bytes(population.learner, shape, hp_names, dtype)
    outputs = OUTPUT_COPIES * size * val_rows * per_row
    return MemoryEstimate(RUNTIME_BYTES, 0, int(per_member * size),
                          int(train * member_chunk(local, per_member, train) * devices),
                          int(evaluate + outputs), size)


def fit_stream(base: MemoryEstimate, step_staged: int, steps: int, adapt: bool,
               slots: Callable[[int], int] = lambda steps: steps, budget: Optional[int] = None,
               name: str = "this stream") -> Tuple[int, MemoryEstimate]:
    """Steps trained per chunk that fit in memory, and the estimate with them staged.

    Args:
      base: :func:`stream_estimate`.
      step_staged: bytes in flight per staged step (every copy of it).
      steps: the steps per chunk wanted.
      adapt: whether fewer steps (at least 1) are staged when ``steps`` do not fit.
      slots: ``steps -> the steps a chunk holds`` (a chunk may hold more than it trains).
      budget: bytes available (default: :func:`available_bytes`; no check when unknown).
      name: the stream's name, for the message.

    Returns:
      ``(steps, estimate)``.

    Raises:
      MemoryLimitError: before compiling, when not even the fewest steps fit.
    """
    budget = available_bytes() if budget is None else budget
    if budget is not None and adapt:
        while steps > 1 and base.total + slots(steps) * step_staged > budget:
            steps = max(1, min(steps - 1, (budget - base.total) // max(step_staged, 1)))
    est = dataclasses.replace(base, data=base.data + slots(steps) * step_staged)
    if budget is not None and est.total > budget:
        raise MemoryLimitError(
            f"a population of {est.size} needs about {est.total / GB:.1f} GB to train on "
            f"{name} (batches in flight {est.data / GB:.2f} GB for {steps} staged step(s), "
            f"weights and optimizer states {est.state / GB:.2f} GB, activations "
            f"{max(est.train_activations, est.eval_activations) / GB:.2f} GB) but "
            f"{budget / GB:.1f} GB is available: use a smaller population, batch size or model")
    return steps, est
