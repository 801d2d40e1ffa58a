"""Patch convolutions: values and both gradients equal flax's convolution, member by
member under vmap; the pairwise pooling's gradient."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genetic_dl.core import conv_layout
from genetic_dl.core.models import _pool2
from genetic_dl.core.patch_conv import patch_conv


def _reference(x, kernel):
    conv = nn.Conv(kernel.shape[-1], kernel.shape[:-2], padding="SAME", use_bias=False)
    return conv.apply({"params": {"kernel": kernel}}, x)


def _loss(conv, weights):
    return lambda x, kernel: (conv(x, kernel) * weights).sum()


@pytest.mark.parametrize("shape,k", [((3, 9, 7, 4), 3), ((3, 8, 8, 1), 2), ((2, 10, 6, 3), 4),
                                     ((2, 6, 6, 1), 5), ((3, 11, 5), 3), ((3, 12, 2), 4)])
def test_values_and_gradients_equal_flax_conv(shape, k):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], shape)
    kernel = jax.random.normal(keys[1], (k,) * (len(shape) - 2) + (shape[-1], 5))
    weights = jax.random.normal(keys[2], shape[:-1] + (5,))
    assert jnp.allclose(patch_conv(x, kernel), _reference(x, kernel), atol=1e-4)
    ours = jax.grad(_loss(patch_conv, weights), (0, 1))(x, kernel)
    ref = jax.grad(_loss(_reference, weights), (0, 1))(x, kernel)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_members_under_vmap_are_members_alone():
    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(keys[0], (4, 2, 6, 6, 3))
    kernel = jax.random.normal(keys[1], (4, 3, 3, 3, 5))
    weights = jax.random.normal(keys[2], (2, 6, 6, 5))
    grad = jax.grad(_loss(patch_conv, weights), (0, 1))
    together = jax.vmap(grad)(x, kernel)
    for m in range(4):
        alone = grad(x[m], kernel[m])
        for a, b in zip(together, alone):
            np.testing.assert_allclose(a[m], b, rtol=1e-5, atol=1e-5)


def test_input_gradient_is_one_convolution_and_forward_has_none():
    x, kernel = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    assert conv_layout.convolutions(jax.make_jaxpr(patch_conv)(x, kernel).jaxpr) == 0
    grads = jax.make_jaxpr(jax.grad(lambda a, b: patch_conv(a, b).sum(), (0, 1)))(x, kernel)
    assert conv_layout.convolutions(grads.jaxpr) == 1


@pytest.mark.parametrize("shape", [(2, 6, 6, 3), (2, 8, 3)])
def test_pooling_gradient_goes_to_the_window_maximum(shape):
    x = jax.random.normal(jax.random.key(2), shape)  # no ties
    window = (2,) * (len(shape) - 2)
    ours = jax.grad(lambda z: (_pool2(z, "max") ** 2).sum())(x)
    ref = jax.grad(lambda z: (nn.max_pool(z, window, strides=window) ** 2).sum())(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_tied_maxima_share_the_gradient_equally():
    grad = jax.grad(lambda z: _pool2(z, "max").sum())(jnp.zeros((1, 2, 2, 1)))
    np.testing.assert_allclose(grad, jnp.full((1, 2, 2, 1), 0.25))
