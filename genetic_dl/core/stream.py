"""Data that does not fit in memory: batches streamed from the host.

A :class:`Stream` wraps a function ``make_iter(epoch, seed)`` that yields dicts of
numpy arrays (a torch ``DataLoader`` or ``tf.data``/grain iterator converted to
numpy, a generator over a memory-mapped file). Training stages the batches of
several steps in one chunk and runs them in one jitted program (``lax.scan``
over the steps, ``vmap`` over the members), the next chunk made on a background
thread meanwhile (:mod:`~genetic_dl.core.staging`). Evaluation runs the members
over fixed-size batches and scores the collected outputs (outputs are small:
``P x n x outputs``), so memory holds a few chunks of batches and one batch of
activations, never a whole split.

Independence: by default each member iterates its own stream
(``make_iter(epoch, seed)`` with a seed drawn from the member's key), so members
see their own batch order, as with array data. ``shared=True`` draws one
iterator per epoch and gives every member the same batches, in the same order:
cheaper for an expensive loader, but members then differ only by their init,
hyperparameters and dropout, and a member's result depends on the population's
first member's key rather than on its own alone.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import local_members
from . import memory
from . import sharding
from . import staging
from ..data import Dataset
from .learner import Learner
from .optimizers import make_optimizer
from .population import Population
from .staging import Rows
from .step import member_step

Batch = Dict[str, np.ndarray]
Split = Union[Mapping[str, Any], Callable[[], Iterable[Batch]]]
# A ``"pop"`` mesh, ``None`` for one device, or ``"auto"``: all devices when there are several.
MeshArg = Union[Mesh, None, str]
# ``(mean, std)`` the program standardises staged raw features with, or ``None``.
Scaling = Optional[Tuple[Any, Any]]
# The validation split as one batch, and the scaling its stored "x" takes in the program.
ValBatch = Tuple[Mapping[str, Any], Scaling]


@dataclasses.dataclass(frozen=True)
class Stream:
    """Training batches from ``make_iter(epoch, seed)``; validation and test splits.

    Attributes:
      make_iter: ``make_iter(epoch, seed) -> iterator of {"x": ..., "y": ...}``;
        ``x`` is fed to the model as given: integers as int32 (token indices),
        anything else as float32.
      val: a dict of arrays (evaluated in batches of ``eval_batch``) or a
        callable returning an iterator of batches.
      test: the same, optional (final reports only).
      shared: every member gets the same batches (see the module docstring).
      eval_batch: batch size of evaluation over a dict of arrays.
      name: shown in reports.
      steps_per_dispatch: steps staged and trained per program; ``None``: a fixed
        rule (:func:`~genetic_dl.core.staging.steps_per_chunk`), fewer when memory
        is short. Results are the same bits for any value.
      rows: the training data by row (:meth:`from_dataset` sets it): training then
        gathers every member's batches at once instead of calling ``make_iter``,
        in the same order.
    """
    make_iter: Callable[[int, int], Iterator[Batch]]
    val: Split
    test: Optional[Split] = None
    shared: bool = False
    eval_batch: int = 512
    name: str = "stream"
    steps_per_dispatch: Optional[int] = None
    rows: Optional[Rows] = None

    def __post_init__(self) -> None:
        steps = self.steps_per_dispatch
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps_per_dispatch must be a positive int or None, got {steps!r}")

    def split(self, which: str) -> Split:
        """The ``"val"`` or ``"test"`` split."""
        if which not in ("val", "test"):
            raise ValueError(f"a Stream evaluates 'val' or 'test', not {which!r}")
        found = getattr(self, which)
        if found is None:
            raise ValueError(f"stream {self.name!r} has no {which} split: pass {which}= to Stream")
        return found

    @classmethod
    def from_dataset(cls, data: Dataset, batch_size: int, *, shared: bool = False,
                     eval_batch: int = 512) -> "Stream":
        """A :class:`~genetic_dl.Dataset`'s splits as a Stream, read batch by batch.

        For data larger than memory (a folder of memory-mapped ``.npy`` files):
        nothing is copied up front; each batch is gathered from the stored
        arrays (indices sorted, for the page cache). Training stages the stored
        values and standardises them in the program, as the array path does;
        ``make_iter`` and evaluation standardise on the host. Each member draws
        its own order of ``len(y_train) // batch_size`` full batches per epoch
        (the array path's count).

        Args:
          data: the dataset.
          batch_size: training minibatch size.
          shared: one order for all members (see the module docstring).
          eval_batch: rows per validation and test batch.

        Returns:
          The Stream, named after the dataset.
        """
        n = len(data.y_train)

        def take(index: np.ndarray) -> Batch:
            return {"x": np.asarray(data.x_train[index]), "y": np.asarray(data.y_train[index])}
        rows = Rows(n, int(min(batch_size, n)), take,
                    data.input_scaling() if data.raw_inputs else None)

        def make_iter(epoch: int, seed: int) -> Iterator[Batch]:
            del epoch  # the seed already differs per epoch and member
            for index in rows.order(seed):
                yield {"x": data.model_inputs(data.x_train[index]),
                       "y": np.asarray(data.y_train[index])}

        def split(x: np.ndarray, y: np.ndarray) -> Dict[str, Any]:
            return {"x": _ModelInputs(data, x), "y": np.asarray(y)}
        test = split(data.x_test, data.y_test) if len(data.y_test) else None
        return cls(make_iter, split(data.x_val, data.y_val), test, shared, eval_batch, data.name,
                   rows=rows)

    def first_batch(self, which: str = "val") -> Batch:
        """The first batch of split ``which`` (shapes and a sample for checks)."""
        first = next(iter(self.batches(which)), None)
        if first is None:
            raise ValueError(f"the Stream's {which} split yielded no batch: give it at least one")
        return first

    def batches(self, which: str) -> Iterator[Batch]:
        """The batches of split ``which``."""
        found = self.split(which)
        if callable(found):
            yield from found()
            return
        n = len(found["x"])
        for start in range(0, n, self.eval_batch):
            yield {k: v[start:start + self.eval_batch] for k, v in found.items()}


class _ModelInputs:
    """Rows of stored (e.g. memory-mapped uint8) features, as model inputs when sliced."""

    def __init__(self, data: Dataset, x: np.ndarray):
        self._data, self._x = data, x

    def __len__(self) -> int:
        return len(self._x)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self._data.model_inputs(self._x[index])

    def stored(self, n: int) -> np.ndarray:
        """The first ``n`` rows as stored."""
        return np.asarray(self._x[:n])


def _seeds(keys: np.ndarray) -> np.ndarray:
    """One int seed per member from its PRNG key."""
    raw = np.asarray(keys, np.uint64)
    return ((raw[:, 0] << np.uint64(32)) | raw[:, -1]) % np.uint64(2 ** 63 - 1)


@functools.partial(jax.jit, static_argnums=1)
def _split_keys(keys: jax.Array, epochs: int) -> Tuple[jax.Array, jax.Array]:
    """Members' training keys, and ``(epochs, P, 2)``: member i's data key of each
    epoch, from its own key alone."""
    pair = jax.vmap(jax.random.split)(keys)
    return pair[:, 0], jax.vmap(lambda e: jax.vmap(lambda k: jax.random.fold_in(k, e))(
        pair[:, 1]))(jnp.arange(epochs))


def _prep(population: Population, scaling: Scaling) -> Callable[[jax.Array], jax.Array]:
    """Staged features to what the model takes: raw features standardised to float32,
    anything else as the population was built for (float32, or int32 tokens)."""
    if scaling is None:
        return lambda x: x.astype(population.feature_dtype)
    mean, std = scaling
    return lambda x: (x.astype(jnp.float32) - mean) / std


def _chunk_local(population: Population, chunk: Mapping[str, jax.Array], steps: jax.Array,
                 evaluate: jax.Array, val: Optional[ValBatch], scaling: Scaling,
                 shared: bool, rows: int) -> Tuple:
    """One device's members trained over the first ``steps`` of a chunk's slots, then
    scored on ``val`` when ``evaluate`` (the epoch's last chunk).

    ``steps`` and ``evaluate`` are traced: one program trains any number of its chunk's
    slots (an epoch's last chunk fills fewer), compiled alike whatever the count."""
    prep, learner = _prep(population, scaling), population.learner

    def scores(p: Any, c: Any, h: Any) -> Tuple[jax.Array, jax.Array]:
        if val is None:  # scored batch by batch after the program (evaluate_stream)
            return jnp.zeros(()), jnp.zeros(())
        batch, val_scaling = val
        out = learner.apply_eval_batched(p, c, batch["x"], h, rows,
                                         _prep(population, val_scaling))
        labels = {key: v for key, v in batch.items() if key != "x"}
        return learner.loss(out, labels), learner.score_of(out, labels)

    if isinstance(chunk, staging.Gathered):  # this device's rows, and indices into them
        stored = {key: v[0] for key, v in chunk.rows.items()}

        def fetch(picks: Any, i: jax.Array) -> Dict[str, jax.Array]:
            picked = jax.lax.dynamic_index_in_dim(picks, i, keepdims=False)
            return {key: v[picked] for key, v in stored.items()}
        per_member: Any = chunk.picks
        source: Mapping[str, jax.Array] = stored
        shapes = {key: (chunk.picks.shape[-1],) + v.shape[1:] for key, v in stored.items()}
    else:
        def fetch(picks: Any, i: jax.Array) -> Dict[str, jax.Array]:
            return {key: jax.lax.dynamic_index_in_dim(v, i, keepdims=False)
                    for key, v in picks.items()}
        per_member = source = chunk
        shapes = {key: v.shape[1 if shared else 2:] for key, v in chunk.items()}

    def member(state: Tuple, batches: Any) -> Tuple:
        p, s, c, h, k = state
        tx = make_optimizer(population.optimizer, h)
        length = jax.tree_util.tree_leaves(batches)[0].shape[0]

        def step(i: jax.Array, carry: Tuple) -> Tuple:
            state, losses, scores = carry
            batch = fetch(batches, i)
            state, (loss, score) = member_step(population, tx, h, state,
                                               {**batch, "x": prep(batch["x"])})
            return state, losses.at[i].set(loss), scores.at[i].set(score)
        empty = jnp.zeros(length, jnp.float32)
        (p, s, c, k), loss, score = jax.lax.fori_loop(0, steps, step, ((p, s, c, k), empty, empty))
        scored = jax.eval_shape(scores, p, c, h)
        got = jax.lax.cond(evaluate, scores, lambda *_: jax.tree_util.tree_map(
            lambda a: jnp.zeros(a.shape, a.dtype), scored), p, c, h)
        return (p, s, c, k, loss, score) + tuple(got)
    state = (population.params, population.opt_state, population.collections,
             population.hparams, population.keys)
    x_dtype = "float32" if scaling is not None else population.feature_dtype
    spec = tuple((key, (tuple(shape), x_dtype if key == "x" else str(source[key].dtype)))
                 for key, shape in sorted(shapes.items()))
    step = memory.batch_step_jaxpr(population.learner, population.optimizer, spec,
                                   memory.hparam_shapes(population))
    state_bytes = local_members.state_bytes((population.params, population.opt_state))
    if shared:
        return local_members.run_members(lambda a: member(a, per_member), state, step,
                                         state_bytes)
    return local_members.run_members(lambda a: member(*a), (state, per_member), step,
                                     state_bytes)


@functools.partial(jax.jit, static_argnames=("shared", "rows", "mesh"))
def _train_chunk(population: Population, chunk: Mapping[str, jax.Array], steps: jax.Array,
                 evaluate: jax.Array, val: Optional[ValBatch], scaling: Scaling,
                 shared: bool, rows: int, mesh: Optional[Mesh] = None) -> Tuple:
    fn: Callable[..., Tuple] = functools.partial(_chunk_local, shared=shared, rows=rows)
    if mesh is not None:  # every device trains its own members
        split, whole = PartitionSpec(sharding.AXIS), PartitionSpec()
        fn = jax.shard_map(fn, mesh=mesh,
                           in_specs=(split, whole if shared else split) + (whole,) * 4,
                           out_specs=split, check_vma=False)
    params, opt_state, collections, keys, loss, score, val_loss, val_score = fn(
        population, chunk, steps, evaluate, val, scaling)
    return (population.replace(params=params, opt_state=opt_state, collections=collections,
                               keys=keys), loss, score, {"loss": val_loss, "score": val_score})


def _val_batch(stream: Stream) -> Optional[ValBatch]:
    """The validation split as one batch, scored inside the epoch's last program, when it
    is a dict of at most ``eval_batch`` rows; ``None``: evaluated batch by batch. A
    Dataset's features stay as stored (standardised in the program, as in training)."""
    if not isinstance(stream.val, Mapping) or len(stream.val["x"]) > stream.eval_batch:
        return None
    n = len(stream.val["x"])
    batch = {k: np.asarray(v[:n]) for k, v in stream.val.items()}
    staging.check_batch(batch, None, "val")
    stored = stream.val["x"]
    if isinstance(stored, _ModelInputs) and stream.rows is not None:
        return {**batch, "x": stored.stored(n)}, stream.rows.scaling
    return batch, None


def _model_spec(population: Population, specs: staging.Specs,
                scaling: Scaling) -> memory.BatchSpec:
    """One member's minibatch as the model is fed (for the memory model)."""
    x_dtype = "float32" if scaling is not None else population.feature_dtype
    return tuple((k, (shape, x_dtype if k == "x" else str(dtype)))
                 for k, (shape, dtype) in sorted(specs.items()))


def _first(stream: Stream, seeds: np.ndarray,
           members: int) -> Tuple[staging.Specs, Optional[List[Iterator[Batch]]]]:
    """One member's staged minibatch, and the iterators of epoch 0 (``None`` for rows)."""
    if stream.rows is not None:
        return staging.specs_of(stream.rows.take(stream.rows.order(int(seeds[0]))[0])), None
    first, iters = staging.first_batches(
        [iter(stream.make_iter(0, int(s))) for s in seeds[:1 if stream.shared else members]])
    return staging.specs_of(first), iters


def _estimate(population: Population, stream: Stream, specs: staging.Specs,
              devices: int) -> Tuple[staging.Plan, memory.MemoryEstimate, int]:
    """The run's plan (one step staged), its estimate with nothing staged, and the
    bytes in flight per staged step."""
    size = population.size
    plan = staging.Plan(specs, 0 if stream.shared else size + (-size % devices), size, 1,
                        devices=devices, indexed=stream.rows is not None and not stream.shared)
    val = stream.val if isinstance(stream.val, Mapping) else {}
    scaling = None if stream.rows is None else stream.rows.scaling
    base = memory.stream_estimate(population, _model_spec(population, specs, scaling), devices,
                                  stream.eval_batch, len(val.get("x", ())))
    val_batch = _val_batch(stream)  # on every device while training, when scored there
    if val_batch is not None:
        base = dataclasses.replace(base, data=devices * sum(
            v.size * jax.dtypes.canonicalize_dtype(v.dtype).itemsize
            for v in val_batch[0].values()))
    replicas = devices if stream.shared else 1
    return plan, base, plan.step_bytes * staging.in_flight(replicas)


def _steps(stream: Stream, plan: staging.Plan, base: memory.MemoryEstimate, per_step: int,
           budget: Optional[int] = None) -> Tuple[int, memory.MemoryEstimate]:
    """K by the fixed rule, fewer when memory is short, and the estimate with K staged."""
    wanted = staging.steps_per_chunk(plan.step_bytes, stream.steps_per_dispatch)
    if stream.rows is not None:  # an epoch's steps in chunks of one length
        wanted = staging.even_steps(stream.rows.count // stream.rows.batch_size, wanted)
    return memory.fit_stream(base, per_step, wanted, stream.steps_per_dispatch is None,
                             staging.slots, budget, stream.name)


def estimate_stream(population: Population, stream: Stream, devices: int = 1,
                    steps: Optional[int] = None) -> memory.MemoryEstimate:
    """The memory model's estimate for training ``population`` on ``stream`` (reads one
    batch of the stream).

    Args:
      population: the population (its shapes only are read).
      stream: the Stream.
      devices: devices the members are spread over.
      steps: steps staged per chunk; ``None``: as training stages them (the
        fixed rule, fewer when memory is short: 1 is the least it needs).

    Raises:
      MemoryLimitError: with ``steps=None``, when not even one staged step fits.
    """
    specs, _ = _first(stream, np.zeros(population.size, np.uint64), population.size)
    plan, base, per_step = _estimate(population, stream, specs, devices)
    if steps is None:
        return _steps(stream, plan, base, per_step)[1]
    return dataclasses.replace(base, data=base.data + staging.slots(steps) * per_step)


def _chunks(population: Population, stream: Stream, seeds: np.ndarray,
            mesh: Optional[Mesh]) -> Iterator[Any]:
    """The run's chunks, K steps each (K within the memory budget), and epoch ends."""
    size, devices = population.size, 1 if mesh is None else int(mesh.devices.size)
    specs, iters = _first(stream, seeds[0], size)
    plan, base, per_step = _estimate(population, stream, specs, devices)
    steps, _ = _steps(stream, plan, base, per_step)
    placement = None if mesh is None else NamedSharding(
        mesh, PartitionSpec() if stream.shared else PartitionSpec(sharding.AXIS))
    plan = dataclasses.replace(plan, steps=int(steps), placement=placement)
    if stream.rows is not None:
        return staging.row_chunks(plan, stream.rows, seeds)

    def epochs() -> Iterator[List[Iterator[Batch]]]:
        yield iters or []
        for e in range(1, len(seeds)):
            yield [iter(stream.make_iter(e, int(s)))
                   for s in seeds[e, :1 if stream.shared else size]]
    return staging.iterator_chunks(plan, epochs())


def _epoch_means(chunks: List[Tuple[Any, int]]) -> np.ndarray:
    """``(P,)`` means over an epoch's steps of ``[(values (P, slots), steps), ...]``."""
    return np.concatenate([np.asarray(v)[:, :n] for v, n in chunks], 1).mean(1)


def train_stream(population: Population, stream: Stream, epochs: int,
                 mesh: MeshArg = "auto") -> Tuple[Population, Dict[str, jax.Array]]:
    """Trains every member for ``epochs`` passes over ``stream`` (see :func:`genetic_dl.train`).

    Chunks are dispatched without waiting for the previous one: at most two are in
    the programs (one training, the next queued) while the producer makes a third.

    Raises:
      MemoryLimitError: before compiling, when not even one staged step fits in
        memory next to the population (:func:`~genetic_dl.core.memory.fit_stream`).
    """
    if isinstance(mesh, str):
        mesh = sharding.population_mesh(size=population.size)
    size = population.size
    keys, data_keys = _split_keys(population.keys, epochs)
    seeds = _seeds(np.asarray(data_keys).reshape(-1, 2)).reshape(epochs, size)
    population = population.replace(keys=keys)
    chunks = _chunks(population, stream, seeds, mesh)
    scaling = None if stream.rows is None else stream.rows.scaling
    if mesh is not None:
        population, _ = sharding.pad_members(population, mesh.devices.size)
        population = sharding.shard_members(population, mesh)
    val_batch = _val_batch(stream)
    val_on = None if val_batch is None else sharding.replicate(val_batch, mesh)
    rows = memory.eval_rows(population.learner, population.feature_shape, population.size,
                            memory.hparam_shapes(population), at_most=stream.eval_batch,
                            dtype=population.feature_dtype)
    epoch: Dict[str, List[Tuple[Any, int]]] = {"loss": [], "score": []}
    train: List[Dict[str, List[Tuple[Any, int]]]] = []
    val: List[Dict[str, jax.Array]] = []
    with staging.Prefetch(chunks) as staged:
        for steps, chunk, last in staged:
            population, loss, score, scored = _train_chunk(
                population, chunk, np.int32(steps), np.bool_(last), val_on, scaling,
                shared=stream.shared, rows=rows, mesh=mesh)
            del chunk  # the program holds it until it has trained
            epoch["loss"].append((loss, steps))
            epoch["score"].append((score, steps))
            if last:
                val.append(scored if val_on is not None else
                           evaluate_stream(population, stream, "val", mesh=None, metrics=False))
                train.append(epoch)
                epoch = {"loss": [], "score": []}
            dispatched = [v for e in train + [epoch] for v, _ in e["loss"]]
            if len(dispatched) >= 2:  # the one before this chunk has trained: freed
                dispatched[-2].block_until_ready()
    population = sharding.unpad_members(sharding.gather(population), size)
    hist = {}
    for k in ("loss", "score"):
        hist[f"train_{k}"] = np.stack([_epoch_means(e[k]) for e in train], 1)[:size]
        hist[f"val_{k}"] = np.stack([np.asarray(v[k]) for v in val], 1)[:size]
    diverged = ~np.all(np.isfinite(hist["train_loss"]) & np.isfinite(hist["val_loss"]), axis=1)
    return (population.replace(failed=population.failed | diverged),
            {k: jnp.asarray(hist[k]) for k in ("train_loss", "train_score", "val_loss",
                                               "val_score")})


@functools.partial(jax.jit, static_argnames=("rows",))
def _outputs(population: Population, x: jax.Array, rows: int) -> Any:
    learner = population.learner
    x = x.astype(population.feature_dtype)
    return jax.vmap(lambda p, c, h: learner.apply_eval_batched(p, c, x, h, rows))(
        population.params, population.collections, population.hparams)


@functools.partial(jax.jit, static_argnames=("learner", "metrics"))
def _score(learner: Learner, outputs: Any, batch: Mapping[str, Any],
           metrics: bool) -> Dict[str, jax.Array]:
    if metrics:
        return jax.vmap(lambda o: learner.evaluate(o, batch))(outputs)
    return jax.vmap(lambda o: {"loss": learner.loss(o, batch),
                               "score": learner.score_of(o, batch)})(outputs)


def evaluate_stream(population: Population, stream: Stream, split: str = "val",
                    mesh: MeshArg = "auto", metrics: bool = True) -> Dict[str, jax.Array]:
    """The learner's metrics of every member on a streamed split.

    The members run over the split's batches; their outputs are collected
    (``P x n x outputs``) and scored once, so every metric, AUC and macro F1
    included, equals its value on the whole split. The loss and metrics see
    every key of the split's batches but ``"x"``.
    """
    del mesh  # evaluation runs on the population's own placement
    # all members' activations within the memory model's evaluation budget
    rows = memory.eval_rows(population.learner, population.feature_shape, population.size,
                            memory.hparam_shapes(population), at_most=stream.eval_batch,
                            dtype=population.feature_dtype)
    outs: List[Any] = []
    labels, first = [], None
    for b in stream.batches(split):
        first = staging.check_batch(b, first if callable(stream.split(split)) else None, split)
        if outs:  # one batch's outputs on the devices at a time
            outs[-1] = jax.device_get(outs[-1])
        outs.append(_outputs(population, jnp.asarray(b["x"]), rows))
        labels.append({k: v for k, v in b.items() if k != "x"})
    if not outs:
        raise ValueError(f"the {split} split yielded no batch")
    outputs = outs[0] if len(outs) == 1 else jax.tree_util.tree_map(
        lambda *o: np.concatenate(o, axis=1), *outs[:-1], jax.device_get(outs[-1]))
    # every key but "x", whole: losses and metrics of streamed splits read labels only
    batch = {k: np.concatenate([lab[k] for lab in labels]) for k in labels[0]}
    return _score(population.learner, outputs, batch, metrics)
