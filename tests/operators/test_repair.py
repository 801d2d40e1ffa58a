"""REPAIR: averaged norm-free networks get their endpoints' unit statistics back."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.core.pytree import PyTree
from genetic_dl.operators.averaging import interpolate, uniform_average
from genetic_dl.operators.matching import align
from genetic_dl.operators.permutation import spec_of
from genetic_dl.operators import recombination
from genetic_dl.operators.repair import repair, repair_mixed, unit_statistics


def _member(pop, i) -> PyTree:
    return jax.tree_util.tree_map(lambda p: p[i], pop.params)


@pytest.fixture(name="digits_pair", scope="module")
def _digits_pair():
    """Two CNN-free MLPs from independent starts, trained 4 epochs on digits."""
    data = gdl.load_dataset("digits")
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((64, 64)), data, 2)
    pop, _ = gdl.train(pop, data, epochs=4, batch_size=32)
    return pop, data


def test_repaired_units_have_the_mixed_statistics_of_the_endpoints(digits_pair):
    pop, data = digits_pair
    x = jnp.asarray(data.x_train[:256])
    avg = interpolate(_member(pop, 0), _member(pop, 1), 0.3)
    fixed = repair(pop.learner, pop.params, [0.7, 0.3], avg, {}, x)
    stats = [unit_statistics(pop.learner, _member(pop, i), {}, x) for i in range(2)]
    got = unit_statistics(pop.learner, fixed, {}, x)
    before = unit_statistics(pop.learner, avg, {}, x)
    assert list(got) == [("Dense_0",), ("Dense_1",)]  # the output layer is left as averaged
    for path, (mean, std) in got.items():
        want_mean = 0.7 * stats[0][path][0] + 0.3 * stats[1][path][0]
        want_std = 0.7 * stats[0][path][1] + 0.3 * stats[1][path][1]
        np.testing.assert_allclose(mean, want_mean, atol=1e-4)
        np.testing.assert_allclose(std, want_std, rtol=1e-3, atol=1e-5)
        # the average had collapsed: its units' spread was below the endpoints'
        assert float(jnp.mean(before[path][1])) < float(jnp.mean(want_std))


def test_repair_of_a_network_to_its_own_statistics_changes_nothing(digits_pair):
    pop, data = digits_pair
    x = jnp.asarray(data.x_train[:128])
    one = _member(pop, 0)
    both = jax.tree_util.tree_map(lambda p: jnp.stack([p, p]), one)
    fixed = repair(pop.learner, both, [1.0, 1.0], one, {}, x)
    for a, b in zip(jax.tree_util.tree_leaves(fixed), jax.tree_util.tree_leaves(one)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_repair_lowers_the_loss_of_the_midpoint_of_independent_networks(digits_pair):
    """Jordan et al. 2023: most of the barrier left between aligned independent networks
    is the variance collapse that REPAIR undoes."""
    pop, data = digits_pair
    x = jnp.asarray(data.x_train[:512])
    # aligned first (Git Re-Basin weight matching), as the paper does
    b = align(_member(pop, 0), _member(pop, 1), spec_of(pop), matcher="exact")
    ends = jax.tree_util.tree_map(lambda p, q: jnp.stack([p, q]), _member(pop, 0), b)
    mid = uniform_average(ends)
    fixed = repair(pop.learner, ends, [1.0, 1.0], mid, {}, x)

    def val_loss(params):
        one = pop.replace(params=jax.tree_util.tree_map(lambda p: p[None], params),
                          opt_state=jax.tree_util.tree_map(lambda s: s[:1], pop.opt_state),
                          hparams={k: v[:1] for k, v in pop.hparams.items()},
                          keys=pop.keys[:1], ids=pop.ids[:1], failed=pop.failed[:1])
        return float(gdl.evaluate(one, data, "val")["loss"][0])
    ends = [val_loss(_member(pop, i)) for i in range(2)]
    plain, repaired = val_loss(mid), val_loss(fixed)
    assert repaired < plain
    # most of the barrier above the endpoints' mean is gone
    assert repaired - np.mean(ends) < 0.5 * (plain - np.mean(ends))


def _stack(*trees):
    return jax.tree_util.tree_map(lambda *p: jnp.stack(p), *trees)


@pytest.mark.parametrize("method,rate", [("pull", 0.5), ("pairwise", 1.0)])
def test_mixing_weights_give_the_recombined_members(digits_pair, method, rate):
    pop, _ = digits_pair
    four = _stack(*[jax.tree_util.tree_map(lambda q, i=i: q * (1 + 0.1 * i), _member(pop, i % 2))
                    for i in range(4)])
    alive = jnp.array([True, True, False, True])
    key = jax.random.key(5)
    moved = (recombination.pull_to_mean(four, {}, rate, alive) if method == "pull" else
             recombination.pairwise_average(key, four, {}, alive, rate))[0]
    w = recombination.mixing(key, method, rate, alive)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(w[2], jnp.eye(4)[2])  # the failed member takes no part
    for got, before in zip(jax.tree_util.tree_leaves(moved), jax.tree_util.tree_leaves(four)):
        np.testing.assert_allclose(got, jnp.tensordot(w, before, 1), rtol=1e-5, atol=1e-6)


def test_a_repaired_population_has_each_members_mix_of_statistics(digits_pair):
    pop, data = digits_pair
    x = jnp.asarray(data.x_train[:256])
    ends = _stack(_member(pop, 0), _member(pop, 1), _member(pop, 0))
    ends = jax.tree_util.tree_map(lambda p, q: p.at[2].set(jnp.nan * q[0]), ends, ends)
    w = jnp.array([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 1.0]])
    mixed = jax.tree_util.tree_map(lambda p: jnp.tensordot(w, jnp.nan_to_num(p), 1), ends)
    mixed = jax.tree_util.tree_map(lambda m, e: m.at[2].set(e[2]), mixed, ends)
    fixed = repair_mixed(pop.learner, ends, w, mixed, x)
    stats = [unit_statistics(pop.learner, _member(pop, i), {}, x) for i in range(2)]
    for i in range(2):
        got = unit_statistics(pop.learner, jax.tree_util.tree_map(lambda p, i=i: p[i], fixed),
                              {}, x)
        for path, (mean, std) in got.items():
            np.testing.assert_allclose(mean, w[i, 0] * stats[0][path][0]
                                       + w[i, 1] * stats[1][path][0], atol=1e-4)
            np.testing.assert_allclose(std, w[i, 0] * stats[0][path][1]
                                       + w[i, 1] * stats[1][path][1], rtol=1e-3, atol=1e-5)
    for got, kept in zip(jax.tree_util.tree_leaves(fixed), jax.tree_util.tree_leaves(mixed)):
        np.testing.assert_array_equal(got[2], kept[2])  # an identity row: left as it is
