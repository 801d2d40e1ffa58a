"""Population training and evaluation: one jitted program for all members.

``train`` runs whole epochs inside one XLA program: ``lax.scan`` over epochs
and minibatches, ``vmap`` over members, the population axis split over the
devices (``shard_map``) and, on CPU, each device's members trained in chunks
that fit its cache (:func:`chunk_members`). Each member shuffles with its own key
and uses its own traced hyperparameters, so member i's result depends only on
its own key and hyperparameters, and a diverging member never touches the
others.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, Tuple, Union, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import local_members
from . import memory
from . import sharding
from ..data import Dataset
from ..errors import check, check_choice
from .learner import Learner, maximized, zoo_learner
from .caption_metrics import caption_metric_names, caption_metrics
from .metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, compute_metrics
from .optimizers import make_optimizer
from .population import Population
from .pytree import Params, PyTree
from .step import Carry, member_step
from .stream import MeshArg, Stream, evaluate_stream, train_stream

History = Dict[str, jax.Array]
# Features on the host or on the devices.
Features = Union[np.ndarray, jax.Array]
# ``(x_train, y_train, x_val, y_val, mean, std)``: what one member trains on.
TrainData = Tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]
# Validation, evaluation and prediction run the members over batches of at most this
# many examples (fewer for big models: memory.eval_rows): memory holds P x batch
# activations (a CNN's im2col patches included), not P x the whole split. Smaller
# splits run whole.
EVAL_BATCH = 1024
# Splits longer than this many rows are evaluated chunk by chunk from the host, so
# memory holds one chunk of inputs (not a copy of the split per device).
HOST_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class Between:
    """What runs among the members between rounds of epochs, inside the training program.

    Attributes:
      period: epochs per round; the last round is shorter when it does not divide
        the epochs, and ``apply`` runs after every round, the last included.
      apply: ``apply(population, arg) -> population`` over the whole (sharded)
        population, jittable; a module-level function, so that the program compiles
        once for it.
    """
    period: int
    apply: Callable[[Population, jax.Array], Population]


def round_lengths(epochs: int, period: int) -> List[int]:
    """The epochs of each round of ``epochs`` in rounds of ``period``."""
    return [period] * (epochs // period) + ([epochs % period] if epochs % period else [])


def _eval_batch(population: Population) -> int:
    return memory.eval_rows(population.learner, population.feature_shape, population.size,
                            memory.hparam_shapes(population), EVAL_BATCH,
                            dtype=population.feature_dtype)


def _prep(mean: jax.Array, std: jax.Array, scaled: bool,
          dtype: str) -> Callable[[jax.Array], jax.Array]:
    """Stored inputs to what the model takes, inside the program: raw pixels standardised
    to float32, anything else cast to ``dtype`` (int32 tokens stay integers)."""
    if scaled:
        return lambda v: (v.astype(jnp.float32) - mean) / std
    return lambda v: v.astype(dtype)


def _member_train(population: Population, params: Params, opt_state: PyTree,
                  collections: PyTree, hp: Dict[str, jax.Array], key: jax.Array,
                  data: TrainData, *, epochs: int, batch_size: int, scaled: bool = False,
                  eval_batch: int = 1024) -> Tuple[Params, PyTree, PyTree, jax.Array, History]:
    """Trains one member (called under vmap); ``data = (x, y, xv, yv, mean, std)``."""
    x, y, xv, yv, mean, std = data
    learner = population.learner
    prep = _prep(mean, std, scaled, population.feature_dtype)
    tx = make_optimizer(population.optimizer, hp)
    n = x.shape[0]
    steps = n // batch_size

    def step(carry: Carry, idx: jax.Array) -> Tuple[Carry, Tuple[jax.Array, jax.Array]]:
        return member_step(population, tx, hp, carry, {"x": prep(x[idx]), "y": y[idx]})

    def epoch(carry: Carry, _: None) -> Tuple[Carry, History]:
        p, s, c, k = carry
        k, k_perm = jax.random.split(k)
        order = jax.random.permutation(k_perm, n)[:steps * batch_size].reshape(steps, batch_size)
        (p, s, c, k), (losses, scores) = jax.lax.scan(step, (p, s, c, k), order)
        val = {"x": xv, "y": yv}
        out = learner.apply_eval_batched(p, c, xv, hp, eval_batch, prep)
        record = {"train_loss": losses.mean(), "train_score": scores.mean(),
                  "val_loss": learner.loss(out, val), "val_score": learner.score_of(out, val)}
        return (p, s, c, k), record

    (params, opt_state, collections, key), hist = jax.lax.scan(
        epoch, (params, opt_state, collections, key), None, length=epochs)
    return params, opt_state, collections, key, hist


def chunk_members(population: Population, local: int, step_bytes: int = 0) -> int:
    """Members per chunk: see :func:`~genetic_dl.core.sharding.member_chunk`; ``step_bytes``
    are one member's training-step values (:func:`~genetic_dl.core.memory.step_bytes`)."""
    per_member = local_members.state_bytes((population.params, population.opt_state))
    return sharding.member_chunk(local, per_member, step_bytes)


