"""Weight matching: permutations that keep a network's function, greedy and exact
assignments, and a population aligned to one member."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.operators import matching
from genetic_dl.core import sharding
from genetic_dl.weights import WeightGAConfig
from conftest import run_python

CNN = gdl.CNNSpec((4, 5), 3, "max", (6,))


def _pair(spec, shape):
    pop = gdl.init_population(jax.random.key(0), spec, (shape, 3), 2)
    return pop.member(0), pop.member(1), pop.model


@pytest.mark.parametrize("matcher", matching.MATCHERS)
@pytest.mark.parametrize("spec,shape", [(gdl.MLPSpec((6, 5)), (4,)), (CNN, (8, 8)),
                                        (gdl.CNNSpec((6, 5), 3, "none", ()), (10,))],
                         ids=["mlp", "cnn2d", "cnn1d_no_head"])
def test_alignment_preserves_function_and_finds_a_hidden_permutation(spec, shape, matcher):
    a, b, model = _pair(spec, shape)
    x = jax.random.normal(jax.random.key(9), (7,) + shape)
    aligned_b = matching.align(a, b, matcher=matcher)
    np.testing.assert_allclose(model.apply(aligned_b, x), model.apply(b, x), rtol=1e-5,
                               atol=1e-6)
    # a permuted copy of a is mapped back onto a exactly
    chain = matching.unit_chain(a)
    perms = [jax.random.permutation(jax.random.key(4 + l), a["params"][n]["kernel"].shape[-1])
             for l, n in enumerate(chain[:-1])]
    shuffled = matching.permute_units(a, perms)
    np.testing.assert_allclose(model.apply(shuffled, x), model.apply(a, x), rtol=1e-5, atol=1e-6)
    back = matching.align(a, shuffled, matcher=matcher)
    for x1, x2 in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(a)):
        np.testing.assert_array_equal(x1, x2)


@pytest.mark.parametrize("spec,shape", [(gdl.MLPSpec((6, 5)), (4,)), (CNN, (8, 8))],
                         ids=["mlp", "cnn2d"])
def test_align_population_equals_pairwise_alignment_to_the_reference(spec, shape):
    pop = gdl.init_population(jax.random.key(0), spec, (shape, 3), 5)
    chain = matching.unit_chain(pop.member(0))
    perms = [jax.random.permutation(jax.random.key(4 + l), pop.member(0)["params"][n]["kernel"]
                                    .shape[-1]) for l, n in enumerate(chain[:-1])]
    members = [pop.member(i) for i in range(4)] + [matching.permute_units(pop.member(2), perms)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *members)
    # an optimizer state whose moments equal the params must stay equal to them
    state = (stacked, {"count": jnp.arange(5)})
    out, (moments, other) = matching.align_population(stacked, 2, state)
    x = jax.random.normal(jax.random.key(9), (7,) + shape)
    for i, member in enumerate(members):
        mine = jax.tree_util.tree_map(lambda v, i=i: v[i], out)
        want = member if i == 2 else matching.align(members[2], member)
        for x1, x2 in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(want)):
            np.testing.assert_array_equal(x1, x2)
        np.testing.assert_allclose(pop.model.apply(mine, x), pop.model.apply(member, x),
                                   rtol=1e-5, atol=1e-6)
    for x1, x2 in zip(jax.tree_util.tree_leaves(moments), jax.tree_util.tree_leaves(out)):
        np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(other["count"], np.arange(5))
    # the permuted copy of the reference maps back onto it, and the device check then knows
    # it as matched (no host assignment needed); unrelated members may need the host
    for x1, x2 in zip(jax.tree_util.tree_leaves(members[2]),
                      jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda v: v[4], out))):
        np.testing.assert_array_equal(x1, x2)
    unmatched = matching._unmatched(out, 2)  # pylint: disable=protected-access
    assert not bool(unmatched[2]) and not bool(unmatched[4])


def _agreement(pop, perms, i):
    """Git Re-Basin's objective: sum of <member 0, member i permuted by ``perms``>."""
    mine = matching.permute_units(pop.member(i), [p[i] for p in perms])
    return sum(float(np.vdot(x, y)) for x, y in zip(
        jax.tree_util.tree_leaves(pop.member(0)), jax.tree_util.tree_leaves(mine)))


def test_weight_matching_passes_and_members():
    pop = gdl.init_population(jax.random.key(3), gdl.MLPSpec((12, 10, 8)), ((5,), 3), 6)
    params = jax.tree_util.tree_map(np.asarray, pop.params)

    identity = matching.match_population(params, 0, members=[], matcher="exact")
    runs = [matching.match_population(params, 0, passes=k, matcher="exact")
            for k in (1, 2, None)]
    for i in range(1, 6):  # coordinate ascent: every sweep keeps or raises the objective
        scores = [_agreement(pop, perms, i) for perms in [identity] + runs]
        assert all(s1 <= s2 + 1e-4 for s1, s2 in zip(scores, scores[1:])), scores
        assert scores[-1] > scores[0]
    some = matching.match_population(params, 0, members=[2, 4], matcher="exact")
    for l, perm in enumerate(some):  # members left out keep the identity
        for i in range(6):
            want = runs[-1][l][i] if i in (2, 4) else np.arange(perm.shape[1])
            np.testing.assert_array_equal(perm[i], want)
    with pytest.raises(ValueError, match="passes"):
        WeightGAConfig(crossover="aligned", crossover_kw=(("passes", 0),))


