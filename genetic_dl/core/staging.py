"""Streamed batches staged in chunks of steps, made on a background thread.

The stream path trains a chunk of up to K steps per program (a loop over the
steps, ``vmap`` over the members). A chunk is one array per batch key, shaped
``(members, K, batch, ...)`` (``(K, batch, ...)`` when every member gets the
same batches), and the number of its steps to train (an epoch's last chunk may
fill fewer of its slots). Chunks are built on the host and put on the devices
by a producer thread while the previous chunk trains. K is a fixed rule: enough
steps to amortise a dispatch, within :data:`STAGE_BYTES`; training gives the
same bits for any K.

Members' batches come either from their own ``make_iter`` iterators, drawn into
the chunk's buffer a step at a time, or, for row-addressable data (:class:`Rows`,
as :meth:`~genetic_dl.Stream.from_dataset` makes), as a :class:`Gathered` chunk:
the rows each device's members read, gathered once, and the members' row indices,
which the program gathers each batch with (as the array path does).

Memory: one chunk trains, one waits in the queue of programs, and the next one
is made, on the host and then on the devices (which may share a buffer's memory
with the host: a buffer is never filled again once put). A chunk's bytes times
:func:`in_flight` is what the memory model counts.
"""
from __future__ import annotations

import dataclasses
import threading
import queue
from typing import (Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple, cast)

import jax
import numpy as np

Batch = Dict[str, np.ndarray]
# ``{key: (shape, dtype)}`` of one member's minibatch as staged.
Specs = Dict[str, Tuple[Tuple[int, ...], np.dtype]]

# A chunk's arrays (every member, every step) stay under this many bytes...
STAGE_BYTES = 16 << 20
# ... and hold at most this many steps: a dispatch costs about as much as one small
# step, so 64 leave it under 2 % of the chunk.
MAX_STAGE_STEPS = 64
# Seconds a closing producer is given to finish the batch it is reading.
JOIN_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class Rows:
    """Training data addressable by row: every member's batches gathered at once.

    Attributes:
      count: rows in the training split.
      batch_size: rows per batch; each epoch draws ``count // batch_size`` full
        batches per member.
      take: ``take(rows) -> {"x": ..., "y": ...}`` for an int array ``rows`` of any
        shape ``(..., batch)``: arrays of leading shape ``rows.shape``; ``"x"`` as
        stored (the program applies ``scaling``).
      scaling: ``(mean, std)`` the program standardises ``"x"`` with, or ``None``.
    """
    count: int
    batch_size: int
    take: Callable[[np.ndarray], Batch]
    scaling: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def order(self, seed: int) -> np.ndarray:
        """One epoch's ``(steps, batch)`` row indices for ``seed`` (sorted within a batch,
        for the page cache)."""
        steps = self.count // self.batch_size
        rows = np.random.default_rng(seed).permutation(self.count)[:steps * self.batch_size]
        return np.sort(rows.reshape(steps, self.batch_size), axis=1)


def check_batch(batch: Any, first: Optional[Dict[str, Tuple]], where: str) -> Dict[str, Tuple]:
    """``{key: shape}`` of a yielded batch; a clear ValueError when it is not one batch
    of arrays of one leading size, or differs from the ``first`` batch's shapes."""
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


def specs_of(batch: Mapping[str, Any]) -> Specs:
    """Shapes and staged dtypes of a batch (64-bit values staged as JAX holds them)."""
    return {k: (tuple(np.shape(v)), np.dtype(jax.dtypes.canonicalize_dtype(np.asarray(v).dtype)))
            for k, v in batch.items()}


