"""Recombination during training: WASH's weight shuffle, PAPA's pull to the mean and
pairwise averaging, on params and the optimizer state alike; shared_start."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.operators import recombination as rec

P = 6
ALIVE = np.array([True, True, False, True, True, True])


def _params(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"params": {"dense": {"kernel": jax.random.normal(k1, (P, 60, 50)),
                                 "bias": jax.random.normal(k2, (P, 50))}}}


def _adam_state(params):
    """Adam's state whose moments are known functions of the params (mu = 2 p + 1,
    nu = p ** 2), so that moving them as the params keeps the functions."""
    state = jax.vmap(optax.adam(1e-3).init)(params)
    adam = state[0]._replace(mu=jax.tree_util.tree_map(lambda p: 2 * p + 1, params),
                             nu=jax.tree_util.tree_map(jnp.square, params),
                             count=jnp.arange(P, dtype=jnp.int32))
    return (adam,) + tuple(state[1:])


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _with_failed_nan(params):
    """Member 2 failed with NaN weights: nothing of it may reach the others."""
    return jax.tree_util.tree_map(lambda x: x.at[2].set(jnp.nan), params)


def test_wash_conserves_each_positions_values_and_shuffles_about_rate_of_them():
    params = _with_failed_nan(_params())
    state = _adam_state(params)
    new, new_state = jax.jit(rec.wash)(jax.random.key(1), params, state, 0.2, ALIVE)
    moved = []
    for x, y in zip(_leaves(params), _leaves(new)):
        # the alive members' values at each position, as a multiset, are unchanged
        np.testing.assert_array_equal(np.sort(x[ALIVE], 0), np.sort(y[ALIVE], 0))
        np.testing.assert_array_equal(y[2], x[2])  # the failed member neither gives nor takes
        assert np.isfinite(y[ALIVE]).all()
        moved.append((x[ALIVE] != y[ALIVE]).any(0).ravel())
    moved = np.concatenate(moved)
    assert abs(moved.mean() - 0.2) < 0.03, moved.mean()
    # Adam's moments took the same permutation as the params, position by position
    adam = new_state[0]
    for p, mu, nu in zip(_leaves(new), _leaves(adam.mu), _leaves(adam.nu)):
        np.testing.assert_array_equal(mu[ALIVE], 2 * p[ALIVE] + 1)
        np.testing.assert_array_equal(nu[ALIVE], np.square(p[ALIVE]))
    np.testing.assert_array_equal(adam.count, np.arange(P))  # not shaped like params: own


def test_a_shuffled_position_takes_each_members_value_from_a_random_other_member():
    whose = {"params": {"w": jnp.broadcast_to(jnp.arange(P, dtype=jnp.float32)[:, None],
                                              (P, 6000))}}
    new, _ = jax.jit(rec.wash)(jax.random.key(3), whose, (), 1.0, ALIVE)
    source = np.asarray(new["params"]["w"]).astype(int)
    for i in np.flatnonzero(ALIVE):
        counts = np.bincount(source[i], minlength=P)
        assert counts[i] == 0 and counts[2] == 0  # never its own, never the failed one's
        others = counts[ALIVE & (np.arange(P) != i)] / source.shape[1]
        np.testing.assert_allclose(others, 0.25, atol=0.03)  # uniform over the 4 others
    np.testing.assert_array_equal(source[2], 2)


def test_pull_and_pairwise_keep_the_mean_and_leave_a_failed_member_alone():
    params = _with_failed_nan(_params())
    state = _adam_state(params)
    for new, new_state in (rec.pull_to_mean(params, state, 0.3, ALIVE),
                           rec.pairwise_average(jax.random.key(2), params, state, ALIVE),
                           rec.pairwise_average(jax.random.key(2), params, state, ALIVE, 0.4)):
        for x, y in zip(_leaves(params), _leaves(new)):
            np.testing.assert_allclose(y[ALIVE].mean(0), x[ALIVE].mean(0), atol=1e-6)
            np.testing.assert_array_equal(y[2], x[2])
            assert np.isfinite(y[ALIVE]).all() and not np.array_equal(x, y, equal_nan=True)
        adam = new_state[0]
        for p, mu in zip(_leaves(new), _leaves(adam.mu)):  # mu = 2 p + 1 is affine: kept
            np.testing.assert_allclose(mu[ALIVE], 2 * p[ALIVE] + 1, atol=1e-5)


def test_full_averaging_makes_members_equal():
    params, state = _params(), _adam_state(_params())
    new, new_state = rec.pull_to_mean(params, state, 1.0, ALIVE)
    for tree in (new, new_state[0].mu, new_state[0].nu):
        for y in _leaves(tree):
            assert all(np.array_equal(y[0], y[i]) for i in np.flatnonzero(ALIVE))
            assert not np.array_equal(y[0], y[2])
    new, _ = rec.pairwise_average(jax.random.key(4), params, state, ALIVE)
    flat = np.concatenate([y.reshape(P, -1) for y in _leaves(new)], 1)
    twins = [[j for j in range(P) if j != i and np.array_equal(flat[i], flat[j])]
             for i in range(P)]
    # 5 alive: two pairs, each equal to its pair's mean, and one left alone
    assert sorted(map(len, twins)) == [0, 0, 1, 1, 1, 1] and twins[2] == []
    assert all(twins[twins[i][0]] == [i] for i in range(P) if twins[i])


@pytest.mark.parametrize("method", ["wash", "pull", "pairwise"])
def test_rate_zero_is_the_identity(method):
    params = _params()
    state = _adam_state(params)
    pop = _population(params, state)
    new = rec.recombine(jax.random.key(5), pop, method, 0.0)
    for x, y in zip(_leaves((pop.params, pop.opt_state)), _leaves((new.params, new.opt_state))):
        np.testing.assert_array_equal(x, y)


def _population(params, state):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((50,)), ((60,), 50), P)
    return pop.replace(params=params, opt_state=state)


def test_a_new_rate_does_not_compile_a_new_program():
    params = _params()
    state = _adam_state(params)
    for fn, args in ((jax.jit(rec.wash), (jax.random.key(0), params, state)),
                     (jax.jit(rec.pull_to_mean), (params, state)),
                     (jax.jit(lambda *a: rec.pairwise_average(*a[:3], rate=a[3])),
                      (jax.random.key(0), params, state))):
        outs = [fn(*args, jnp.float32(0.01))]
        compiled = fn._cache_size()  # pylint: disable=protected-access
        outs += [fn(*args, jnp.float32(rate)) for rate in (0.3, 1.0)]
        assert fn._cache_size() == compiled  # pylint: disable=protected-access
        assert not np.array_equal(_leaves(outs[0])[1], _leaves(outs[2])[1])


def test_shared_start_copies_one_members_state_and_keeps_each_members_own_identity():
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), ((4,), 3), 4,
                              hparams={"learning_rate": np.array([1e-3, 2e-3, 3e-3, 4e-3])})
    pop = pop.replace(failed=jnp.array([False, False, True, False]))
    start = rec.shared_start(pop, member=1)
    for x, y in zip(_leaves((pop.params, pop.opt_state, pop.collections)),
                    _leaves((start.params, start.opt_state, start.collections))):
        assert all(np.array_equal(y[i], x[1]) for i in range(4))
    for name in ("keys", "ids", "hparams"):
        for x, y in zip(_leaves(getattr(pop, name)), _leaves(getattr(start, name))):
            np.testing.assert_array_equal(x, y)
    assert not np.asarray(start.failed).any()  # the failed flag follows the weights
    assert len({tuple(k) for k in np.asarray(start.keys).tolist()}) == 4
    with pytest.raises(ValueError, match=r"member 4 is not in a population of 4"):
        rec.shared_start(pop, member=4)
