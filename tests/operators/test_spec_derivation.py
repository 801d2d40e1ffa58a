"""Permutation specs derived from a model's traced computation: residual, concatenated,
normalised, embedded, recurrent and control-flow models keep their function when
permuted, and the units that may not move are named with the reason."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.operators import matching, permutation
from genetic_dl.operators.spec_derivation import spec_from_jaxpr


class Residual(nn.Module):
    """Two residual blocks with BatchNorm and dropout after a stem convolution."""
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(6, (3, 3))(x)
        for _ in range(2):
            y = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(5, (3, 3))(x)))
            y = nn.Dropout(0.1, deterministic=not train)(y)
            x = nn.relu(x + nn.BatchNorm(use_running_average=not train)(nn.Conv(6, (3, 3))(y)))
        return nn.Dense(3)(x.mean(axis=(1, 2)))


class Concat(nn.Module):
    """Two branches concatenated with the raw input along the unit axis."""
    @nn.compact
    def __call__(self, x):
        a, b = nn.relu(nn.Dense(6)(x)), nn.tanh(nn.Dense(5)(x))
        return nn.Dense(3)(jnp.concatenate([a, b, x], axis=-1))


class Tokens(nn.Module):
    """An embedding, an LSTM over the tokens and a LayerNorm before the head."""
    cell: type = nn.LSTMCell

    @nn.compact
    def __call__(self, x):
        h = nn.RNN(self.cell(7))(nn.Embed(20, 4)(x))
        return nn.Dense(3)(nn.LayerNorm()(h[:, -1]))


class Gates(nn.Module):
    """One Dense producing two gates, split along its unit axis."""
    @nn.compact
    def __call__(self, x):
        a, b = jnp.split(nn.Dense(8)(x), 2, axis=-1)
        return nn.Dense(3)(nn.sigmoid(a) * nn.tanh(b))


@jax.custom_vjp
def _clipped(x):
    return jnp.clip(x, -3.0, 3.0)


_clipped.defvjp(lambda x: (_clipped(x), None), lambda _, g: (g,))


class Flow(nn.Module):
    """Hidden units through jit, remat, custom_vjp, cond and a while loop."""
    @nn.compact
    def __call__(self, x):
        h = jax.jit(nn.relu)(nn.Dense(5)(x))
        h = jax.checkpoint(lambda v: v * 2.0)(_clipped(h))
        h = jax.lax.cond(jnp.sum(x) > 0, lambda v: v, jnp.tanh, h)
        h = jax.lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] * 0.5), (0, h))[1]
        return nn.Dense(3)(h)


class Flatten(nn.Module):
    """A convolution flattened into a dense layer, channels fastest or slowest."""
    channels_last: bool = True

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3))(x))
        if not self.channels_last:
            h = h.transpose(0, 3, 1, 2)
        return nn.Dense(3)(nn.relu(nn.Dense(5)(h.reshape(h.shape[0], -1))))


class Grouped(nn.Module):
    """A grouped convolution between two ordinary ones, then a depthwise one."""
    groups: int = 2

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3))(x))
        h = nn.relu(nn.Conv(4, (3, 3), feature_group_count=self.groups)(h))
        return nn.Dense(3)(h.mean(axis=(1, 2)))


class TopK(nn.Module):
    """A hidden layer read through top_k: a primitive the derivation does not know."""
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(6)(x)
        other = nn.relu(nn.Dense(4)(x)).sum(-1, keepdims=True)
        return nn.Dense(3)(jax.lax.top_k(h, 6)[0] + other)


def _derive(module, x):
    variables = module.init(jax.random.key(0), x)
    variables = jax.tree_util.tree_map(  # statistics other than the defaults
        lambda v: v + jax.random.uniform(jax.random.key(7), v.shape, v.dtype, 0.1, 0.5)
        if jnp.issubdtype(v.dtype, jnp.floating) else v, variables)

    def forward(v):
        return module.apply(v, x)
    spec = spec_from_jaxpr(variables, forward)
    permutation.verify(spec, variables, forward, jax.random.key(3))
    return spec, variables, forward


def _groups(spec):
    """``{frozenset of (path, axis)}``: the groups whatever their names."""
    return {frozenset(spec.occurrences(g)) for g in spec.groups}


IMAGES = jax.random.normal(jax.random.key(1), (2, 6, 6, 1))
VECTORS = jax.random.normal(jax.random.key(1), (2, 4))
TOKENS = jax.random.randint(jax.random.key(1), (2, 5), 0, 20)


def test_a_residual_add_joins_both_ends_of_every_skip_connection():
    spec, variables, _ = _derive(Residual(), IMAGES)
    table = spec.as_dict()
    stem = table["params/Conv_0/kernel"][3]
    for block in ("Conv_2", "Conv_4"):  # each block's last conv adds onto the stem's units
        assert table[f"params/{block}/kernel"][3] == stem
    for norm in ("BatchNorm_1", "BatchNorm_3"):
        assert table[f"params/{norm}/scale"] == (stem,)
        assert table[f"batch_stats/{norm}/mean"] == table[f"batch_stats/{norm}/var"] == (stem,)
    inner = {table["params/Conv_1/kernel"][3], table["params/Conv_3/kernel"][3]}
    assert len(inner) == 2 and stem not in inner  # each block's inside is its own
    assert table["params/Dense_0/kernel"] == (stem, None)
    assert permutation.group_sizes(spec, variables) == {stem: 6, **{g: 5 for g in inner}}


def test_a_concatenation_keeps_each_branch_permutation_as_segments():
    spec, variables, forward = _derive(Concat(), VECTORS)
    table = spec.as_dict()
    a, b = table["params/Dense_0/kernel"][1], table["params/Dense_1/kernel"][1]
    assert a != b
    assert table["params/Dense_2/kernel"] == ((a, b, 4), None)
    # weight matching through the segments finds a hidden permutation again
    perms = {g: jax.random.permutation(jax.random.key(i), n)
             for i, (g, n) in enumerate(permutation.group_sizes(spec, variables).items())}
    shuffled = permutation.permute(variables, spec, perms)
    aligned = matching.align(variables, shuffled, spec, matcher="exact")
    for x, y in zip(jax.tree_util.tree_leaves(aligned), jax.tree_util.tree_leaves(variables)):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    np.testing.assert_allclose(forward(shuffled), forward(variables), rtol=1e-5, atol=1e-6)


def test_per_neuron_children_take_each_segment_from_its_own_group():
    spec, variables, _ = _derive(Concat(), VECTORS)
    other = jax.tree_util.tree_map(lambda v: v + 10.0, variables)
    child = permutation.per_neuron(jax.random.key(4), variables, other, spec)
    rows = np.asarray(child["params"]["Dense_2"]["kernel"])
    from_b = rows[:, 0] > 5
    hidden_a = np.asarray(child["params"]["Dense_0"]["kernel"])[0] > 5
    hidden_b = np.asarray(child["params"]["Dense_1"]["kernel"])[0] > 5
    np.testing.assert_array_equal(from_b, np.concatenate([hidden_a, hidden_b, [False] * 4]))


@pytest.mark.parametrize("cell", [nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell])
def test_an_embedding_and_a_recurrent_cell_tie_features_gates_and_carries(cell):
    spec, variables, _ = _derive(Tokens(cell), TOKENS)
    table = spec.as_dict()
    name = cell.__name__ + "_0"
    feature = table["params/Embed_0/embedding"][1]
    assert table["params/Embed_0/embedding"][0] is None  # rows are indexed by the tokens
    assert any("Embed_0/embedding[0]" in where and "gather" in why for where, why in spec.notes)
    hidden = table["params/Dense_0/kernel"][0]
    assert {feature, hidden} == set(spec.groups) and feature != hidden
    for path, axes in table.items():
        if path.startswith(f"params/{name}/h"):  # recurrent kernels: hidden to hidden
            assert set(axes) == {hidden}
        elif path.startswith(f"params/{name}/i") and path.endswith("kernel"):
            assert axes == (feature, hidden)
    assert table["params/LayerNorm_0/scale"] == table["params/LayerNorm_0/bias"] == (hidden,)
    assert permutation.group_sizes(spec, variables) == {feature: 4, hidden: 7}


def test_a_split_into_gates_ties_the_gates_as_copies_of_one_group():
    spec, variables, _ = _derive(Gates(), VECTORS)
    (group,) = spec.groups
    assert spec.as_dict()["params/Dense_0/kernel"] == (None, group)
    assert permutation.group_sizes(spec, variables) == {group: 4}


def test_jit_remat_custom_vjp_cond_and_while_loop_are_followed_inside():
    spec, variables, _ = _derive(Flow(), VECTORS)
    (group,) = spec.groups
    assert spec.as_dict()["params/Dense_1/kernel"] == (group, None)
    assert permutation.group_sizes(spec, variables) == {group: 5}


def test_a_flatten_keeps_units_only_when_they_are_the_fastest_axis():
    fast, _, _ = _derive(Flatten(True), IMAGES)
    conv = fast.as_dict()["params/Conv_0/kernel"][3]
    assert conv is not None and fast.as_dict()["params/Dense_1/kernel"][0] == conv
    slow, _, _ = _derive(Flatten(False), IMAGES)
    assert "params/Conv_0/kernel" not in slow.as_dict()
    assert any(where == "params/Conv_0/kernel[3]" and "reshape" in why
               for where, why in slow.notes)
    assert len(slow.groups) == 1  # the dense layer's units still move


def test_grouped_convolutions_keep_their_channels_and_depthwise_ones_follow_them():
    grouped, _, _ = _derive(Grouped(2), IMAGES)
    assert "params/Conv_1/kernel" not in grouped.as_dict()
    assert any("grouped convolution" in why for _, why in grouped.notes)
    depthwise, _, _ = _derive(Grouped(4), IMAGES)
    table = depthwise.as_dict()
    assert table["params/Conv_1/kernel"][3] == table["params/Conv_0/kernel"][3] is not None


def test_an_unknown_primitive_fixes_its_axes_and_the_spec_says_so():
    spec, _, _ = _derive(TopK(), VECTORS)
    assert "params/Dense_0/kernel" not in spec.as_dict()
    assert ("params/Dense_0/kernel[1]", "primitive 'top_k'") in spec.notes
    assert len(spec.groups) == 1  # the other hidden layer still moves


def test_the_printed_spec_is_python_that_gives_the_spec_back():
    spec, variables, _ = _derive(Concat(), VECTORS)
    text = spec.describe(variables)
    assert "6 units" in text and "5 units" in text
    assert gdl.PermutationSpec.of(eval(text)) == spec  # pylint: disable=eval-used


def _xent(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def _tiny_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)
    return gdl.Dataset.from_arrays(x_train=x, y_train=y, x_val=x[:32], y_val=y[:32])


def test_a_wrong_spec_stops_evolve_weights_before_the_first_generation_trains():
    data = _tiny_data()
    bad = {"params/Dense_0/kernel": (None, "A"), "params/Dense_0/bias": ("A",)}
    learner = gdl.Learner.from_linen(Concat(), loss=_xent, permutation_spec=bad)
    pop = gdl.init_population(jax.random.key(0), learner, data, 2)
    trained = []
    with pytest.raises(ValueError, match="does not preserve.*describe"):
        gdl.evolve_weights(jax.random.key(1), pop, data, generations=2, epochs=1,
                           config=gdl.WeightGAConfig(crossover="aligned"),
                           callbacks=[lambda *args: trained.append(args) or False])
    assert not trained


def test_uniform_crossover_needs_no_spec():
    data = _tiny_data()
    learner = gdl.Learner.from_linen(TopK(), loss=_xent)
    pop = gdl.init_population(jax.random.key(0), learner, data, 3)
    result = gdl.evolve_weights(jax.random.key(1), pop, data, generations=2, epochs=1,
                                config=gdl.WeightGAConfig(crossover="uniform"))
    assert np.isfinite(result.best_fitness)
    printed = permutation.describe(pop)
    assert "primitive 'top_k'" in printed and "P0" in printed


class _KeyConstant(nn.Module):
    """A model that closes over a PRNG key (a constant without a numpy form)."""
    @nn.compact
    def __call__(self, x):
        noise = jax.random.normal(KEY, (x.shape[-1],))
        return nn.Dense(3)(nn.relu(nn.Dense(5)(x + noise)))


KEY = jax.random.key(9)


def test_a_key_closed_over_by_the_model_does_not_stop_the_derivation():
    spec, variables, _ = _derive(_KeyConstant(), VECTORS)
    assert permutation.group_sizes(spec, variables) == {"P0": 5}