def steps_per_chunk(step_bytes: int, requested: Optional[int] = None) -> int:
    """K, the steps trained per program: ``requested``, else as many as fit
    :data:`STAGE_BYTES` (at most :data:`MAX_STAGE_STEPS`, at least 1)."""
    if requested is not None:
        return requested
    return int(max(1, min(MAX_STAGE_STEPS, STAGE_BYTES // max(step_bytes, 1))))


def even_steps(total: int, at_most: int) -> int:
    """Steps per chunk that split ``total`` steps into the fewest chunks of at most
    ``at_most`` steps, as evenly as they go (the last chunk at most one step shorter)."""
    chunks = -(-total // at_most)
    return -(-total // chunks)


def slots(steps: int) -> int:
    """A chunk's step slots for K = ``steps``: at least 2, since XLA compiles a step read
    from an axis of length 1 differently (the same sums, rounded differently)."""
    return max(2, steps)


def in_flight(replicas: int) -> int:
    """Chunks resident at once, counted as the memory model counts them: on the devices
    (``replicas`` copies each: a shared chunk is whole on every device) the training
    one, the queued one and the next one; the next one on the host; and freed chunks
    the allocator keeps for reuse (peak RSS above the process before training reaches
    about 7.3 unshared chunks over long epochs: tests/core/test_memory.py)."""
    return 4 + 4 * replicas


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one run stages its batches.

    Attributes:
      specs: one member's minibatch as staged.
      members: members staged (the population padded to the devices), 0 when
        every member gets the same batches.
      size: the population's members (the padded ones copy member 0's batches).
      steps: K, steps per chunk (in :func:`slots` slots).
      placement: where chunks go (a sharding, or ``None``: the default device).
      devices: devices the staged members are split over.
      indexed: members' batches as row indices into rows gathered once per device
        (:class:`Gathered`).
    """
    specs: Specs
    members: int
    size: int
    steps: int
    placement: Optional[jax.sharding.Sharding] = None
    devices: int = 1
    indexed: bool = False

    @property
    def step_bytes(self) -> int:
        """Bytes of one staged step (every member's batch, and its row indices when
        ``indexed``): at least what a chunk holds per step."""
        one = sum(int(np.prod(s)) * d.itemsize for s, d in self.specs.values())
        batch = next(iter(self.specs.values()))[0][0]
        return (one + (4 * batch if self.indexed else 0)) * max(self.members, 1)

    def buffer(self, steps: int) -> Batch:
        """An empty chunk of ``steps`` steps."""
        lead = (self.members, slots(steps)) if self.members else (slots(steps),)
        return {k: np.empty(lead + s, d) for k, (s, d) in self.specs.items()}

    def put(self, chunk: Batch) -> Any:
        """``chunk`` with its padded members' batches copied from member 0, on the devices."""
        if self.members > self.size:
            for v in chunk.values():
                v[self.size:] = v[:1]
        return jax.device_put(chunk, self.placement)


# ``(steps, arrays on the devices, whether it ends its epoch)``: a chunk to train.
Chunk = Tuple[int, Any, bool]


class Gathered(NamedTuple):
    """A chunk of row-addressable data: each device's rows, and its members' batches
    as indices into them.

    Attributes:
      rows: ``{key: (devices, width, ...)}``: the rows a device's members read in the
        chunk, once each (row 0 pads them to one ``width``).
      picks: ``(members, slots, batch)`` int32 indices into the member's device's rows.
    """
    rows: Batch
    picks: np.ndarray


def gather(plan: Plan, rows: Rows, index: np.ndarray) -> Gathered:
    """The :class:`Gathered` chunk of ``index`` (``(members, slots, batch)`` row numbers):
    one gather per device of the rows its members read, in sorted order."""
    local = plan.members // plan.devices
    width = min(rows.count, local * index[0].size)
    union = np.zeros((plan.devices, width), np.int64)
    into = np.empty(index.shape, np.int32)
    position = np.empty(rows.count, np.int32)
    for d in range(plan.devices):
        mine = index[d * local:(d + 1) * local]
        read = np.zeros(rows.count, bool)
        read[mine] = True
        found = np.flatnonzero(read)
        union[d, :len(found)] = found
        position[found] = np.arange(len(found), dtype=np.int32)
        into[d * local:(d + 1) * local] = position[mine]
    return Gathered(dict(rows.take(union)), into)


def _draw(iters: Sequence[Iterator[Batch]]) -> Optional[List[Batch]]:
    """The next step's batches of every iterator, or ``None`` once one has ended."""
    batches = [next(it, None) for it in iters]
    return None if any(b is None for b in batches) else cast(List[Batch], batches)


def _write(buffer: Batch, at: Any, batches: List[Batch], first: Dict[str, Tuple]) -> None:
    """One step's batches into ``buffer[key][at]`` (a slot of every member's, key by key);
    a batch that is not a dict of ``first``'s keys and shapes raises ``check_batch``'s error."""
    try:
        if any(len(b) != len(first) for b in batches):
            raise KeyError("keys")
        for k, v in buffer.items():
            np.stack([b[k] for b in batches], out=v[at], casting="unsafe")
    except (IndexError, KeyError, TypeError, ValueError):
        for b in batches:
            check_batch(b, first, "make_iter")  # says what is wrong
        raise


def iterator_chunks(plan: Plan, epochs: Iterator[Sequence[Iterator[Batch]]]) -> Iterator[Chunk]:
    """Chunks drawn from each epoch's iterators (one per staged member, or one shared);
    an epoch ends with its shortest iterator. One step is drawn ahead, so that the
    epoch's last chunk is known as such. After the first epoch, chunks split an
    epoch's length evenly."""
    first = {k: s for k, (s, _) in plan.specs.items()}
    steps = plan.steps
    for epoch, iters in enumerate(epochs):
        ahead = _draw(iters)
        if ahead is None:
            raise ValueError(f"make_iter yielded no batch in epoch {epoch}: it must yield at "
                             f"least one {{'x': ..., 'y': ...}} per epoch")
        total = 0
        while ahead is not None:
            buffer, filled = plan.buffer(steps), 0  # a new one: the devices may share its memory
            while ahead is not None and filled < steps:
                _write(buffer, (slice(0, len(ahead)), filled) if plan.members
                       else slice(filled, filled + 1), ahead, first)
                filled += 1
                ahead = _draw(iters)
            used = slots(filled)  # the epoch's last chunk may fill fewer; the rest is never read
            if used < slots(steps):
                buffer = {k: np.ascontiguousarray(v[:, :used] if plan.members else v[:used])
                          for k, v in buffer.items()}
            item = (filled, plan.put(buffer), ahead is None)
            del buffer  # only the chunk on the devices waits for the consumer
            yield item
            total += filled
        steps = even_steps(total, plan.steps)


def row_chunks(plan: Plan, rows: Rows, seeds: np.ndarray) -> Iterator[Chunk]:
    """Chunks gathered from ``rows``: epoch ``e`` of member ``i`` in the order of
    ``seeds[e, i]`` (of ``seeds[e, 0]`` for every member when the stream is shared)."""
    width = slots(plan.steps)
    for epoch_seeds in seeds:
        if plan.members:
            order = np.stack([rows.order(int(s)) for s in epoch_seeds[:plan.size]])
            order = np.concatenate([order, np.repeat(order[:1], plan.members - plan.size, 0)])
        else:
            order = rows.order(int(epoch_seeds[0]))
        total = order.shape[-2]
        for start in range(0, total, plan.steps):
            index = order[..., start:start + width, :]
            if index.shape[-2] < width:  # unread slots: any rows
                pad = [(0, 0)] * index.ndim
                pad[-2] = (0, width - index.shape[-2])
                index = np.pad(index, pad)
            staged = gather(plan, rows, index) if plan.members else dict(rows.take(index))
            arrays = jax.device_put(staged, plan.placement)
            del staged  # only the chunk on the devices waits for the consumer
            yield min(plan.steps, total - start), arrays, start + plan.steps >= total


class Prefetch:
    """The items of ``source`` made on a background thread, one ahead of the consumer.

    The producer makes an item only once the consumer has taken the previous one,
    so at most two are alive: the one in use and the next. An exception raised in
    ``source`` is raised again, unchanged, where the consumer takes the next item.
    Use it as a context manager: leaving it (an error, KeyboardInterrupt) stops the
    producer at its next item.
    """

    def __init__(self, source: Iterator[Any], name: str = "genetic_dl-prefetch"):
        self._source = source
        self._items: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self._slot = threading.Semaphore(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> "Prefetch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(self) -> None:
        try:
            while self._acquire():
                try:
                    item = next(self._source)
                except StopIteration:
                    self._items.put(("done", None))
                    return
                self._items.put(("item", item))
                del item
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            self._items.put(("error", exc))  # raised again in the consumer
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def _acquire(self) -> bool:
        while not self._stop.is_set():
            # released by the consumer when it takes the item made in this slot
            if self._slot.acquire(timeout=0.05):  # pylint: disable=consider-using-with
                return not self._stop.is_set()
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, value = self._items.get()
            self._slot.release()  # the producer makes the next item while this one is used
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
            del value

    def close(self) -> None:
        """Stops the producer and waits for it (up to :data:`JOIN_SECONDS`)."""
        self._stop.set()
        self._slot.release()
        if self._thread.is_alive():
            self._thread.join(JOIN_SECONDS)


def first_batches(iters: List[Iterator[Batch]]) -> Tuple[Batch, List[Iterator[Batch]]]:
    """The first member's first batch, and the iterators with it put back."""
    first = next(iters[0], None)
    if first is None:
        raise ValueError("make_iter yielded no batch in epoch 0: it must yield at least one "
                         "{'x': ..., 'y': ...} per epoch")
    check_batch(first, None, "make_iter")
    return first, [_chain(first, iters[0])] + iters[1:]


def _chain(first: Batch, rest: Iterator[Batch]) -> Iterator[Batch]:
    yield first
    yield from rest
