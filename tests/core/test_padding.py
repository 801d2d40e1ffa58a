"""Padded shapes: patch convolutions, reshape pooling, unit masks, shrink/embed, the engine's
epoch-wise groups and Lamarckian starts."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import genetic_dl as gdl
from genetic_dl.core import padding
from genetic_dl.search.config_groups import config_to_spec
from genetic_dl.search.trainer_objective import TrainerObjective
from genetic_dl.core.models import PatchConv, _pool2


@pytest.mark.parametrize("shape", [(3, 9, 4), (3, 7, 5, 2)])
@pytest.mark.parametrize("k", [1, 3, 4, 5])
def test_patch_conv_equals_flax_conv(shape, k):
    x = jax.random.normal(jax.random.key(0), shape)
    params = PatchConv(6, k).init(jax.random.key(1), x)
    ref = nn.Conv(6, (k,) * (len(shape) - 2)).apply(params, x)
    assert jnp.allclose(PatchConv(6, k).apply(params, x), ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 9, 4), (3, 7, 5, 2), (2, 8, 8, 1)])
def test_reshape_pooling_equals_flax_pooling(shape):
    x = jax.random.normal(jax.random.key(0), shape)
    window = (2,) * (len(shape) - 2)
    assert jnp.array_equal(_pool2(x, "max"), nn.max_pool(x, window, strides=window))
    assert jnp.allclose(_pool2(x, "avg"), nn.avg_pool(x, window, strides=window), atol=1e-6)


CASES = [(gdl.MLPSpec((16, 8, 32), "sigmoid"), (40,)),
         (gdl.CNNSpec((4, 8), 3, "max", (16,)), (40,)),
         (gdl.CNNSpec((4, 8), 3, "avg", (16,), "tanh"), (8, 8)),
         (gdl.MLPSpec((16, 8, 24), "tanh", blocks=2), (40,)),  # residual blocks: masked too
         (gdl.CNNSpec((4, 8), 3, "max", (16,), blocks=1), (8, 8))]


@pytest.mark.parametrize("spec,shape", CASES, ids=repr)
def test_masked_padded_network_is_the_true_network(spec, shape):
    padded = padding.pad_spec(spec, padding.padded_width([spec]))
    model = gdl.build_model(padded, shape, 10)
    x = jax.random.normal(jax.random.key(0), (5,) + shape)
    params = model.init(jax.random.key(1), x)
    widths = jnp.asarray(padding.widths_of(spec), jnp.float32)
    out = model.apply(params, x, widths=widths)
    true_spec, true_params = padding.shrink(padded, params, widths)
    assert true_spec == spec
    assert gdl.count_params(true_params) == gdl.count_params(
        gdl.build_model(spec, shape, 10).init(jax.random.key(2), x))
    assert jnp.allclose(gdl.build_model(spec, shape, 10).apply(true_params, x), out, atol=1e-5)
    back = padding.embed(spec, true_params, params)
    assert jnp.allclose(model.apply(back, x, widths=widths), out, atol=1e-6)


@pytest.mark.parametrize("spec", [CASES[0][0], CASES[2][0]], ids=repr)
def test_padded_member_trains_exactly_like_the_true_member(spec, digits):
    data = digits
    true_pop = gdl.init_population(jax.random.key(3), spec, data, 1, "adam")
    padded = padding.pad_spec(spec, padding.padded_width([spec]))
    widths = padding.member_widths([spec])
    pad_pop = gdl.init_population(jax.random.key(3), padded, data, 1, "adam", {"widths": widths})
    start = padding.embed(spec, true_pop.member(0), pad_pop.member(0))
    pad_pop = pad_pop.replace(params=jax.tree_util.tree_map(lambda x: x[None], start))
    true_pop, _ = gdl.train(true_pop, data, 2, batch_size=32)
    pad_pop, _ = gdl.train(pad_pop, data, 2, batch_size=32)
    _, shrunk = padding.shrink(padded, pad_pop.member(0), widths[0])
    for a, b in zip(jax.tree_util.tree_leaves(shrunk),
                    jax.tree_util.tree_leaves(true_pop.member(0))):
        assert jnp.allclose(a, b, atol=2e-4)


def test_depth_is_a_whole_number_of_a_spec_s_blocks():
    spec = gdl.MLPSpec((8,), blocks=2)
    for depth, message in (([0.5, 1], "whole number"), ([3, 0], r"\[0, 2\]")):
        with pytest.raises(ValueError, match=message):
            gdl.init_population(jax.random.key(0), spec, ((4,), 3), 2, "adam", {"depth": depth})
    with pytest.raises(ValueError, match="blocks > 0"):
        gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), ((4,), 3), 2, "adam",
                            {"depth": 0})
    pop = gdl.init_population(jax.random.key(0), spec, ((4,), 3), 2, "adam", {"depth": [0, 2]})
    assert pop.hparams["depth"].tolist() == [0, 2]
    assert dict(pop.learner.hparam_kwargs)["depth"] == "depth"


def test_rescaled_init_has_the_true_fan_in_scale():
    spec = gdl.MLPSpec((8, 8))
    padded = padding.pad_spec(spec, 256)
    pop = gdl.init_population(jax.random.key(0), padded, ((40,), 10), 64, "adam",
                              {"widths": padding.member_widths([spec] * 64)})
    scaled = padding.rescale_init(padded, pop.params, pop.hparams["widths"])
    live = scaled["params"]["Dense_1"]["kernel"][:, :8, :8]
    true = gdl.init_population(jax.random.key(1), spec, ((40,), 10), 64, "adam")
    ref = true.params["params"]["Dense_1"]["kernel"]
    assert float(jnp.std(live)) == pytest.approx(float(jnp.std(ref)), rel=0.1)


def test_engine_epoch_groups_match_one_long_training(iris):
    base = {"family": "mlp", "layers": 1, "width_0": 16, "learning_rate": 0.01,
            "batch_size": 32, "optimizer": "adam", "dropout": 0.0, "weight_decay": 0.0}
    configs = [dict(base, epochs=2), dict(base, epochs=5), dict(base, epochs=3)]
    fit = TrainerObjective(iris, seed=7, metric="loss").evaluate(configs)
    key = jax.random.fold_in(jax.random.key(7), 0)
    pop = gdl.init_population(key, config_to_spec(configs[0]), iris, 4, "adam",
                              {"learning_rate": 0.01, "weight_decay": 0.0})
    for i, c in enumerate(configs):
        trained, _ = gdl.train(pop, iris, c["epochs"], batch_size=32)
        assert -float(gdl.evaluate(trained, iris)["loss"][i]) == pytest.approx(fit[i], abs=1e-5)


@pytest.mark.parametrize("pad", [False, True])
def test_lamarckian_children_start_from_trained_weights(iris, pad):
    base = {"family": "mlp", "layers": 2, "width_0": 16, "width_1": 8, "batch_size": 32,
            "optimizer": "adam", "epochs": 10, "learning_rate": 0.01}
    fresh = TrainerObjective(iris, seed=0, pad_widths=pad)
    lamarck = TrainerObjective(iris, seed=0, pad_widths=pad, lamarckian=True)
    first = lamarck.evaluate([base])[0]
    assert fresh.evaluate([base])[0] == pytest.approx(first)
    still = dict(base, learning_rate=1e-7, epochs=5)  # barely moves from its start
    inherited = lamarck.evaluate([still, dict(still, width_0=32)])
    cold = fresh.evaluate([still])[0]
    assert inherited[0] == pytest.approx(first, abs=0.05) and inherited[0] > cold + 0.2
    (spec, _), = [k for k in lamarck.archive if k[0].hidden == (16, 8)]
    assert gdl.count_params(lamarck.archive[(spec, "adam")]["params"]) == 4 * 16 + 16 + \
        16 * 8 + 8 + 8 * 3 + 3
