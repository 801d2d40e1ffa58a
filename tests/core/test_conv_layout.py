"""Canonical-layout convolutions compute the same function, and the engine uses them."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import genetic_dl as gdl
from genetic_dl.core import conv_layout


@pytest.mark.parametrize("numbers,lhs_shape,rhs_shape,extra", [
    (("NCHW", "OIHW", "NCHW"), (2, 3, 9, 8), (4, 3, 3, 3), {}),
    (("NHWC", "HWIO", "NHWC"), (2, 9, 8, 3), (3, 2, 3, 4), {"window_strides": (2, 1)}),
    (("NWC", "WIO", "NWC"), (2, 11, 4), (3, 2, 6), {"feature_group_count": 2}),
    (("CHWN", "IOHW", "WHNC"), (3, 7, 6, 2), (3, 5, 3, 2), {"rhs_dilation": (2, 1)}),
    (("NHWC", "HWIO", "NCHW"), (2, 8, 8, 2), (3, 3, 2, 4),
     {"lhs_dilation": (2, 2), "padding": ((1, 2), (0, 1))}),
])
def test_canonical_convolution_equals_any_layout(numbers, lhs_shape, rhs_shape, extra):
    k1, k2 = jax.random.split(jax.random.key(0))
    lhs, rhs = jax.random.normal(k1, lhs_shape), jax.random.normal(k2, rhs_shape)
    options = {"window_strides": (1,) * (len(lhs_shape) - 2), "padding": "VALID", **extra}

    def conv(a, b):
        return lax.conv_general_dilated(a, b, dimension_numbers=numbers, **options)
    closed = jax.make_jaxpr(conv)(lhs, rhs)
    (eqn,) = [e for e in closed.jaxpr.eqns if e.primitive is lax.conv_general_dilated_p]
    got = conv_layout.canonical_convolution(lhs, rhs, **eqn.params)
    np.testing.assert_allclose(got, conv(lhs, rhs), rtol=1e-5, atol=1e-5)


class _ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        return nn.Dense(3)(x.mean(axis=(1, 2)))


def _scan_of_grad_steps():
    """Three SGD steps of a conv + BatchNorm net, in a scan over minibatches."""
    net = _ConvBN()
    x = jax.random.normal(jax.random.key(1), (3, 5, 6, 6, 2))
    y = jnp.array([[0, 1, 2, 0, 1]] * 3)
    variables = net.init(jax.random.key(0), x[0], train=False)

    def step(carry, batch):
        params, stats = carry

        def loss(p):
            out, new = net.apply({"params": p, "batch_stats": stats}, batch[0], train=True,
                                 mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(out, batch[1]).mean(), new
        (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        return (params, new["batch_stats"]), value

    def run(params, stats):
        return lax.scan(step, (params, stats), (x, y))
    return run, (variables["params"], variables["batch_stats"])


def test_rewritten_training_scan_agrees_and_is_canonical():
    run, args = _scan_of_grad_steps()
    before = jax.make_jaxpr(run)(*args)
    assert not all(conv_layout.is_canonical(e.params["dimension_numbers"])
                   for e in _convs(before.jaxpr))  # the gradients' convolutions are not
    after = conv_layout.rewrite_jaxpr(before)
    assert conv_layout.convolutions(after) == conv_layout.convolutions(before) == 2
    assert all(conv_layout.is_canonical(e.params["dimension_numbers"])
               for e in _convs(after.jaxpr))
    want = jax.jit(run)(*args)
    got = jax.jit(conv_layout.canonical_convolutions(run))(*args)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def _convs(jaxpr):
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.conv_general_dilated_p:
            yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple) else (value,):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    yield from _convs(inner)


def test_function_without_convolutions_is_left_alone():
    def f(a):
        return lax.scan(lambda c, r: (c + r.sum(), None), 0.0, a)[0]
    a = jnp.arange(12.0).reshape(3, 4)
    assert conv_layout.canonical_convolutions(f)(a) == f(a)
    assert conv_layout.lowering(jax.make_jaxpr(f)(a), "cpu") == conv_layout.DEFAULT_LOWERING


def test_engine_trains_conv_models_with_the_fixed_cpu_lowering(monkeypatch):
    """A conv population on CPU trains under the canonical lowering; its losses match
    XLA's own layouts (the same sums in another order) and reruns are bit-identical."""
    def learner():
        return gdl.Learner.from_linen(
            _ConvBN(), loss=lambda o, b: optax.softmax_cross_entropy_with_integer_labels(
                o, b["y"]).mean(), train_kwargs={"train": True}, eval_kwargs={"train": False},
            mutable=("batch_stats",))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    data = gdl.Dataset.from_arrays(x_train=x[:32], y_train=y[:32], x_val=x[32:], y_val=y[32:])
    pop = gdl.init_population(jax.random.key(0), learner(), data, size=2)
    one = jax.tree_util.tree_map(lambda p: p[0], {**pop.params, **pop.collections})
    lowering = functools.partial(conv_layout.model_lowering,
                                 lambda v, a: learner().module.apply(v, a, train=False), one,
                                 (6, 6, 2), "float32")
    assert lowering("cpu") == conv_layout.CPU_CONV_LOWERING
    assert lowering("gpu") == conv_layout.DEFAULT_LOWERING
    used = []
    original = conv_layout.canonical_convolutions
    monkeypatch.setattr(conv_layout, "canonical_convolutions",
                        lambda fn: used.append(fn) or original(fn))
    jax.clear_caches()
    _, hist = gdl.train(pop, data, epochs=2, batch_size=8)
    assert used  # the training program was traced through the rewrite
    _, again = gdl.train(pop, data, epochs=2, batch_size=8)
    np.testing.assert_array_equal(hist["train_loss"], again["train_loss"])
    jax.clear_caches()  # the XLA-layout program below must be traced anew
    monkeypatch.setattr(conv_layout, "lowered", lambda s, b: (conv_layout.DEFAULT_LOWERING, s))
    _, xla = gdl.train(pop, data, epochs=2, batch_size=8)
    jax.clear_caches()
    np.testing.assert_allclose(hist["train_loss"], xla["train_loss"], rtol=1e-4)
