"""Spreading the population axis over devices.

With more than one JAX device the population's leading axis is sharded over a
1-D mesh whose axis is named ``"pop"``; datasets are replicated. XLA inserts
whatever communication the GA step needs. On a CPU host, run
``genetic_dl.use_host_devices()`` right after the imports (before any JAX
computation) to get one device per core; importing genetic_dl changes nothing.
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

try:  # a private module: a later JAX may move it
    from jax._src.xla_bridge import backends_are_initialized as _backends_are_initialized
except ImportError:  # pragma: no cover - the private API moved
    def _backends_are_initialized() -> bool:
        return True  # unknown: assume the worst

AXIS = "pop"


ENV_COUNT = "GENETIC_DL_HOST_DEVICES"


def backends_started() -> bool:
    """Whether JAX has run its first computation (devices are fixed from then on)."""
    return bool(_backends_are_initialized())


def host_device_count() -> int:
    """The host devices ``use_host_devices()`` asks for: ``$GENETIC_DL_HOST_DEVICES``
    when it is a number (``0`` or ``1``: one device), else one per core."""
    env = os.environ.get(ENV_COUNT, "").strip()
    if env.isdigit():
        return max(1, int(env))
    return os.cpu_count() or 1


def use_host_devices(count: Optional[int] = None) -> bool:
    """Asks JAX for ``count`` CPU devices (default: one per core).

    One XLA CPU device runs the population's many small matmuls on one core;
    one device per core lets the sharded population use them all (2.4x on a
    2-core machine, see benchmarks/RESULTS.md). Call it right after
    ``import genetic_dl``, before any JAX computation; the CLI calls it itself.
    A device count the user chose (``--xla_force_host_platform_device_count``
    in ``XLA_FLAGS`` or ``jax_num_cpu_devices``) always wins. Nothing outside
    this process changes: the count goes to ``jax.config``, not to the
    environment.

    Args:
      count: number of host devices; ``host_device_count()`` when ``None``.

    Returns:
      Whether the count was set.
    """
    count = host_device_count() if count is None else count
    if backends_started():
        warnings.warn("genetic_dl.use_host_devices() was called after JAX's first computation "
                      "and cannot change the device count now: call it right after the "
                      "imports, before any JAX work", stacklevel=2)
        return False
    chosen = ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
              or getattr(jax.config, "jax_num_cpu_devices") > 0)  # a flag the stubs lack
    if chosen or count <= 1:
        return False
    jax.config.update("jax_num_cpu_devices", count)
    return True


def warn_if_one_core_used() -> None:
    """Warns (once per process) when a CPU run has one device but more cores:
    the population then trains on one core."""
    cores = os.cpu_count() or 1
    if (jax.default_backend() == "cpu" and jax.device_count() == 1 and cores > 1
            and jax.process_count() == 1 and not os.environ.get(ENV_COUNT, "").strip().isdigit()):
        warnings.warn(f"genetic_dl trains on 1 CPU device although this machine has {cores} "
                      "cores: call genetic_dl.use_host_devices() right after the imports to "
                      "use them all (or set GENETIC_DL_HOST_DEVICES=1 to silence this)",
                      stacklevel=1)


def population_mesh(devices: Optional[Sequence[Any]] = None,
                    size: Optional[int] = None) -> Optional[Mesh]:
    """A 1-D ``"pop"`` mesh, or ``None`` when there is one device.

    Args:
      devices: the devices (default: all of the default backend).
      size: population size; the mesh takes at most this many devices, so
        that a small population is not padded onto idle devices.
    """
    devices = list(devices if devices is not None else jax.devices())
    if size is not None and jax.process_count() == 1:  # every host must take part otherwise
        devices = devices[:max(1, size)]
    if len(devices) <= 1:
        return None
    # Auto axes: explicit-sharding mode rejects argsort/gather over a sharded axis.
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def pad_members(tree: Any, multiple: int) -> Tuple[Any, int]:
    """Pads the leading axis to a multiple of ``multiple`` by repeating member 0.

    Returns:
      ``(padded_tree, original_size)``.
    """
    size = jax.tree_util.tree_leaves(tree)[0].shape[0]
    extra = -size % multiple
    if extra == 0:
        return tree, size
    return _pad(tree, extra), size


# A chunk of members whose weights and optimizer state fit in about one core's L2
# cache trains its whole epoch before the next chunk starts (CPU only).
CHUNK_BYTES = 1 << 20
# ... and whose steps' activations (a CNN's im2col patches) stay this small.
ACTIVATION_CHUNK_BYTES = 16 << 20


def member_chunk(local: int, per_member_bytes: int, step_bytes: int = 0) -> int:
    """Members trained at once on one device: all of them on accelerators; on CPU the
    largest divisor of ``local`` whose weights and optimizer states fit CHUNK_BYTES
    and whose training steps' values fit ACTIVATION_CHUNK_BYTES.

    On CPU a vmapped step over many members streams all their weights and
    optimizer states through memory at every minibatch; a chunk small enough to
    stay in cache across an epoch's steps trains 1.3-2x faster at P >= 128
    (benchmarks/RESULTS.md). A CNN's activations are far larger than its
    weights: one member at a time trains 1.25x faster than two (P = 8, 28x28).
    """
    if jax.default_backend() != "cpu":
        return local
    at_most = min(CHUNK_BYTES // max(per_member_bytes, 1),
                  ACTIVATION_CHUNK_BYTES // max(step_bytes, 1))
    return chunk_size(local, max(1, at_most))


def chunk_size(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is at most ``at_most`` (at least 1)."""
    return max(d for d in range(1, min(at_most, n) + 1) if n % d == 0)


