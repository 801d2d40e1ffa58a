"""Network families built from plain, hashable structure specs.

A spec (:class:`MLPSpec`, :class:`CNNSpec`, :class:`RNNSpec`, :class:`FramesSpec`,
:class:`CaptionSpec`) is a frozen
dataclass of ints, strings and tuples: the outer GA mutates specs, the
population engine uses them as static (compile-time) configuration, and the
population itself only ever holds params pytrees, never module objects.

Every model is called as ``model.apply(params, x, dropout_rate, train,
widths, rngs={"dropout": key})``. The dropout rate is an argument, not a module
attribute, so that it can be a traced per-member value under ``vmap``; so are
``widths`` (MLP and CNN): units of hidden layer i at or beyond ``widths[i]``
are masked to zero, so members of different widths share one padded shape
(see :mod:`genetic_dl.core.padding`); and ``depth`` (MLP and CNN with
``blocks``): residual block b is active while ``b < depth``, so members of
different depths share one shape too.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple, Union, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .patch_conv import patch_conv
from .pytree import Params
from ..errors import check as _check, check_choice

ACTIVATIONS: Dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "swish": nn.swish,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "sigmoid": nn.sigmoid,
}

RNN_CELLS = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell, "simple": nn.SimpleCell}
POOLS = ("max", "avg", "none")
# A dropout rate: a float, or a member's traced scalar under vmap.
Rate = Union[float, jax.Array]


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    """A multilayer perceptron.

    Attributes:
      hidden: hidden-layer widths; its length is the layer count.
      activation: a key of :data:`ACTIVATIONS`.
      dropout: default dropout rate; a model with ``dropout == 0`` has no
        dropout layers at all (no random numbers drawn per step).
      blocks: residual blocks ``h + Dense(act(Dense(h)))`` after the last hidden
        layer, at its width (params ``Block_b_in``, ``Block_b_out``).
    """
    hidden: Tuple[int, ...] = (128, 128)
    activation: str = "relu"
    dropout: float = 0.0
    blocks: int = 0
    family = "mlp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check(all(h > 0 for h in self.hidden), f"MLP widths must be positive, got {self.hidden}")
        check_choice("activation", self.activation, ACTIVATIONS)
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check_blocks(self.blocks, self.hidden)


def _check_blocks(blocks: int, widths: Tuple[int, ...]) -> None:
    _check(isinstance(blocks, int) and blocks >= 0,
           f"blocks must be a non-negative int, got {blocks!r}")
    _check(blocks == 0 or len(widths) > 0, "residual blocks need a hidden layer to add to")


@dataclasses.dataclass(frozen=True)
class CNNSpec:
    """A convolutional network for 1-D signals ``(L,)`` or images ``(H, W[, C])``.

    Attributes:
      filters: output channels of each conv layer; its length is the layer count.
      kernel_size: kernel width (square kernels for images).
      pool: ``"max"``, ``"avg"`` or ``"none"``; a 2-stride pool follows each conv
        layer while the spatial size is at least 2.
      dense: widths of the dense head after flattening.
      activation: a key of :data:`ACTIVATIONS`.
      dropout: default dropout rate of the dense head (0: no dropout layers).
      blocks: residual blocks ``h + Conv(act(Conv(h)))`` after the last conv
        layer and before its pool, at its width (``Block_b_in``, ``Block_b_out``).
    """
    filters: Tuple[int, ...] = (32, 32)
    kernel_size: int = 3
    pool: str = "max"
    dense: Tuple[int, ...] = (64,)
    activation: str = "relu"
    dropout: float = 0.0
    blocks: int = 0
    family = "cnn"

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        object.__setattr__(self, "dense", tuple(int(d) for d in self.dense))
        _check(len(self.filters) > 0 and all(f > 0 for f in self.filters),
               f"CNN filters must be a non-empty list of positive ints, got {self.filters}")
        _check(all(d > 0 for d in self.dense), f"dense widths must be positive, got {self.dense}")
        _check(self.kernel_size > 0, f"kernel_size must be positive, got {self.kernel_size}")
        check_choice("pool", self.pool, POOLS)
        check_choice("activation", self.activation, ACTIVATIONS)
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check_blocks(self.blocks, self.filters)


@dataclasses.dataclass(frozen=True)
class RNNSpec:
    """A recurrent network over a sequence; the last step's state feeds the head.

    1-D features ``(L,)`` are a length-L sequence of scalars; 2-D ``(T, F)`` are
    T steps of F features (digits: 8 rows of 8 pixels).

    Attributes:
      cell: ``"gru"``, ``"lstm"`` or ``"simple"``.
      hidden: state size of each recurrent layer.
      layers: number of stacked recurrent layers.
      dropout: default dropout rate before the output layer (0: none).
    """
    cell: str = "gru"
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    family = "rnn"

    def __post_init__(self) -> None:
        check_choice("RNN cell", self.cell, RNN_CELLS)
        _check(self.hidden > 0 and self.layers > 0,
               f"RNN hidden size and layers must be positive, got {self.hidden}, {self.layers}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass(frozen=True)
class FramesSpec:
    """A CNN applied to every frame of a sequence, then a recurrent layer over time.

    Inputs are image sequences ``(T, H, W)`` or ``(T, H, W, C)`` (Moving-MNIST
    style video); every frame goes through the same conv layers (shared
    weights), its features through a dense embedding, and the sequence of
    embeddings through the recurrent layer, whose last state feeds the head.

    Attributes:
      filters, kernel_size, pool, activation: the per-frame CNN (as :class:`CNNSpec`).
      embed: width of each frame's embedding.
      cell, hidden: the recurrent layer (as :class:`RNNSpec`).
      dropout: default dropout rate before the output layer (0: none).
    """
    filters: Tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    pool: str = "max"
    embed: int = 64
    cell: str = "gru"
    hidden: int = 64
    activation: str = "relu"
    dropout: float = 0.0
    family = "frames"

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        _check(len(self.filters) > 0 and all(f > 0 for f in self.filters),
               f"frame CNN filters must be a non-empty list of positive ints, got {self.filters}")
        _check(self.kernel_size > 0 and self.embed > 0 and self.hidden > 0,
               "kernel_size, embed and hidden must be positive")
        check_choice("pool", self.pool, POOLS)
        check_choice("RNN cell", self.cell, RNN_CELLS)
        check_choice("activation", self.activation, ACTIVATIONS)
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass(frozen=True)
class CaptionSpec(FramesSpec):
    """The frames encoder (:class:`FramesSpec`) with one head per caption slot.

    For videos whose labels are ``(n, slots)`` class indices (a caption's
    fields, e.g. ``captioned_moving_digits``): the recurrent layer's last state
    feeds ``slots`` dense heads, head ``s`` of ``slot_classes[s]`` logits. The
    output is slot-major ``(n, slots * C)``, ``C = max(slot_classes)``, each head
    padded with zeros that the caption loss masks out.

    Attributes:
      slot_classes: each slot's number of classes (a dataset's ``slot_classes``).
      others: as :class:`FramesSpec`.
    """
    slot_classes: Tuple[int, ...] = ()
    family = "caption"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "slot_classes", tuple(int(c) for c in self.slot_classes))
        _check(len(self.slot_classes) > 0 and min(self.slot_classes) >= 1,
               f"a caption model needs each slot's number of classes, slot_classes="
               f"{self.slot_classes}: pass the dataset's, CaptionSpec(slot_classes="
               f"data.slot_classes)")

    @property
    def out_dim(self) -> int:
        """Width of the output: ``slots * max(slot_classes)``."""
        return len(self.slot_classes) * max(self.slot_classes)


ModelSpec = Union[MLPSpec, CNNSpec, RNNSpec, FramesSpec, CaptionSpec]
SPECS = {"mlp": MLPSpec, "cnn": CNNSpec, "rnn": RNNSpec, "frames": FramesSpec,
         "caption": CaptionSpec}


def spec_to_dict(spec: ModelSpec) -> Dict[str, Any]:
    """Returns a JSON/TOML-friendly dict, inverse of :func:`spec_from_dict`."""
    out: Dict[str, Any] = {"family": spec.family}
    for k, v in dataclasses.asdict(spec).items():
        if k == "blocks" and v == 0:  # so that specs without blocks read the same everywhere
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def spec_from_dict(d: Dict[str, Any]) -> ModelSpec:
    """Builds a spec from :func:`spec_to_dict` output."""
    d = dict(d)
    family = d.pop("family", None)
    check_choice("model family", family, SPECS)
    fields = {f.name for f in dataclasses.fields(SPECS[family])}
    for name in d:
        check_choice(f"{family} option", name, sorted(fields))
    return SPECS[family](**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class PatchConv(nn.Module):
    """A stride-1 'SAME' convolution computed as patches times a matrix
    (:func:`~genetic_dl.core.patch_conv.patch_conv`).

    Same params (``kernel`` of shape ``(k, ..., C_in, C_out)``, ``bias``) and
    outputs as ``flax.linen.Conv``; under ``vmap`` over members it is one batched
    matmul where XLA CPU makes ``lax.conv`` a slow grouped convolution.
    """
    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, spatial, c_in = self.kernel_size, x.ndim - 2, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (k,) * spatial + (c_in, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return patch_conv(x, kernel) + bias


def _pool2(x: jax.Array, kind: str) -> jax.Array:
    """2x2 (or 2) stride-2 'VALID' pooling as pairwise maxima (or means) of strided slices.

    Equals ``nn.max_pool``/``nn.avg_pool`` with window 2 and stride 2 in the forward
    pass. Its gradient is a select per pair, not XLA CPU's slow select-and-scatter nor
    the mask-and-count of a reduction's gradient (a ReLU CNN's training step ran about
    20 % faster); tied maxima share the gradient equally, as ``jnp.maximum`` does.
    """
    sizes = [s // 2 for s in x.shape[1:-1]]
    x = x[(slice(None),) + tuple(slice(0, 2 * s) for s in sizes)]
    for axis in range(1, len(sizes) + 1):
        even = lax.slice_in_dim(x, 0, None, 2, axis)
        odd = lax.slice_in_dim(x, 1, None, 2, axis)
        x = jnp.maximum(even, odd) if kind == "max" else (even + odd) * 0.5
    return x


def _mask_units(x: jax.Array, widths: Optional[jax.Array], i: int) -> jax.Array:
    if widths is None:
        return x
    return x * (jnp.arange(x.shape[-1]) < widths[i]).astype(x.dtype)


def _residual_blocks(module: nn.Module, spec: Union[MLPSpec, CNNSpec], x: jax.Array,
                     widths: Optional[jax.Array], depth: Optional[jax.Array]) -> jax.Array:
    """``spec.blocks`` residual blocks ``x + layer(act(layer(x)))`` at ``x``'s width, each
    masked like the last hidden layer; block b adds nothing unless ``b < depth``."""
    act = ACTIVATIONS[spec.activation]
    last = len(spec.hidden if isinstance(spec, MLPSpec) else spec.filters) - 1
    width = x.shape[-1]

    def layer(name: str) -> nn.Module:
        if isinstance(spec, MLPSpec):
            return nn.Dense(width, name=name, parent=module)
        return PatchConv(width, spec.kernel_size, name=name, parent=module)
    for b in range(spec.blocks):
        y = _mask_units(act(layer(f"Block_{b}_in")(x)), widths, last)
        y = _mask_units(layer(f"Block_{b}_out")(y), widths, last)
        if depth is not None:
            y = y * (jnp.asarray(depth) > b).astype(y.dtype)
        x = x + y
    return x


def _dropout(x: jax.Array, rate: Rate, train: bool, module: nn.Module) -> jax.Array:
    if not train:
        return x
    keep = 1.0 - rate
    mask = jax.random.uniform(module.make_rng("dropout"), x.shape) < keep
    return jnp.where(mask, x / keep, 0.0)


def _outputs(rnn_out: Any) -> jax.Array:
    """``nn.RNN``'s output sequence (its type also allows ``(carry, outputs)``, which
    only ``return_carry=True`` gives)."""
    return cast(jax.Array, rnn_out)


class MLP(nn.Module):
    """Flax MLP built from an :class:`MLPSpec`."""
    spec: MLPSpec
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, dropout_rate: Rate = 0.0, train: bool = False,
                 widths: Optional[jax.Array] = None,
                 depth: Optional[jax.Array] = None) -> jax.Array:
        act = ACTIVATIONS[self.spec.activation]
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.spec.hidden):
            x = _mask_units(act(nn.Dense(width)(x)), widths, i)
            if self.spec.dropout > 0:
                x = _dropout(x, dropout_rate, train, self)
        x = _residual_blocks(self, self.spec, x, widths, depth)
        return nn.Dense(self.out_dim)(x)


def _conv_stack(module: nn.Module, spec: Union[CNNSpec, FramesSpec], x: jax.Array,
                widths: Optional[jax.Array] = None, depth: Optional[jax.Array] = None
                ) -> jax.Array:
    """``spec``'s conv layers (``Conv_i``), each followed by a 2-stride pool while the
    spatial size allows, a CNN's residual blocks before the last pool; ``x`` is
    ``(B, *spatial, C)``."""
    act = ACTIVATIONS[spec.activation]
    for i, filters in enumerate(spec.filters):
        x = act(PatchConv(filters, spec.kernel_size, name=f"Conv_{i}", parent=module)(x))
        x = _mask_units(x, widths, i)
        if isinstance(spec, CNNSpec) and i == len(spec.filters) - 1:
            x = _residual_blocks(module, spec, x, widths, depth)
        if spec.pool != "none" and min(x.shape[1:-1]) >= 2:
            x = _pool2(x, spec.pool)
    return x


class CNN(nn.Module):
    """Flax CNN built from a :class:`CNNSpec`, 1-D or 2-D from the input's rank."""
    spec: CNNSpec
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, dropout_rate: Rate = 0.0, train: bool = False,
                 widths: Optional[jax.Array] = None,
                 depth: Optional[jax.Array] = None) -> jax.Array:
        act = ACTIVATIONS[self.spec.activation]
        if x.ndim in (2, 3):  # (B, L) signal or (B, H, W) grey image: add a channel axis
            x = x[..., None]
        x = _conv_stack(self, self.spec, x, widths, depth)
        x = x.reshape(x.shape[0], -1)
        for width in self.spec.dense:
            x = act(nn.Dense(width)(x))
            if self.spec.dropout > 0:
                x = _dropout(x, dropout_rate, train, self)
        return nn.Dense(self.out_dim)(x)


