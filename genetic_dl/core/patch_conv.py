"""Stride-1 'SAME' convolutions as patches times a matrix, for populations on any backend.

Under ``vmap`` over members, XLA:CPU turns ``lax.conv`` into a grouped
convolution that ran about 8x slower per member than one member alone, while
patches times a matrix become one batched matmul. The gradient with respect to
the input is the exception: as patches it is a matmul to ``k^d * C_in`` columns
followed by a scatter-add of shifted slices (col2im), which cost about a fifth
of a small CNN's training step on CPU; as a convolution of the output gradient
with the flipped kernel it is one call to the backend's convolution (a BatchNorm-free
two-layer CNN on 28x28 images trained about 20 % faster per step on CPU; 1-D signals
were level). On CPU a model whose step holds a convolution trains one member at a
time (:mod:`~genetic_dl.core.conv_layout`), so no grouped convolution arises there.
"""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
from jax import lax


def _pads(k: int) -> Tuple[int, int]:
    """'SAME' padding of a width-``k`` kernel: ``(k - 1) // 2`` before, the rest after."""
    low = (k - 1) // 2
    return low, k - 1 - low


def patches(x: jax.Array, k: int) -> jax.Array:
    """Every ``k``-wide (``k x k``) neighbourhood of ``x`` as one feature vector.

    Args:
      x: ``(B, *spatial, C)`` with one or two spatial axes.
      k: the kernel width.

    Returns:
      ``(B, *spatial, k**len(spatial) * C)``, ordered as the kernel ``(k, ..., C)``
      flattens.
    """
    spatial = x.ndim - 2
    xp = jnp.pad(x, ((0, 0),) + (_pads(k),) * spatial + ((0, 0),))
    sizes = x.shape[1:-1]
    if spatial == 1:
        cols = [xp[:, i:i + sizes[0]] for i in range(k)]
    else:
        cols = [xp[:, i:i + sizes[0], j:j + sizes[1]] for i in range(k) for j in range(k)]
    return jnp.concatenate(cols, axis=-1)


def _numbers(spatial: int) -> Tuple[str, str, str]:
    return ("NWC", "WIO", "NWC") if spatial == 1 else ("NHWC", "HWIO", "NHWC")


def _input_gradient(g: jax.Array, kernel: jax.Array) -> jax.Array:
    """The input's cotangent: ``g`` correlated with the flipped kernel, inputs and
    outputs swapped (the transposed convolution of a stride-1 'SAME' one)."""
    spatial, k = kernel.ndim - 2, kernel.shape[0]
    low, high = _pads(k)
    flipped = jnp.flip(kernel, tuple(range(spatial))).swapaxes(-2, -1)
    return lax.conv_general_dilated(g, flipped, (1,) * spatial, [(high, low)] * spatial,
                                    dimension_numbers=_numbers(spatial))


def _apply(x: jax.Array, kernel: jax.Array) -> Tuple[jax.Array, jax.Array]:
    p = patches(x, kernel.shape[0])
    return p @ kernel.reshape(-1, kernel.shape[-1]), p


@jax.custom_vjp
def patch_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1 'SAME' convolution without bias, as ``flax.linen.Conv`` computes it.

    Args:
      x: ``(B, *spatial, C_in)``, one or two spatial axes.
      kernel: ``(k, ..., C_in, C_out)``.

    Returns:
      ``(B, *spatial, C_out)``.
    """
    return _apply(x, kernel)[0]


def _forward(x: jax.Array, kernel: jax.Array) -> Tuple[jax.Array, Tuple[jax.Array, ...]]:
    out, p = _apply(x, kernel)
    return out, (p, kernel)


def _backward(res: Tuple[jax.Array, ...], g: jax.Array) -> Tuple[jax.Array, jax.Array]:
    p, kernel = res
    c_out = kernel.shape[-1]
    dk = (p.reshape(-1, p.shape[-1]).T @ g.reshape(-1, c_out)).reshape(kernel.shape)
    return _input_gradient(g, kernel), dk


patch_conv.defvjp(_forward, _backward)
