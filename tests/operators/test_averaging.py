"""Weight averaging and interpolation of stacked pytrees."""
import jax
import jax.numpy as jnp
import numpy as np

import genetic_dl as gdl
from genetic_dl.operators.averaging import interpolate, uniform_average


def _tree(seed, size):
    rng = np.random.default_rng(seed)
    return {"params": {"w": rng.normal(size=(size, 3, 4)).astype(np.float32),
                       "b": rng.normal(size=(size, 4)).astype(np.float32)}}


def test_the_average_of_a_population_is_the_leafwise_mean(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 5)
    avg = uniform_average(pop.params)
    jax.tree_util.tree_map(lambda a, x: np.testing.assert_allclose(a, np.mean(x, 0), rtol=1e-5,
                                                                   atol=1e-6),
                           avg, pop.params)
    assert jax.tree_util.tree_structure(avg) == jax.tree_util.tree_structure(pop.member(0))


def test_identical_members_average_to_that_member_exactly():
    one = _tree(0, 1)
    stacked = jax.tree_util.tree_map(lambda x: np.repeat(x, 7, 0), one)
    avg = uniform_average(stacked)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, x: np.array_equal(a, x[0]), avg, one))


def test_weights_are_normalised_and_a_zero_weight_excludes_a_nan_member():
    tree = _tree(1, 3)
    tree["params"]["w"][1] = np.nan
    avg = uniform_average(tree, jnp.array([3.0, 0.0, 1.0]))
    for a, x in zip(jax.tree_util.tree_leaves(avg), jax.tree_util.tree_leaves(tree)):
        np.testing.assert_allclose(a, 0.75 * x[0] + 0.25 * x[2], rtol=1e-5, atol=1e-6)


def test_interpolation_ends_at_its_endpoints_and_is_linear_between():
    a = jax.tree_util.tree_map(lambda x: x[0], _tree(2, 1))
    b = jax.tree_util.tree_map(lambda x: x[0], _tree(3, 1))
    for t, want in ((0.0, a), (1.0, b)):
        assert jax.tree_util.tree_all(jax.tree_util.tree_map(
            np.array_equal, interpolate(a, b, t), want))
    mid = interpolate(a, b, 0.25)
    jax.tree_util.tree_map(lambda m, x, y: np.testing.assert_allclose(m, 0.75 * x + 0.25 * y,
                                                                      rtol=1e-6, atol=1e-6),
                           mid, a, b)
    # the average of two members is their midpoint
    pair = jax.tree_util.tree_map(lambda x, y: np.stack([x, y]), a, b)
    jax.tree_util.tree_map(lambda u, m: np.testing.assert_allclose(u, m, rtol=1e-6, atol=1e-6),
                           uniform_average(pair), interpolate(a, b, 0.5))
