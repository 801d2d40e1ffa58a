"""Data that does not fit in memory: batches streamed from the host.

A :class:`Stream` wraps a function ``make_iter(epoch, seed)`` that yields dicts of
numpy arrays (a torch ``DataLoader`` or ``tf.data``/grain iterator converted to
numpy, a generator over a memory-mapped file). Training runs one jitted, vmapped
step per batch; evaluation runs the members over fixed-size batches and scores
the collected outputs (outputs are small: ``P x n x outputs``), so memory holds
one batch of activations, never a whole split.

Independence: by default each member iterates its own stream
(``make_iter(epoch, seed)`` with a seed drawn from the member's key), so members
see their own batch order, as with array data. ``shared=True`` draws one
iterator per epoch and gives every member the same batches, in the same order:
cheaper for an expensive loader, but members then differ only by their init,
hyperparameters and dropout, and a member's result depends on the population's
epoch count rather than on its key alone.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from . import memory
from . import sharding
from ..data import Dataset
from .optimizers import make_optimizer
from .population import Population
from .pytree import Params, PyTree
from .step import member_step

Batch = Dict[str, np.ndarray]
Split = Union[Mapping[str, Any], Callable[[], Iterable[Batch]]]
# A ``"pop"`` mesh, ``None`` for one device, or ``"auto"``: all devices when there are several.
MeshArg = Union[Mesh, None, str]


@dataclasses.dataclass(frozen=True)
class Stream:
    """Training batches from ``make_iter(epoch, seed)``; validation and test splits.

    Attributes:
      make_iter: ``make_iter(epoch, seed) -> iterator of {"x": ..., "y": ..., ...}``;
        ``x`` is fed to the model as given: integers as int32 (token indices),
        anything else as float32.
      val: a dict of arrays (evaluated in batches of ``eval_batch``) or a
        callable returning an iterator of batches.
      test: the same, optional (final reports only).
      shared: every member gets the same batches (see the module docstring).
      eval_batch: batch size of evaluation over a dict of arrays.
      name: shown in reports.
    """
    make_iter: Callable[[int, int], Iterator[Batch]]
    val: Split
    test: Optional[Split] = None
    shared: bool = False
    eval_batch: int = 512
    name: str = "stream"

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
        arrays (indices sorted, for the page cache) and standardised on the
        host as the array path does on the device. Each member draws its own
        order of ``len(y_train) // batch_size`` full batches per epoch (the
        array path's count).

        Args:
          data: the dataset.
          batch_size: training minibatch size.
          shared: one order for all members (see the module docstring).
          eval_batch: rows per validation and test batch.

        Returns:
          The Stream, named after the dataset.
        """
        n = len(data.y_train)
        batch_size = int(min(batch_size, n))

        def make_iter(epoch: int, seed: int) -> Iterator[Batch]:
            del epoch  # the seed already differs per epoch and member
            order = np.random.default_rng(seed).permutation(n)
            for i in range(n // batch_size):
                rows = np.sort(order[i * batch_size:(i + 1) * batch_size])
                yield {"x": data.model_inputs(data.x_train[rows]),
                       "y": np.asarray(data.y_train[rows])}

        def split(x: np.ndarray, y: np.ndarray) -> Dict[str, Any]:
            return {"x": _ModelInputs(data, x), "y": np.asarray(y)}
        test = split(data.x_test, data.y_test) if len(data.y_test) else None
        return cls(make_iter, split(data.x_val, data.y_val), test, shared, eval_batch, data.name)

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


def _check_batch(batch: Any, first: Optional[Dict[str, Tuple]], where: str) -> Dict[str, Tuple]:
    if not isinstance(batch, Mapping) or "x" not in batch:
        raise ValueError(f"{where} yielded {type(batch).__name__}, not a dict with 'x' (and "
                         f"the keys your loss reads, e.g. 'y'): yield {{'x': ..., 'y': ...}}")
    shapes = {k: tuple(np.shape(v)) for k, v in batch.items()}
    sizes = {s[0] if s else None for s in shapes.values()}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"{where} yielded arrays of different batch sizes {shapes}: every "
                         f"array of a batch needs the same leading size")
    if first is not None and shapes != first:
        raise ValueError(f"{where} yielded a batch of shapes {shapes} after {first}: yield "
                         f"batches of one shape (drop or pad the last, smaller batch)")
    return shapes


def _seeds(keys: jax.Array) -> np.ndarray:
    """One int seed per member from its PRNG key."""
    raw = np.asarray(keys, np.uint64)
    return ((raw[:, 0] << np.uint64(32)) | raw[:, -1]) % np.uint64(2 ** 63 - 1)