def map_chunks(fn: Callable[[Any], Any], tree: Any, chunk: int) -> Any:
    """``fn`` over the leading axis of ``tree``, ``chunk`` members at a time (``lax.map``).

    ``chunk`` divides the member count; ``fn`` maps a tree of ``chunk``
    members to a tree of as many. On CPU a chunk that fits the cache runs
    all its work before the next starts (training, weight matching).
    """
    n = jax.tree_util.tree_leaves(tree)[0].shape[0]
    split = jax.tree_util.tree_map(lambda x: x.reshape((n // chunk, chunk) + x.shape[1:]), tree)
    out = jax.lax.map(fn, split)
    return jax.tree_util.tree_map(lambda x: x.reshape((n,) + x.shape[2:]), out)


# Jitted over the whole tree: leaf by leaf, each op would compile once per leaf shape.
@functools.partial(jax.jit, static_argnums=1)
def _pad(tree: Any, extra: int) -> Any:
    return jax.tree_util.tree_map(
        lambda x: jnp.concatenate([x, jnp.repeat(x[:1], extra, axis=0)]), tree)


@functools.partial(jax.jit, static_argnums=1)
def unpad_members(tree: Any, size: int) -> Any:
    """Drops members beyond ``size`` (inverse of :func:`pad_members`)."""
    return jax.tree_util.tree_map(lambda x: x[:size], tree)


def shard_members(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Places every leaf with its leading axis split over ``mesh``'s ``"pop"`` axis."""
    if mesh is None:
        return tree
    return jax.device_put(_host(tree), NamedSharding(mesh, PartitionSpec(AXIS)))


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Places every leaf whole on each device of ``mesh``."""
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(_host(tree), NamedSharding(mesh, PartitionSpec()))


def mesh_of(tree: Any) -> Optional[Mesh]:
    """The ``"pop"`` mesh that ``tree``'s first leaf is sharded over, else ``None``."""
    leaves = jax.tree_util.tree_leaves(tree)
    sharding = getattr(leaves[0], "sharding", None) if leaves else None
    mesh = sharding.mesh if isinstance(sharding, NamedSharding) else None
    if isinstance(mesh, Mesh) and AXIS in mesh.axis_names and mesh.size > 1:
        return mesh
    return None


def constrain(tree: Any, mesh: Optional[Mesh], split: bool) -> Any:
    """Inside jit: members split over ``mesh`` (``split``) or whole on every device.

    XLA's partitioner otherwise lowers a gather of members from a split
    population (parents by index) into an all-reduce of the whole result,
    after which every device computes every child.
    """
    if mesh is None:
        return tree
    spec = PartitionSpec(AXIS) if split else PartitionSpec()
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))


def _host(tree: Any) -> Any:
    """With several processes, every process places the same host (numpy) values."""
    if jax.process_count() == 1:
        return tree
    return jax.tree_util.tree_map(np.asarray, tree)


def gather(tree: Any) -> Any:
    """With several processes: every array fetched whole to every process (numpy).

    The population trains sharded over all hosts' devices; the GA step and the
    bookkeeping then run on the gathered values, identically on every host.
    """
    if jax.process_count() == 1:
        return tree
    return multihost_utils.process_allgather(tree, tiled=True)


def initialize_hosts(coordinator: str, num_processes: int, process_id: int,
                     **kwargs: Any) -> None:
    """Joins a multi-process run (``jax.distributed.initialize``), CPU collectives included.

    Call it first, on every process, before any other JAX work. On GPU clusters
    under SLURM or Open MPI ``jax.distributed.initialize()`` finds its arguments
    itself; this wrapper also selects gloo so that CPU-only hosts can run
    cross-process collectives.

    Args:
      coordinator: ``"host:port"`` of process 0.
      num_processes: number of processes.
      process_id: this process's rank in ``[0, num_processes)``.
      **kwargs: passed on to ``jax.distributed.initialize``.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # no effect on GPUs
    jax.distributed.initialize(coordinator, num_processes=num_processes,
                               process_id=process_id, **kwargs)
