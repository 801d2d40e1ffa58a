"""Training FLOPs per example of a network, to charge a budget by compute, not by count.

Zoo specs are counted analytically: a multiply-add is 2 FLOPs, so a dense layer
costs ``2 in out``, a stride-1 'SAME' convolution ``2 positions k^d C_in C_out``
and a recurrent layer ``steps gates (2 F H + 2 H H)`` (GRU 3 gates, LSTM 4,
simple 1). Biases, activations, pooling and the loss are left out: they are
linear in the units, not in the weights. Training costs three forward passes
(the backward pass is about two: the ``6 N`` per token of Kaplan et al., 2020).
Any other network is counted by XLA's cost analysis of its jitted forward pass
(:func:`traced_flops`), which counts a loop's body once: a recurrent layer's
steps are not multiplied in, which is why the zoo's are counted by hand.
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Sequence, Tuple

import jax

from .models import CNNSpec, FramesSpec, MLPSpec, ModelSpec, RNNSpec

# Matrix products per step of each recurrent cell: its gates, each on the input and the state.
RNN_GATES = {"gru": 3, "lstm": 4, "simple": 1}
# A training step's FLOPs per forward pass's: the forward pass and a backward pass of two.
TRAINING_PASSES = 3


def _dense(widths: Sequence[int]) -> int:
    """Forward FLOPs of dense layers ``widths[0] -> widths[1] -> ...``."""
    return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))


def _convs(spec: Any, spatial: List[int], channels: int) -> Tuple[int, int]:
    """Forward FLOPs of ``spec``'s conv stack (each conv then a 2-stride pool while the
    spatial size allows) and the flattened width it hands on."""
    flops = 0
    for filters in spec.filters:
        flops += 2 * math.prod(spatial) * spec.kernel_size ** len(spatial) * channels * filters
        channels = filters
        if spec.pool != "none" and min(spatial) >= 2:
            spatial = [s // 2 for s in spatial]
    return flops, math.prod(spatial) * channels


def _recurrent(cell: str, steps: int, features: int, hidden: int, layers: int) -> int:
    """Forward FLOPs of ``layers`` stacked recurrent layers over ``steps`` steps."""
    flops = 0
    for _ in range(layers):
        flops += steps * RNN_GATES[cell] * (2 * features * hidden + 2 * hidden * hidden)
        features = hidden
    return flops


def forward_flops(spec: ModelSpec, feature_shape: Sequence[int], out_dim: int) -> int:
    """FLOPs of one example's forward pass through the zoo ``spec``.

    Args:
      spec: an ``MLPSpec``, ``CNNSpec``, ``RNNSpec`` or ``FramesSpec``.
      feature_shape: shape of one example (as the model takes it).
      out_dim: output width.

    Returns:
      Multiply-adds times 2 of the dense, conv and recurrent layers.
    """
    shape = [int(s) for s in feature_shape]
    if isinstance(spec, MLPSpec):
        return _dense([math.prod(shape), *spec.hidden, int(out_dim)])
    if isinstance(spec, CNNSpec):
        spatial, channels = (shape[:-1], shape[-1]) if len(shape) == 3 else (shape, 1)
        flops, flat = _convs(spec, spatial, channels)
        return flops + _dense([flat, *spec.dense, int(out_dim)])
    if isinstance(spec, RNNSpec):
        steps, features = (shape[0], 1) if len(shape) == 1 else (shape[0], shape[1])
        return _recurrent(spec.cell, steps, features, spec.hidden, spec.layers) + _dense(
            [spec.hidden, int(out_dim)])
    if isinstance(spec, FramesSpec):
        steps, frame = shape[0], shape[1:]
        spatial, channels = (frame[:-1], frame[-1]) if len(frame) == 3 else (frame, 1)
        flops, flat = _convs(spec, spatial, channels)
        return (steps * (flops + _dense([flat, spec.embed]))
                + _recurrent(spec.cell, steps, spec.embed, spec.hidden, 1)
                + _dense([spec.hidden, int(out_dim)]))
    raise ValueError(f"no FLOP count for {type(spec).__name__}: count it with traced_flops")


def training_flops(spec: ModelSpec, feature_shape: Sequence[int], out_dim: int) -> int:
    """FLOPs of one example's training step (forward and backward) through ``spec``."""
    return TRAINING_PASSES * forward_flops(spec, feature_shape, out_dim)


def traced_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs of ``fn(*args)`` by XLA's cost analysis of its lowered program (no compile).

    Args:
      fn: a jittable function.
      *args: its arguments, arrays or ``jax.ShapeDtypeStruct``.

    Returns:
      The program's ``flops`` (0 when XLA reports none).
    """
    analysis = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))