class RNN(nn.Module):
    """Flax recurrent network built from an :class:`RNNSpec`."""
    spec: RNNSpec
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, dropout_rate: Rate = 0.0, train: bool = False,
                 widths: Optional[jax.Array] = None) -> jax.Array:
        del widths  # recurrent layers are never padded
        if x.ndim == 2:  # (B, L): a sequence of scalars
            x = x[..., None]
        for _ in range(self.spec.layers):
            x = _outputs(nn.RNN(RNN_CELLS[self.spec.cell](features=self.spec.hidden))(x))
        x = x[:, -1]
        if self.spec.dropout > 0:
            x = _dropout(x, dropout_rate, train, self)
        return nn.Dense(self.out_dim)(x)


def _encode_frames(module: nn.Module, spec: FramesSpec, x: jax.Array, dropout_rate: Rate,
                   train: bool) -> jax.Array:
    """The state a frames model's heads read: ``spec``'s CNN on every frame of ``x``
    (``(B, T, H, W[, C])``), a dense embedding, the recurrent layer's last state and
    dropout. Called from ``module``'s compact call, whose layers these are."""
    if x.ndim == 4:  # (B, T, H, W) grey frames: add a channel axis
        x = x[..., None]
    batch, steps = x.shape[:2]
    frames = _conv_stack(module, spec, x.reshape((batch * steps,) + x.shape[2:]))
    act = ACTIVATIONS[spec.activation]
    z = act(nn.Dense(spec.embed)(frames.reshape(batch * steps, -1)))
    z = _outputs(nn.RNN(RNN_CELLS[spec.cell](features=spec.hidden))(
        z.reshape(batch, steps, -1)))[:, -1]
    if spec.dropout > 0:
        z = _dropout(z, dropout_rate, train, module)
    return z


