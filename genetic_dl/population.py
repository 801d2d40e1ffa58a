"""The population: P identically shaped networks as one pytree with leading axis P."""
from __future__ import annotations

import functools
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .data import Dataset
from .models import ModelSpec, build_model
from .optimizers import DEFAULT_HPARAMS, HPARAM_NAMES, OPTIMIZERS, make_optimizer


@struct.dataclass
class Population:
    """An immutable population of P networks of one shape.

    Every array leaf has leading axis P. The static fields (spec, optimizer,
    feature shape, output width) are compile-time configuration; everything
    else is traced, so members can differ in hyperparameters without
    recompiling.

    Attributes:
      params: stacked Flax params.
      opt_state: stacked optax states of ``optimizer``.
      hparams: ``{learning_rate, weight_decay, momentum, dropout}``, each ``(P,)``.
      keys: ``(P, 2)`` uint32 PRNG keys, one stream per member.
      ids: ``(P,)`` int32 member ids (children get fresh ids).
      failed: ``(P,)`` bool, set when a member's loss went NaN/inf.
      spec, optimizer, feature_shape, out_dim: static configuration.
    """
    params: Any
    opt_state: Any
    hparams: Dict[str, jax.Array]
    keys: jax.Array
    ids: jax.Array
    failed: jax.Array
    spec: ModelSpec = struct.field(pytree_node=False)
    optimizer: str = struct.field(pytree_node=False)
    feature_shape: Tuple[int, ...] = struct.field(pytree_node=False)
    out_dim: int = struct.field(pytree_node=False)

    @property
    def size(self) -> int:
        """Number of members P."""
        return int(self.ids.shape[0])

    @property
    def model(self):
        """The Flax module shared by all members."""
        return build_model(self.spec, self.feature_shape, self.out_dim)

    def member(self, i: int) -> Any:
        """Params of member ``i`` (no leading axis)."""
        return jax.tree_util.tree_map(lambda x: x[i], self.params)


def raw_key(key) -> jax.Array:
    """A ``uint32`` key array from a typed ``jax.random.key`` or a raw key."""
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _resolve_hparams(optimizer: str, size: int,
                     hparams: Optional[Mapping[str, Union[float, np.ndarray]]],
                     spec: ModelSpec) -> Dict[str, jax.Array]:
    hparams = dict(hparams or {})
    unknown = set(hparams) - set(HPARAM_NAMES) - {"widths"}
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}: "
                         f"valid are {', '.join(HPARAM_NAMES)}, widths")
    defaults = dict(DEFAULT_HPARAMS[optimizer], dropout=spec.dropout)
    out = {}
    for name in HPARAM_NAMES:
        value = np.asarray(hparams.get(name, defaults[name]), np.float32)
        if value.ndim == 0:
            value = np.full((size,), value, np.float32)
        if value.shape != (size,):
            raise ValueError(f"hyperparameter {name!r} has shape {value.shape}: give a scalar "
                             f"or one value per member, shape ({size},)")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"hyperparameter {name!r} has NaN/inf values: give finite ones")
        out[name] = jnp.asarray(value)
    if "widths" in hparams:
        out["widths"] = _resolve_widths(hparams["widths"], size, spec)
    if np.any(np.asarray(out["dropout"]) > 0) and spec.dropout == 0:
        raise ValueError("per-member dropout > 0 needs dropout layers: build the spec with "
                         "dropout > 0 (e.g. MLPSpec(dropout=0.1))")
    if np.any(np.asarray(out["dropout"]) >= 1) or np.any(np.asarray(out["dropout"]) < 0):
        raise ValueError("dropout rates must be in [0, 1)")
    if np.any(np.asarray(out["learning_rate"]) <= 0):
        raise ValueError("learning rates must be positive")
    return out


def _resolve_widths(widths, size: int, spec: ModelSpec) -> jax.Array:
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


def init_population(key: jax.Array, spec: ModelSpec,
                    data: Union[Dataset, Tuple[Tuple[int, ...], int]], size: int,
                    optimizer: str = "adam",
                    hparams: Optional[Mapping[str, Any]] = None) -> Population:
    """Creates a population by mapping the model's init over split keys.

    Args:
      key: a PRNG key; member i's init and training stream derive from
        ``fold_in(key, i)`` alone, so member i is the same whatever ``size``.
      spec: the model structure shared by all members.
      data: a :class:`Dataset`, or ``(feature_shape, out_dim)``.
      size: number of members P.
      optimizer: a key of :data:`~genetic_dl.optimizers.OPTIMIZERS`.
      hparams: per-member hyperparameters, each a scalar or a ``(P,)`` array;
        missing ones take the optimizer's defaults (dropout: the spec's).
        Optional ``widths``, ``(P, layers)``: each member's true layer widths
        inside the spec's padded ones (:mod:`genetic_dl.padding`).

    Returns:
      A :class:`Population` of ``size`` members.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if size < 1:
        raise ValueError(f"population size must be at least 1, got {size}")
    if isinstance(data, Dataset):
        feature_shape, out_dim = data.feature_shape, data.out_dim
    else:
        feature_shape, out_dim = tuple(data[0]), int(data[1])
    build_model(spec, feature_shape, out_dim)  # validates the spec against the features
    hp = _resolve_hparams(optimizer, size, hparams, spec)
    key = raw_key(key)
    keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(size))
    return _init(keys, hp, optimizer, feature_shape, out_dim, spec)


@functools.lru_cache(maxsize=256)
def _init_fn(spec, optimizer, feature_shape, out_dim):
    # Cached so that a second population of the same shape does not recompile its init.
    model = build_model(spec, feature_shape, out_dim)
    dummy = jnp.zeros((1,) + tuple(feature_shape), jnp.float32)

    def one(key_h):
        key, h = key_h
        k_init, k_train = jax.random.split(key)
        params = model.init(k_init, dummy)
        return params, make_optimizer(optimizer, h).init(params), k_train
    # One member at a time, not vmap: a vmapped orthogonal init (LSTM/GRU
    # recurrent kernels) becomes batched QR custom calls, and jaxlib's LAPACK
    # kernels fan a batch out onto the intra-op thread pool they already run
    # on and block on it; when every worker blocks so, the process deadlocks
    # (benchmarks/xla_qr_deadlock.py). A batch of one runs inline.
    return jax.jit(lambda keys, hp: jax.lax.map(one, (keys, hp)))


def _init(keys, hp, optimizer, feature_shape, out_dim, spec) -> Population:
    init = _init_fn(spec, optimizer, tuple(feature_shape), int(out_dim))
    params, opt_state, train_keys = init(keys, hp)
    size = keys.shape[0]
    return Population(params=params, opt_state=opt_state, hparams=hp, keys=train_keys,
                      ids=jnp.arange(size, dtype=jnp.int32), failed=jnp.zeros(size, bool),
                      spec=spec, optimizer=optimizer, feature_shape=tuple(feature_shape),
                      out_dim=int(out_dim))


def take(population: Population, index) -> Population:
    """Members ``index`` (int array) of ``population``, as a new population."""
    index = jnp.asarray(index)
    return jax.tree_util.tree_map(lambda x: x[index], population)


def concat(*populations: Population) -> Population:
    """Stacks populations of the same static configuration along axis 0."""
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *populations)
