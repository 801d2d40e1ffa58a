"""Structure morphisms inside padded shapes: widening and residual deepening keep the
function exactly, narrowing and activation changes by a measured amount; optimizer
moments follow the gradients; a population morphs as its members do, and training
compiles nothing new."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.core import padding
from genetic_dl.core import train as train_mod
from genetic_dl.operators import morphisms, permutation
from genetic_dl.operators.population_morphs import DEEPEN, KEEP, NARROW, WIDEN, morph_population
from genetic_dl.operators.spec_morphisms import change_activation, change_dropout, output_change
from genetic_dl.operators.unit_scores import activation_scores
from genetic_dl.operators.unit_maps import map_state

# (padded spec, feature shape): an MLP and 2-D CNN with residual blocks, a 1-D CNN without
CASES = [(gdl.MLPSpec((16, 16), "tanh", blocks=2), (7,)),
         (gdl.CNNSpec((8, 8), 3, "max", (8,), blocks=2), (8, 8)),
         (gdl.CNNSpec((8, 8), 3, "avg", (8,), "gelu"), (12,))]
IDS = ["mlp", "cnn2d", "cnn1d"]
WIDTHS = jnp.asarray([5.0, 6.0])


def _member(spec, shape, seed=1):
    """A model, its forward pass ``f(params, widths, depth)`` on a fixed batch, and params
    with distinct biases (zero biases would hide a bias that is not mapped)."""
    model = gdl.build_model(spec, shape, 5)
    x = jax.random.normal(jax.random.key(0), (6,) + shape)
    params = model.init(jax.random.key(seed), x)
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.1 * jax.random.normal(jax.random.key(len(str(p))), v.shape)
        if p[-1].key == "bias" else v, params)

    def forward(p, widths, depth=None):
        return model.apply(p, x, widths=widths, **({"depth": depth} if spec.blocks else {}))
    return model, forward, params, x


def _max_change(a, b):
    return float(jnp.max(jnp.abs(a - b)))


@pytest.mark.parametrize("spec,shape", CASES, ids=IDS)
@pytest.mark.parametrize("layer", [0, 1])
def test_widening_keeps_the_function_and_the_new_units_carry_part_of_it(spec, shape, layer):
    _, forward, params, _ = _member(spec, shape)
    depth = jnp.float32(1)
    before = forward(params, WIDTHS, depth)
    full = padding.widths_of(spec)[layer]
    child = morphisms.widen(jax.random.key(2), spec, params, WIDTHS, layer, full + 5,
                            depth=depth)  # clipped to the padded width
    assert child.widths[layer] == full and child.widths[1 - layer] == WIDTHS[1 - layer]
    assert _max_change(forward(child.params, child.widths, depth), before) < 1e-5
    # the old units alone no longer compute it: their outgoing rows were shared out
    assert _max_change(forward(child.params, WIDTHS, depth), before) > 1e-3
    # a traced layer (the population's switch) gives the same child
    traced = morphisms.widen(jax.random.key(2), spec, params, WIDTHS, jnp.int32(layer), full,
                             depth=depth)
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        jnp.array_equal, child.params, traced.params)))


def test_widening_noise_moves_the_outputs_a_little_and_the_key_decides_the_copies():
    spec, shape = CASES[0]
    _, forward, params, _ = _member(spec, shape)
    before = forward(params, WIDTHS, 2.0)
    change = {}
    for noise in (1e-3, 1e-1):
        child = morphisms.widen(jax.random.key(2), spec, params, WIDTHS, 1, 16, depth=2.0,
                                noise=noise)
        change[noise] = _max_change(forward(child.params, child.widths, 2.0), before)
    assert 0 < change[1e-3] < 1e-2 * float(jnp.max(jnp.abs(before))) < change[1e-1]
    same, other = (morphisms.widen(jax.random.key(k), spec, params, WIDTHS, 1, 16, depth=2.0)
                   for k in (2, 3))
    kernel = child.params["params"]["Dense_1"]["kernel"]
    again = morphisms.widen(jax.random.key(2), spec, params, WIDTHS, 1, 16, depth=2.0,
                            noise=1e-1).params["params"]["Dense_1"]["kernel"]
    assert jnp.array_equal(kernel, again)
    assert not jnp.array_equal(same.params["params"]["Dense_1"]["kernel"],
                               other.params["params"]["Dense_1"]["kernel"])


@pytest.mark.parametrize("spec,shape", CASES[:2], ids=IDS[:2])
def test_deepening_activates_a_zeroed_block_that_then_learns(spec, shape):
    model, forward, params, x = _member(spec, shape)
    before = forward(params, WIDTHS, 0.0)
    child = morphisms.deepen(jax.random.key(4), spec, params, WIDTHS, jnp.float32(0))
    assert float(child.depth) == 1.0
    assert _max_change(forward(child.params, WIDTHS, child.depth), before) < 1e-6
    # the block is live: its output layer gets a gradient, and moving it moves the outputs
    grads = jax.grad(lambda p: jnp.sum(jnp.square(
        model.apply(p, x, widths=WIDTHS, depth=child.depth))))(child.params)
    assert float(jnp.max(jnp.abs(grads["params"]["Block_0_out"]["kernel"]))) > 0
    assert float(jnp.max(jnp.abs(grads["params"]["Block_1_out"]["kernel"]))) == 0
    full = morphisms.deepen(jax.random.key(4), spec, params, WIDTHS, jnp.float32(2))
    assert float(full.depth) == 2.0 and all(jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(jnp.array_equal, full.params, params)))


@pytest.mark.parametrize("spec,shape", CASES, ids=IDS)
def test_narrowing_loses_only_the_dropped_units(spec, shape):
    _, forward, params, _ = _member(spec, shape)
    reader = "Dense_1" if spec.family == "mlp" else "Conv_1"
    dead = jnp.asarray([0, 2])  # two live units of layer 0 that nothing reads
    kernel = params["params"][reader]["kernel"]
    params["params"][reader]["kernel"] = kernel.at[..., dead, :].set(0.0)
    before = forward(params, WIDTHS, 2.0)
    child = morphisms.narrow(spec, params, WIDTHS, 0, 3, depth=2.0)
    assert child.widths[0] == 3
    assert _max_change(forward(child.params, child.widths, 2.0), before) < 1e-5
    # the kept units keep their order: live units 1, 3, 4 are now 0, 1, 2
    producer = "Dense_0" if spec.family == "mlp" else "Conv_0"
    bias, kept = params["params"][producer]["bias"], child.params["params"][producer]["bias"]
    assert jnp.array_equal(kept[:3], bias[jnp.asarray([1, 3, 4])])
    # dropping live units changes the outputs, and output_change says by how much
    live = morphisms.narrow(spec, child.params, child.widths, 0, 1, depth=2.0)
    change = output_change(before, forward(live.params, live.widths, 2.0))
    assert float(change["max_abs"]) > 1e-3 and 0 < float(change["relative"])


@pytest.mark.parametrize("spec,shape,layer", [
    (gdl.MLPSpec((16, 16), blocks=1), (7,), 0), (gdl.CNNSpec((8, 8), 3, "max", (8,)), (8, 8), 1)],
    ids=["mlp", "cnn"])
def test_a_batch_shows_a_dead_unit_that_the_weights_call_useful(spec, shape, layer):
    model, forward, params, x = _member(spec, shape)
    producer, reader = ("Dense_0", "Dense_1") if spec.family == "mlp" else ("Conv_1", "Dense_0")
    params["params"][producer]["bias"] = params["params"][producer]["bias"].at[0].set(-1e3)
    params["params"][reader]["kernel"] = params["params"][reader]["kernel"] * 10.0
    before = forward(params, WIDTHS, 1.0)
    kwargs = {"depth": 1.0} if spec.blocks else {}
    scores = activation_scores(model, params, x, WIDTHS, **kwargs)
    assert float(scores[layer][0]) == 0.0 and jnp.all(scores[layer][6:] == 0.0)
    by_data = morphisms.narrow(spec, params, WIDTHS, layer, WIDTHS[layer] - 1, depth=1.0,
                               scores=scores)
    assert _max_change(forward(by_data.params, by_data.widths, 1.0), before) < 1e-5
    by_weights = morphisms.narrow(spec, params, WIDTHS, layer, WIDTHS[layer] - 1, depth=1.0)
    assert _max_change(forward(by_weights.params, by_weights.widths, 1.0), before) > 1e-3


def _adam_state(spec, shape, steps=3):
    """Params and an Adam state after a few steps, so that every moment is non-zero."""
    model, forward, params, x = _member(spec, shape)
    tx = optax.adam(0.01)
    state = tx.init(params)
    for _ in range(steps):
        grads = jax.grad(lambda p: jnp.sum(jnp.square(forward(p, WIDTHS, 2.0))))(params)
        updates, state = tx.update(grads, state)
        params = optax.apply_updates(params, updates)
    return model, forward, params, state


@pytest.mark.parametrize("spec,shape", CASES[:2], ids=IDS[:2])
def test_moments_follow_the_gradient_map_of_widening(spec, shape):
    _, forward, params, state = _adam_state(spec, shape)

    def grad(p, widths):
        return jax.grad(lambda q: jnp.sum(jnp.square(forward(q, widths, 2.0))))(p)
    child = morphisms.widen(jax.random.key(5), spec, params, WIDTHS, 1, 12, state, depth=2.0)
    mapped = jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(child.opt_state)
    assert mapped and int(child.opt_state[0].count) == int(state[0].count)
    # a state holding the parent's gradient maps to the child's gradient (and squares to nu)
    g = grad(params, WIDTHS)
    fake = optax.ScaleByAdamState(jnp.int32(7), g, jax.tree_util.tree_map(jnp.square, g))
    moved = morphisms.widen(jax.random.key(5), spec, params, WIDTHS, 1, 12, fake, depth=2.0)
    g_child = grad(child.params, child.widths)
    for a, b in zip(jax.tree_util.tree_leaves(moved.opt_state.mu),
                    jax.tree_util.tree_leaves(g_child)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(moved.opt_state.nu),
                    jax.tree_util.tree_leaves(g_child)):
        np.testing.assert_allclose(a, jnp.square(b), rtol=1e-3, atol=1e-8)
    # modules that do not touch the widened units keep their moments
    mu, new_mu = state[0].mu["params"], child.opt_state[0].mu["params"]
    first = "Dense_0" if spec.family == "mlp" else "Conv_0"
    assert jnp.array_equal(mu[first]["kernel"], new_mu[first]["kernel"])


def test_narrowing_permutes_and_deepening_resets_the_moments():
    spec, shape = CASES[0]
    _, _, params, state = _adam_state(spec, shape)
    narrowed = morphisms.narrow(spec, params, WIDTHS, 0, 2, state, depth=1.0)
    kept = np.asarray(narrowed.params["params"]["Dense_0"]["bias"][:2])
    order = np.asarray([np.flatnonzero(np.asarray(params["params"]["Dense_0"]["bias"]) == v)[0]
                        for v in kept])
    for moment in ("mu", "nu"):
        old = getattr(state[0], moment)["params"]
        new = getattr(narrowed.opt_state[0], moment)["params"]
        assert jnp.array_equal(new["Dense_0"]["bias"][:2], old["Dense_0"]["bias"][order])
        assert jnp.array_equal(new["Dense_1"]["kernel"][:2], old["Dense_1"]["kernel"][order])
    deeper = morphisms.deepen(jax.random.key(6), spec, params, WIDTHS, 1.0, state)
    mu = deeper.opt_state[0].mu["params"]
    assert not jnp.any(mu["Block_1_in"]["kernel"]) and not jnp.any(mu["Block_1_out"]["bias"])
    old = state[0].mu["params"]
    assert jnp.array_equal(mu["Block_0_in"]["kernel"], old["Block_0_in"]["kernel"])


def test_sgd_momentum_is_mapped_like_adam_first_moment():
    spec, shape = CASES[0]
    _, _, params, _ = _member(spec, shape)
    trace = jax.tree_util.tree_map(jnp.ones_like, params)
    state = optax.trace(0.9).init(params)._replace(trace=trace)
    child = morphisms.widen(jax.random.key(7), spec, params, WIDTHS, 0, 7, (state,), depth=2.0)
    producer = child.opt_state[0].trace["params"]["Dense_0"]["bias"]
    # a source and its c - 1 copies hold 1/c each: the live positions sum to the 5 sources
    assert float(jnp.sum(producer[:7])) == pytest.approx(5.0)
    assert float(jnp.min(producer[:7])) < 1.0 and jnp.all(producer[7:] == 1.0)
    reader = child.opt_state[0].trace["params"]["Dense_1"]["kernel"]
    assert jnp.all(reader == 1.0)
    assert map_state(None, params, lambda t, _: t) is None


def _population(size=4):
    spec = gdl.MLPSpec((16, 16), "relu", blocks=2)
    hp = {"widths": jnp.tile(WIDTHS, (size, 1)), "depth": jnp.ones(size)}
    return gdl.init_population(jax.random.key(0), spec, ((7,), 3), size, "adam", hp)


def test_a_population_morphs_as_each_member_would():
    pop = _population()
    op = jnp.asarray([KEEP, WIDEN, NARROW, DEEPEN])
    layer, width = jnp.asarray([0, 1, 1, 1]), jnp.asarray([9, 11, 3, 9])
    key = jax.random.key(8)
    x = jax.random.normal(jax.random.key(9), (8, 7))
    out = morph_population(key, pop, op, layer, width, batch=x)
    assert out.hparams["widths"].tolist() == [[5, 6], [5, 11], [5, 3], [5, 6]]
    assert out.hparams["depth"].tolist() == [1, 1, 1, 2]
    spec, keys = pop.spec, jax.random.split(key, 4)
    states = [jax.tree_util.tree_map(lambda v, i=i: v[i], pop.opt_state) for i in range(4)]
    scores = activation_scores(pop.model, pop.member(2), x, WIDTHS, jnp.float32(1))
    expect = [morphisms.Child(pop.member(0), states[0], WIDTHS, 1.0),
              morphisms.widen(keys[1], spec, pop.member(1), WIDTHS, 1, 11, states[1]),
              morphisms.narrow(spec, pop.member(2), WIDTHS, 1, 3, states[2], scores=scores),
              morphisms.deepen(keys[3], spec, pop.member(3), WIDTHS, 1.0, states[3])]
    for i, child in enumerate(expect):
        got = (out.member(i), jax.tree_util.tree_map(lambda v, i=i: v[i], out.opt_state))
        for a, b in zip(jax.tree_util.tree_leaves(got),
                        jax.tree_util.tree_leaves((child.params, child.opt_state))):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_training_compiles_nothing_new_after_widening_narrowing_and_deepening(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16, 16), blocks=2), iris, 4,
                              "adam", {"widths": jnp.tile(WIDTHS, (4, 1)), "depth": jnp.ones(4)})
    pop, _ = gdl.train(pop, iris, 1, batch_size=32)
    compiled = train_mod._train._cache_size()  # pylint: disable=protected-access
    before = gdl.evaluate(pop, iris)
    op = jnp.asarray([WIDEN, NARROW, DEEPEN, WIDEN])
    child = morph_population(jax.random.key(1), pop, op, jnp.asarray([0, 1, 0, 1]),
                             jnp.asarray([16, 2, 0, 12]))
    after = gdl.evaluate(child, iris)
    for i in (0, 2, 3):  # exact morphisms: the same loss
        assert float(after["loss"][i]) == pytest.approx(float(before["loss"][i]), abs=1e-5)
    trained, history = gdl.train(child, iris, 1, batch_size=32)
    assert train_mod._train._cache_size() == compiled  # pylint: disable=protected-access
    assert np.all(np.isfinite(history["train_loss"])) and not np.any(trained.failed)


def test_a_residual_block_joins_the_last_hidden_layer_s_permutation_group():
    spec = gdl.MLPSpec((5, 6), "tanh", blocks=2)
    assert gdl.spec_from_dict(gdl.spec_to_dict(spec)) == spec
    assert "blocks" not in gdl.spec_to_dict(gdl.MLPSpec())  # files without blocks read the same
    pop = gdl.init_population(jax.random.key(0), spec, ((7,), 3), 2, "adam", {"depth": [1, 2]})
    groups = permutation.spec_of(pop).as_dict()  # derived from the jaxpr, and verified
    stream = groups["params/Dense_1/kernel"][1]
    assert groups["params/Block_1_out/kernel"] == ("P3", stream) != ("P2", stream)
    assert groups["params/Block_0_in/kernel"] == (stream, "P2")
    assert groups["params/Block_0_out/bias"] == groups["params/Dense_2/kernel"][:1] == (stream,)


def test_activation_and_dropout_changes_keep_the_weights():
    spec, shape = CASES[0]
    _, forward, params, x = _member(spec, shape)
    before = forward(params, WIDTHS, 2.0)
    gelu = change_activation(spec, "gelu")
    after = gdl.build_model(gelu, shape, 5).apply(params, x, widths=WIDTHS, depth=2.0)
    change = output_change(before, after, jnp.argmax(before, -1))
    assert gelu.activation == "gelu" and 0 < float(change["relative"]) < 1
    assert float(change["accuracy_change"]) == float(change["agreement"]) - 1
    assert change_dropout(spec, 0.2) == (gdl.MLPSpec((16, 16), "tanh", 0.2, 2), 0.2)
    with_layers = gdl.MLPSpec(dropout=0.1)
    assert change_dropout(with_layers, 0.3) == (with_layers, 0.3)
    with pytest.raises(ValueError, match="no activation"):
        change_activation(gdl.RNNSpec(), "gelu")