def _train_local(population: Population, x: jax.Array, y: jax.Array, xv: jax.Array,
                 yv: jax.Array, mean: jax.Array, std: jax.Array, epochs: int, batch_size: int,
                 scaled: bool, eval_batch: int) -> Tuple:
    """The members of one device, trained by :func:`~genetic_dl.core.local_members.run_members`."""
    fn: Callable[..., Tuple] = functools.partial(
        _member_train, population, epochs=epochs, batch_size=batch_size, scaled=scaled,
        eval_batch=eval_batch)
    args = (population.params, population.opt_state, population.collections,
            population.hparams, population.keys)
    step = memory.step_jaxpr(population.learner, population.optimizer,
                             ((batch_size,) + tuple(x.shape[1:]), population.feature_dtype),
                             ((batch_size,) + tuple(y.shape[1:]), str(y.dtype)),
                             memory.hparam_shapes(population))
    data = (x, y, xv, yv, mean, std)
    return local_members.run_members(
        lambda a: fn(*a, data), args, step,
        local_members.state_bytes((population.params, population.opt_state)))


def _train_round(population: Population, data: TrainData, epochs: int, batch_size: int,
                 mesh: Optional[jax.sharding.Mesh], scaled: bool,
                 eval_batch: int) -> Tuple[Population, History]:
    fn: Callable[..., Tuple] = functools.partial(_train_local, epochs=epochs,
                                                 batch_size=batch_size, scaled=scaled,
                                                 eval_batch=eval_batch)
    if mesh is not None:  # every device chunks its own members
        split, whole = jax.sharding.PartitionSpec(sharding.AXIS), jax.sharding.PartitionSpec()
        # check_vma off: flax's RNN scan starts from a carry that is not marked
        # as varying over "pop"; nothing here differentiates through the map.
        fn = jax.shard_map(fn, mesh=mesh, in_specs=(split,) + (whole,) * 6,
                           out_specs=split, check_vma=False)
    params, opt_state, collections, keys, hist = fn(population, *data)
    diverged = ~jnp.all(jnp.isfinite(hist["train_loss"]) & jnp.isfinite(hist["val_loss"]), axis=1)
    population = population.replace(params=params, opt_state=opt_state, keys=keys,
                                    collections=collections,
                                    failed=population.failed | diverged)
    return population, hist


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size", "mesh", "scaled",
                                             "eval_batch", "between"))
def _train(population: Population, data: TrainData, epochs: int, batch_size: int,
           mesh: Optional[jax.sharding.Mesh] = None, scaled: bool = False,
           eval_batch: int = 1024, between: Optional[Between] = None,
           between_arg: Any = None) -> Tuple[Population, History]:
    lengths = [epochs] if between is None else round_lengths(epochs, between.period)
    hists = []
    for length in lengths:
        population, hist = _train_round(population, data, length, batch_size, mesh, scaled,
                                        eval_batch)
        if between is not None:
            population = between.apply(population, between_arg)
        hists.append(hist)
    if len(hists) == 1:
        return population, hists[0]
    return population, {k: jnp.concatenate([h[k] for h in hists], axis=1) for k in hists[0]}


def _canonical(population: Population) -> Population:
    # A weakly typed value (jnp.full(P, 0.1)) would change the jit signature and recompile.
    hp = {k: jnp.asarray(v, jnp.float32) for k, v in population.hparams.items()}
    return population.replace(hparams=hp, ids=jnp.asarray(population.ids, jnp.int32),
                              failed=jnp.asarray(population.failed, bool))