class Frames(nn.Module):
    """Flax frames model built from a :class:`FramesSpec`: CNN per frame, RNN over time."""
    spec: FramesSpec
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, dropout_rate: Rate = 0.0, train: bool = False,
                 widths: Optional[jax.Array] = None) -> jax.Array:
        del widths  # never padded
        z = _encode_frames(self, self.spec, x, dropout_rate, train)  # before the head: its
        return nn.Dense(self.out_dim)(z)  # layers are named in the order they are made


class Caption(nn.Module):
    """Flax caption model built from a :class:`CaptionSpec`: the frames encoder, then one
    dense head per slot (``Slot_s``), zero-padded to slot-major ``(B, slots * C)``."""
    spec: CaptionSpec
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, dropout_rate: Rate = 0.0, train: bool = False,
                 widths: Optional[jax.Array] = None) -> jax.Array:
        del widths  # never padded
        z = _encode_frames(self, self.spec, x, dropout_rate, train)
        width = max(self.spec.slot_classes)
        heads = [jnp.pad(nn.Dense(v, name=f"Slot_{s}")(z), ((0, 0), (0, width - v)))
                 for s, v in enumerate(self.spec.slot_classes)]
        return jnp.concatenate(heads, -1)


_MODULES = {"mlp": MLP, "cnn": CNN, "rnn": RNN, "frames": Frames, "caption": Caption}