@functools.partial(jax.jit, static_argnames=("shared",))
def _step(population: Population, batch: Mapping[str, jax.Array],
          shared: bool) -> Tuple[Population, jax.Array, jax.Array]:
    # a batch's x as the population was built for: float32, or int32 token indices
    batch = {**batch, "x": batch["x"].astype(population.feature_dtype)}

    def one(p: Params, s: PyTree, c: PyTree, h: Mapping[str, jax.Array], k: jax.Array,
            b: Mapping[str, jax.Array]) -> Any:
        tx = make_optimizer(population.optimizer, h)
        return member_step(population, tx, h, (p, s, c, k), b)
    (params, opt_state, collections, keys), (loss, score) = jax.vmap(
        one, in_axes=(0, 0, 0, 0, 0, None if shared else 0))(
        population.params, population.opt_state, population.collections, population.hparams,
        population.keys, batch)
    return population.replace(params=params, opt_state=opt_state, collections=collections,
                              keys=keys), loss, score


@jax.jit
def _split_keys(keys: jax.Array) -> Tuple[jax.Array, jax.Array]:
    pair = jax.vmap(jax.random.split)(keys)
    return pair[:, 0], pair[:, 1]


def train_stream(population: Population, stream: Stream, epochs: int,
                 mesh: MeshArg = "auto") -> Tuple[Population, Dict[str, jax.Array]]:
    """Trains every member for ``epochs`` passes over ``stream`` (see :func:`genetic_dl.train`)."""
    if isinstance(mesh, str):
        mesh = sharding.population_mesh(size=population.size)
    size = population.size
    if mesh is not None:
        population, _ = sharding.pad_members(population, mesh.devices.size)
        population = sharding.shard_members(population, mesh)
    record: Dict[str, List[jax.Array]] = {
        k: [] for k in ("train_loss", "train_score", "val_loss", "val_score")}
    for epoch in range(epochs):
        keys, k_epoch = _split_keys(population.keys)
        population = population.replace(keys=keys)
        seeds = _seeds(k_epoch)[:size]
        iters = [iter(stream.make_iter(epoch, int(seed)))
                 for seed in (seeds[:1] if stream.shared else seeds)]
        losses: List[jax.Array] = []
        scores: List[jax.Array] = []
        first = None
        for batches in zip(*iters):
            for b in batches:
                first = _check_batch(b, first, "make_iter")
            batch: Dict[str, Any]
            if stream.shared:
                batch = {k: jnp.asarray(v) for k, v in batches[0].items()}
            else:
                batch = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
                if mesh is not None:  # padded members train on copies of member 0's batch
                    batch = sharding.shard_members(
                        sharding.pad_members(batch, mesh.devices.size)[0], mesh)
            population, loss, score = _step(population, batch, stream.shared)
            losses.append(loss)
            scores.append(score)
        if first is None:
            raise ValueError(f"make_iter yielded no batch in epoch {epoch}: it must yield at "
                             f"least one {{'x': ..., 'y': ...}} per epoch")
        out = evaluate_stream(population, stream, "val", mesh=None, metrics=False)
        record["train_loss"].append(jnp.stack(losses).mean(0))
        record["train_score"].append(jnp.stack(scores).mean(0))
        record["val_loss"].append(out["loss"])
        record["val_score"].append(out["score"])
    population = sharding.unpad_members(sharding.gather(population), size)
    hist = {k: jnp.stack(v, 1)[:size] for k, v in record.items()}
    diverged = ~jnp.all(jnp.isfinite(hist["train_loss"]) & jnp.isfinite(hist["val_loss"]), axis=1)
    return population.replace(failed=population.failed | diverged), hist


@functools.partial(jax.jit, static_argnames=("rows",))
def _outputs(population: Population, x: jax.Array, rows: int) -> Any:
    learner = population.learner
    x = x.astype(population.feature_dtype)
    return jax.vmap(lambda p, c, h: learner.apply_eval_batched(p, c, x, h, rows))(
        population.params, population.collections, population.hparams)


@functools.partial(jax.jit, static_argnames=("metrics",))
def _score(population: Population, outputs: Any, batch: Mapping[str, Any],
           metrics: bool) -> Dict[str, jax.Array]:
    learner = population.learner
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
    outs, labels, first = [], [], None
    for b in stream.batches(split):
        first = _check_batch(b, first if callable(stream.split(split)) else None, split)
        outs.append(jax.device_get(_outputs(population, jnp.asarray(b["x"]), rows)))
        labels.append({k: v for k, v in b.items() if k != "x"})
    if not outs:
        raise ValueError(f"the {split} split yielded no batch")
    outputs = jax.tree_util.tree_map(lambda *o: np.concatenate(o, axis=1), outs[0], *outs[1:])
    # every key but "x", whole: losses and metrics of streamed splits read labels only
    batch = {k: np.concatenate([lab[k] for lab in labels]) for k in labels[0]}
    return _score(population, outputs, batch, metrics)