def _run_sharded(fn: Callable[..., Any], population: Population, *replicated: Any,
                 mesh: MeshArg = "auto", pass_mesh: bool = False) -> Any:
    """Runs ``fn(population, *replicated)`` with members sharded over the devices
    (``fn(..., mesh=mesh)`` with ``pass_mesh``)."""
    population = _canonical(population)
    if isinstance(mesh, str):
        mesh = sharding.population_mesh(size=population.size)
    if pass_mesh:
        fn = functools.partial(fn, mesh=mesh)
    if mesh is None:
        return fn(population, *replicated)
    population, size = sharding.pad_members(population, mesh.devices.size)
    population = sharding.shard_members(population, mesh)
    replicated = sharding.replicate(replicated, mesh)
    out = sharding.gather(fn(population, *replicated))
    return sharding.unpad_members(out, size)


def _check_batch(batch_size: int, n: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} training examples: "
                         f"use a batch size of at most {n}")


def _check_shape(population: Population, data: Dataset) -> None:
    if tuple(data.feature_shape) != tuple(population.feature_shape) \
            or data.out_dim != population.out_dim \
            or data.feature_dtype != population.feature_dtype:
        raise ValueError(f"the population was built for {population.feature_dtype} features "
                         f"{population.feature_shape} and {population.out_dim} outputs, but "
                         f"{data.name} has {data.feature_dtype} {data.feature_shape} and "
                         f"{data.out_dim}: build it from this dataset")