def check_input(spec: ModelSpec, feature_shape: Tuple[int, ...]) -> None:
    """Raises ``ValueError`` when ``feature_shape`` does not suit the model family."""
    rank = len(feature_shape)
    if spec.family == "cnn":
        _check(1 <= rank <= 3, f"a CNN takes 1-D signals (L,), images (H, W) or (H, W, C); "
               f"features of shape {feature_shape} do not fit: reshape them or use an MLP")
        _check(min(feature_shape[:2] if rank == 3 else feature_shape) >= 1,
               f"features of shape {feature_shape} are empty")
    elif spec.family == "rnn":
        _check(1 <= rank <= 2, f"an RNN takes sequences (L,) or (T, F); features of shape "
               f"{feature_shape} do not fit: reshape them to (steps, features) or use an MLP")
    elif spec.family in ("frames", "caption"):
        _check(rank in (3, 4), f"the {spec.family} model takes image sequences (T, H, W) or "
               f"(T, H, W, C); features of shape {feature_shape} are not a sequence of images: "
               f"use --model cnn for single images or rnn for (steps, features)")


def build_model(spec: ModelSpec, feature_shape: Tuple[int, ...], out_dim: int) -> nn.Module:
    """Builds the Flax module of ``spec`` for inputs of ``feature_shape``.

    Args:
      spec: a model spec.
      feature_shape: shape of one example.
      out_dim: number of classes or regression targets.

    Returns:
      A ``flax.linen.Module``.
    """
    check_choice("model family", spec.family, _MODULES)
    check_input(spec, tuple(feature_shape))
    if isinstance(spec, CaptionSpec):
        _check(int(out_dim) == spec.out_dim,
               f"a caption model of slot_classes {list(spec.slot_classes)} has "
               f"{spec.out_dim} outputs, not {out_dim}: build it with the dataset's "
               f"slot_classes")
    return _MODULES[spec.family](spec=spec, out_dim=int(out_dim))


def count_params(params: Params) -> int:
    """Number of scalars in a params pytree (of one member)."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
