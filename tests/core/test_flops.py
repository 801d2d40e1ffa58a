"""Training FLOPs of the zoo's networks: hand counts, scaling, and XLA's own count."""
import jax
import jax.numpy as jnp
import pytest

from genetic_dl.core.flops import forward_flops, traced_flops, training_flops
from genetic_dl.core.models import CNNSpec, FramesSpec, MLPSpec, RNNSpec, build_model


def test_an_mlp_784_128_10_and_its_wider_and_deeper_versions():
    mlp = MLPSpec((128,))
    assert forward_flops(mlp, (28, 28), 10) == 2 * (784 * 128 + 128 * 10)
    assert training_flops(mlp, (784,), 10) == 3 * 2 * (784 * 128 + 128 * 10)
    # doubling the width doubles both layers it touches
    assert forward_flops(MLPSpec((256,)), (784,), 10) == 2 * forward_flops(mlp, (784,), 10)
    deep, wide = MLPSpec((128, 64)), MLPSpec((256, 64))
    assert forward_flops(wide, (784,), 10) - forward_flops(deep, (784,), 10) == \
        2 * (784 * 128 + 128 * 64)


def test_conv_and_recurrent_hand_counts():
    # 8x8 image, 8 filters of 3x3: 64 positions; a 2-stride pool leaves 4x4x8 for the head
    cnn = CNNSpec((8,), 3, "max", (16,))
    assert forward_flops(cnn, (8, 8), 10) == 2 * 64 * 9 * 8 + 2 * 128 * 16 + 2 * 16 * 10
    twice = CNNSpec((16,), 3, "max", (16,))  # the conv and the flattened head layer double
    assert forward_flops(twice, (8, 8, 1), 10) == 2 * (2 * 64 * 9 * 8 + 2 * 128 * 16) + 320
    assert forward_flops(CNNSpec((8,), 3, "none", (16,)), (12,), 10) == \
        2 * 12 * 3 * 8 + 2 * 96 * 16 + 320  # a 1-D signal, no pooling
    # a GRU: 3 gates on the input and the state per step, 8 steps of 8 features
    gru = 8 * 3 * (2 * 8 * 16 + 2 * 16 * 16)
    assert forward_flops(RNNSpec("gru", 16), (8, 8), 10) == gru + 2 * 16 * 10
    assert forward_flops(RNNSpec("lstm", 16), (8, 8), 10) == gru * 4 // 3 + 2 * 16 * 10
    assert forward_flops(RNNSpec("gru", 16, 2), (8, 8), 10) == \
        gru + 8 * 3 * (2 * 16 * 16 * 2) + 2 * 16 * 10  # the second layer reads the first
    frames = forward_flops(FramesSpec((8,), 3, "max", 16, "simple", 16), (4, 8, 8), 10)
    assert frames == 4 * (2 * 64 * 9 * 8 + 2 * 128 * 16) + 4 * (2 * 16 * 16 * 2) + 320


@pytest.mark.parametrize("spec, shape, rel", [(MLPSpec((128,)), (784,), 0.01),
                                              (CNNSpec((8, 16), 3, "max", (32,)), (16, 16), 0.06)])
def test_the_count_agrees_with_xla_up_to_biases_activations_and_pooling(spec, shape, rel):
    model = build_model(spec, shape, 10)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + shape))
    xla = traced_flops(model.apply, params, jax.ShapeDtypeStruct((1,) + shape, jnp.float32))
    assert xla >= forward_flops(spec, shape, 10)
    assert xla == pytest.approx(forward_flops(spec, shape, 10), rel=rel)