def train(population: Population, data: Union[Dataset, Stream], epochs: int, *,
          batch_size: int = 64, mesh: MeshArg = "auto", between: Optional[Between] = None,
          between_arg: Any = None) -> Tuple[Population, History]:
    """Trains every member for ``epochs`` epochs on ``data``'s train split.

    Args:
      population: the members to train.
      data: a :class:`Dataset` (the whole epoch in one program) or a
        :class:`~genetic_dl.core.stream.Stream` (one program per batch); training
        uses its train split, the per-epoch record its validation split.
      epochs: whole epochs (static: a new value compiles a new program).
      batch_size: minibatch size (static); the last incomplete batch of each
        shuffled epoch is dropped.
      mesh: a ``"pop"`` mesh, ``None`` for one device, or ``"auto"``: all
        devices (at most one per member) when there are several.
      between, between_arg: rounds of ``between.period`` epochs with
        ``between.apply(population, between_arg)`` after each, all in the one
        program (a Dataset only; ``between_arg`` traced: a new value does not compile).

    Returns:
      ``(population, history)``: the trained population (``failed`` set for
      members whose loss went NaN/inf) and ``(P, epochs)`` arrays
      ``train_loss, train_score, val_loss, val_score`` where score is accuracy
      (classification) or R² (regression).

    Raises:
      MemoryLimitError: before compiling, when the memory model
        (:mod:`genetic_dl.core.memory`) says training will not fit; it names the
        largest population that would.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if isinstance(mesh, str) and population.size > 1:
        sharding.warn_if_one_core_used()
    if isinstance(data, Stream):
        check(between is None, "rounds with an operator between them need a Dataset, not a "
              "Stream: train the rounds one call at a time")
        return train_stream(_canonical(population), data, epochs, mesh=mesh)
    _check_shape(population, data)
    _check_batch(batch_size, len(data.y_train))
    resolved = sharding.population_mesh(size=population.size) if isinstance(mesh, str) else mesh
    memory.check_fits(population, data, batch_size,
                      devices=1 if resolved is None else int(resolved.devices.size))
    fn = functools.partial(_train, epochs=epochs, batch_size=batch_size,
                           scaled=data.raw_inputs, eval_batch=_eval_batch(population),
                           between=between, between_arg=between_arg)
    return _run_sharded(fn, population, (data.x_train, data.y_train, data.x_val, data.y_val,
                                         *data.input_scaling()), mesh=mesh, pass_mesh=True)


def predict(population: Population, x: Features, *, mesh: MeshArg = "auto") -> jax.Array:
    """Outputs of every member on ``x`` (model inputs: float features, or integer tokens
    for an int32 population): logits or predictions, shape ``(P, n, out)``."""
    eval_batch = _eval_batch(population)
    given = np.asarray(x[:1]).dtype
    if population.feature_dtype == "int32" and not np.issubdtype(given, np.integer):
        raise ValueError(f"the population takes int32 token indices but x is {given}: pass "
                         f"the integer tokens")
    if len(x) > HOST_CHUNK:
        return jnp.asarray(_outputs_by_chunk(population, x, NO_SCALING, False, eval_batch, mesh))
    return _run_sharded(functools.partial(_outputs, eval_batch=eval_batch), population,
                        jnp.asarray(x, population.feature_dtype), *NO_SCALING, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("scaled", "eval_batch"))
def _evaluate(population: Population, x: jax.Array, y: jax.Array, mean: jax.Array,
              std: jax.Array, scaled: bool = False,
              eval_batch: int = 1024) -> Dict[str, jax.Array]:
    learner = population.learner

    def one(p: Params, c: PyTree, h: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
        out = learner.apply_eval_batched(p, c, x, h, eval_batch,
                                         _prep(mean, std, scaled, population.feature_dtype))
        return learner.evaluate(out, {"x": x, "y": y})
    return jax.vmap(one)(population.params, population.collections, population.hparams)


@functools.partial(jax.jit, static_argnames=("scaled", "eval_batch"))
def _outputs(population: Population, x: jax.Array, mean: jax.Array, std: jax.Array,
             scaled: bool = False, eval_batch: int = 1024) -> Any:
    learner = population.learner
    prep = _prep(mean, std, scaled, population.feature_dtype)
    return jax.vmap(lambda p, c, h: learner.apply_eval_batched(p, c, x, h, eval_batch, prep))(
        population.params, population.collections, population.hparams)


# The input scaling of features stored as the model sees them.
NO_SCALING = (np.zeros((), np.float32), np.ones((), np.float32))


def _outputs_by_chunk(population: Population, x: Features,
                      scaling: Tuple[np.ndarray, np.ndarray], scaled: bool, eval_batch: int,
                      mesh: MeshArg) -> np.ndarray:
    """Every member's outputs on ``x``, sent to the devices about :data:`HOST_CHUNK`
    rows (whole evaluation batches) at a time, collected on the host."""
    rows = max(eval_batch, HOST_CHUNK - HOST_CHUNK % eval_batch)
    fn = functools.partial(_outputs, scaled=scaled, eval_batch=eval_batch)
    return np.concatenate([np.asarray(_run_sharded(fn, population, x[i:i + rows], *scaling,
                                                   mesh=mesh))
                           for i in range(0, len(x), rows)], 1)


@functools.partial(jax.jit, static_argnames=("learner",))
def _scores(learner: Learner, outputs: jax.Array, y: jax.Array) -> Dict[str, jax.Array]:
    # one member at a time: whole-split metrics (AUC sorts per class) of P members at once
    # would hold P copies of their temporaries
    return jax.lax.map(lambda o: learner.evaluate(o, {"y": y}), outputs)


def _evaluate_in_chunks(population: Population, data: Dataset, split: str, mesh: MeshArg,
                        eval_batch: int) -> Dict[str, jax.Array]:
    """:func:`evaluate` of a split larger than :data:`HOST_CHUNK` rows: the members'
    outputs chunk by chunk (only one chunk of the split on the devices), then the
    metrics of the collected outputs, member by member."""
    x, y = data.split(split)
    outputs = _outputs_by_chunk(population, x, data.input_scaling(), data.raw_inputs, eval_batch,
                                mesh)
    return _scores(population.learner, jnp.asarray(outputs), jnp.asarray(y))


def evaluate(population: Population, data: Union[Dataset, Stream], split: str = "val", *,
             mesh: MeshArg = "auto") -> Dict[str, jax.Array]:
    """Every metric of every member on one split.

    Args:
      population: the members.
      data: the dataset.
      split: ``"val"`` for selection, ``"test"`` only for final reports.
      mesh: a ``"pop"`` mesh, ``None`` for one device, or ``"auto"``: all
        devices (at most one per member) when there are several.

    Returns:
      ``{metric: (P,) array}``: the learner's loss and metrics; for the zoo
      loss, accuracy, precision, recall, f1, auc (classification) or loss,
      mse, mae, r2 (regression); NaN for members whose outputs are not finite.
    """
    if isinstance(data, Stream):
        return evaluate_stream(_canonical(population), data, split)
    _check_shape(population, data)
    x, y = data.split(split)
    if len(y) > HOST_CHUNK:
        return _evaluate_in_chunks(population, data, split, mesh, _eval_batch(population))
    return _run_sharded(functools.partial(_evaluate, scaled=data.raw_inputs,
                                          eval_batch=_eval_batch(population)),
                        population, x, y, *data.input_scaling(), mesh=mesh)


def _zoo_metrics(outputs: jax.Array, y: jax.Array, classification: bool,
                 slot_classes: Tuple[int, ...]) -> Dict[str, jax.Array]:
    """A zoo model's metrics: the caption family's for slots, else the task's."""
    if slot_classes:
        return caption_metrics(outputs, y, slot_classes)
    return compute_metrics(outputs, y, classification)