def _greedy_reference(s):
    """Greedy matching by definition: take the largest remaining entry, one at a time."""
    s, perm = np.array(s, np.float64), np.zeros(len(s), int)
    s[~np.isfinite(s)] = -1e300
    for _ in range(len(s)):
        i, j = np.unravel_index(np.argmax(s), s.shape)
        perm[i], s[i, :], s[:, j] = j, -np.inf, -np.inf
    return perm


def _greedy_order_exists(s, perm) -> bool:
    """Whether some greedy order (ties broken any way) takes exactly the pairs of ``perm``:
    one of its pairs always holds the largest entry left."""
    s = np.asarray(s, np.float64)
    s = np.where(np.isfinite(s), s, -1e300)
    left = np.ones(len(s), bool)
    for _ in range(len(s)):
        rows = np.flatnonzero(left)
        cols = np.setdiff1d(np.arange(len(s)), perm[~left])
        top = s[np.ix_(rows, cols)].max()
        hit = rows[s[rows, perm[rows]] == top]
        if not hit.size:
            return False
        left[hit[0]] = False
    return True


@pytest.mark.parametrize("n", [5, 40, 128])
def test_greedy_assignment_is_the_greedy_matching(n):
    rng = np.random.default_rng(n)
    batch = rng.normal(size=(4, n, n)).astype(np.float32)
    batch[1] = np.round(batch[1])  # many ties
    batch[2, : n // 2] = np.nan  # failed members' similarities
    batch[3] = batch[3] @ batch[3].T  # a permuted copy's similarity shape
    perms = np.asarray(jax.jit(jax.vmap(matching.greedy_assignment))(batch))
    for s, perm in zip(batch, perms):
        assert sorted(perm.tolist()) == list(range(n))
        if not np.isnan(s).any() and len(np.unique(s)) == s.size:
            np.testing.assert_array_equal(perm, _greedy_reference(s))
        assert _greedy_order_exists(s, perm)  # with ties: a greedy order, not one tie-break
        assert not _greedy_order_exists(s, np.roll(perm, 1))


def test_greedy_weight_matching_on_the_device():
    pop = gdl.init_population(jax.random.key(3), gdl.MLPSpec((40, 36, 8)), ((5,), 3), 6)

    identity = matching.match_population(pop.params, 0, members=[])
    exact = matching.match_population(pop.params, 0, matcher="exact")
    runs = [matching.match_population(pop.params, 0, passes=k, matcher="greedy")
            for k in (1, None)]
    for i in range(1, 6):  # each sweep keeps or raises the objective; close to exact
        scores = [_agreement(pop, perms, i) for perms in [identity] + runs]
        assert all(s1 <= s2 + 1e-4 for s1, s2 in zip(scores, scores[1:])), scores
        gain, best = scores[-1] - scores[0], _agreement(pop, exact, i) - scores[0]
        assert 0.7 * best < gain <= best + 1e-4, (gain, best)
    jitted = matching.match_on_device(pop.params, jnp.asarray(0))
    for got, want in zip(jitted, runs[-1]):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got[0], np.arange(got.shape[1]))  # the reference
    some = matching.match_population(pop.params, 0, members=[2, 4], matcher="greedy")
    for l, perm in enumerate(some):  # members left out keep the identity
        for i in range(6):
            want = runs[-1][l][i] if i in (2, 4) else np.arange(perm.shape[1])
            np.testing.assert_array_equal(perm[i], want)
    with pytest.raises(ValueError, match="matcher"):
        WeightGAConfig(crossover="aligned", crossover_kw=(("matcher", "hungarian"),))
    with pytest.raises(ValueError, match="matcher"):
        matching.align(pop.member(0), pop.member(1), matcher="hungarian")


def check_chunks_equal_one_vmap(size):
    """Matching ``size`` rows in chunks (and on 2 devices when there are 2 and the
    rows split evenly) equals one vmap over all pairs."""
    pop = gdl.init_population(jax.random.key(5), gdl.MLPSpec((12, 10)), ((5,), 3), size)
    other = jax.tree_util.tree_map(lambda x: jnp.roll(x, 1, axis=0), pop.params)
    ref = pop.member(2)
    want = jax.vmap(functools.partial(matching.match_greedy, passes=2))(pop.params, other)
    want_ref = jax.vmap(lambda m: matching.match_greedy(ref, m, 2))(other)
    meshes = [None]
    if jax.device_count() >= 2 and size % 2 == 0:
        meshes.append(gdl.population_mesh(jax.devices()[:2]))
    for mesh in meshes:
        a, b = (sharding.shard_members(t, mesh) for t in (pop.params, other))
        got = jax.jit(functools.partial(matching.match_pairs, passes=2, mesh=mesh))(a, b)
        got_ref = jax.jit(functools.partial(matching.match_pairs, passes=2, mesh=mesh,
                                            paired=False))(ref, b)
        for g, w, g_ref, w_ref in zip(got, want, got_ref, want_ref):
            np.testing.assert_array_equal(g, w)
            np.testing.assert_array_equal(g_ref, w_ref)
    assert any(not np.array_equal(p, np.arange(p.size)) for p in np.asarray(want[0]))
    return len(meshes)


def test_matching_in_chunks_equals_one_vmap():
    """7 rows: chunks of 1 on one device."""
    check_chunks_equal_one_vmap(7)


def test_matching_in_chunks_on_each_device_equals_one_vmap():
    """12 rows on 2 devices: 2 chunks of 3 on each (in a process with 2 devices)."""
    out = run_python("import sys; sys.path.insert(0, sys.argv[1])\n"
                     "from test_matching import check_chunks_equal_one_vmap\n"
                     "print(check_chunks_equal_one_vmap(12))", devices=2,
                     args=(os.path.dirname(os.path.abspath(__file__)),))
    assert out.split()[-1] == "2"