@functools.partial(jax.jit, static_argnames=("model", "classification", "rows", "slot_classes"))
def _split_metrics(model: nn.Module, params: Params, x: jax.Array, y: jax.Array,
                   classification: bool, rows: int,
                   slot_classes: Tuple[int, ...] = ()) -> Dict[str, jax.Array]:
    # One program: op by op, the metrics' few dozen ops would each compile on first use.
    n = x.shape[0]
    if n <= rows:
        # a module without mutable collections returns only its outputs
        return _zoo_metrics(cast(jax.Array, model.apply(params, x)), y, classification,
                            slot_classes)
    count = -(-n // rows)  # batches of rows, the last padded: memory flat in the split's size
    padded = jnp.concatenate([x, jnp.zeros((count * rows - n,) + x.shape[1:], x.dtype)])
    out = jax.lax.map(lambda xb: model.apply(params, xb),
                      padded.reshape((count, rows) + x.shape[1:]))
    return _zoo_metrics(out.reshape((count * rows,) + out.shape[2:])[:n], y, classification,
                        slot_classes)


def split_metrics(model: nn.Module, params: Params, data: Dataset, split: str) -> Dict[str, float]:
    """Every metric of one network (``model``, a zoo module, with ``params``) on one split,
    as floats (a caption model's: :func:`~genetic_dl.core.caption_metrics.caption_metrics`)."""
    x, y = data.split(split)
    rows = memory.eval_rows(zoo_learner(model.spec, data.feature_shape, data.out_dim),
                            data.feature_shape, 1, at_most=EVAL_BATCH)
    slot_classes = tuple(getattr(model.spec, "slot_classes", ()))
    m = _split_metrics(model, params, jnp.asarray(data.model_inputs(x)), jnp.asarray(y),
                       data.is_classification, rows, slot_classes)
    if slot_classes:
        names = caption_metric_names(len(slot_classes))
    else:
        names = CLASSIFICATION_METRICS if data.is_classification else REGRESSION_METRICS
    return {k: float(m[k]) for k in names}  # jit returns dicts sorted by key


def fitness_from_metrics(metrics: Dict[str, jax.Array], metric: str = "loss",
                         failed: Optional[jax.Array] = None,
                         maximize: Optional[bool] = None) -> jax.Array:
    """Fitness (maximised) from evaluation metrics; NaN marks a failed member.

    Args:
      metrics: output of :func:`evaluate`.
      metric: ``"loss"``/``"mse"``/``"mae"`` (negated) or a score such as
        ``"accuracy"``, ``"f1"``, ``"auc"``, ``"r2"``, or a learner's metric.
      failed: optional ``(P,)`` mask of failed members.
      maximize: whether ``metric`` is maximised; default from its name
        (loss-like names are negated).

    Returns:
      ``(P,)`` float32 fitness.
    """
    check_choice("fitness metric", metric, metrics)
    value = metrics[metric]
    if maximize is None:
        maximize = maximized(metric)
    fit = value if maximize else -value
    fit = jnp.where(jnp.isfinite(fit), fit, jnp.nan)
    if failed is not None:
        fit = jnp.where(failed, jnp.nan, fit)
    return fit.astype(jnp.float32)
