"""Properties of the weight-GA operators, parametrised over their registries."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl import crossover, mutation, selection
from genetic_dl.weight_ga import WeightGAConfig, ga_step

FITNESS = jnp.array([0.1, 0.5, jnp.nan, 0.3, 0.9, -0.2, 0.7, jnp.inf])


@pytest.mark.parametrize("name", sorted(selection.SELECTIONS))
def test_selection_never_picks_failed_members(name):
    idx = np.asarray(selection.get(name)(jax.random.key(0), FITNESS, 4000))
    assert idx.shape == (4000,) and idx.min() >= 0 and idx.max() < 8
    assert not np.isin(idx, [2, 7]).any()  # NaN and inf are failures
    counts = np.bincount(idx, minlength=8)
    assert counts[4] >= counts[5]  # the best at least as often as the worst


def _frequencies(probs, op, n=40_000):
    idx = np.asarray(op(jax.random.key(1), FITNESS, n))
    freq = np.bincount(idx, minlength=8) / n
    np.testing.assert_allclose(freq, probs, atol=0.012)


def test_roulette_rank_boltzmann_sus_follow_their_definitions():
    f = np.array([0.1, 0.5, 0.0, 0.3, 0.9, -0.2, 0.7, 0.0])
    ok = np.array([1, 1, 0, 1, 1, 1, 1, 0], bool)
    w = np.where(ok, (f - f[ok].min()) / (f[ok].max() - f[ok].min()) + 1e-3, 0)
    _frequencies(w / w.sum(), selection.roulette)
    _frequencies(w / w.sum(), selection.sus)
    beta = 2.0
    b = np.where(ok, np.exp(beta * f), 0)
    _frequencies(b / b.sum(), lambda k, x, n: selection.boltzmann(k, x, n, beta=beta))
    order = np.argsort(-np.where(ok, f, -np.inf), kind="stable")
    ranks = np.empty(8)
    ranks[order] = np.arange(8)
    r = np.where(ok, 2 - 2 * ranks / 7, 0)
    _frequencies(r / r.sum(), selection.rank)


def test_tournament_and_truncation_pressure():
    idx = np.asarray(selection.tournament(jax.random.key(0), FITNESS, 20_000, k=8))
    assert np.mean(idx == 4) > 0.6  # k = P: nearly always the best
    idx = np.asarray(selection.truncation(jax.random.key(0), FITNESS, 5000, fraction=0.25))
    assert set(np.unique(idx)) == {4, 6}


def test_elites_and_rank_order_put_failures_last():
    assert np.asarray(selection.elites(FITNESS, 3)).tolist() == [4, 6, 1]
    assert set(np.asarray(selection.rank_order(FITNESS))[-2:].tolist()) == {2, 7}


CNN = gdl.CNNSpec((4, 5), 3, "max", (6,))


def _pair(spec=gdl.MLPSpec((6, 5)), shape=(4,)):
    pop = gdl.init_population(jax.random.key(0), spec, (shape, 3), 2)
    return pop.member(0), pop.member(1), pop.model


@pytest.mark.parametrize("family", ["mlp", "cnn"])
@pytest.mark.parametrize("name", sorted(set(crossover.CROSSOVERS) - {"arithmetic"}))
def test_children_take_every_weight_from_a_parent(name, family):
    a, b, _ = _pair() if family == "mlp" else _pair(CNN, (8, 8))
    child = crossover.get(name)(jax.random.key(3), a, b)
    if name == "aligned":
        b = crossover.align(a, b)  # then weights come from a or the permuted b
    from_a = from_b = 0
    for x, y, c in zip(*(jax.tree_util.tree_leaves(t) for t in (a, b, child))):
        x, y, c = map(np.asarray, (x, y, c))
        assert np.all((c == x) | (c == y))
        from_a += np.sum((c == x) & (c != y))
        from_b += np.sum((c == y) & (c != x))
    assert from_a > 0 and from_b > 0


def test_arithmetic_is_the_declared_blend():
    a, b, _ = _pair()
    child = crossover.arithmetic(jax.random.key(0), a, b, alpha=0.3)
    for x, y, c in zip(*(jax.tree_util.tree_leaves(t) for t in (a, b, child))):
        np.testing.assert_allclose(c, 0.3 * x + 0.7 * y, rtol=1e-6)


def test_point_crossovers_are_contiguous_in_the_genome():
    a, b, _ = _pair()
    ones = jax.tree_util.tree_map(jnp.ones_like, a)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, b)
    for op, segments in ((crossover.one_point, 2), (crossover.two_point, 3)):
        child = op(jax.random.key(5), ones, zeros)
        flat = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(child)])
        assert np.count_nonzero(np.diff(flat)) <= segments - 1


def test_per_neuron_keeps_units_whole():
    a, b, _ = _pair()
    child = crossover.per_neuron(jax.random.key(2), a, b)
    # last hidden layer's unit j: incoming column, bias and outgoing row from one parent
    for j in range(5):
        src = b if np.array_equal(child["params"]["Dense_1"]["kernel"][:, j],
                                  b["params"]["Dense_1"]["kernel"][:, j]) else a
        np.testing.assert_array_equal(child["params"]["Dense_1"]["kernel"][:, j],
                                      src["params"]["Dense_1"]["kernel"][:, j])
        np.testing.assert_array_equal(child["params"]["Dense_1"]["bias"][j],
                                      src["params"]["Dense_1"]["bias"][j])
        np.testing.assert_array_equal(child["params"]["Dense_2"]["kernel"][j],
                                      src["params"]["Dense_2"]["kernel"][j])


@pytest.mark.parametrize("matcher", crossover.MATCHERS)
@pytest.mark.parametrize("spec,shape", [(gdl.MLPSpec((6, 5)), (4,)), (CNN, (8, 8)),
                                        (gdl.CNNSpec((6, 5), 3, "none", ()), (10,))],
                         ids=["mlp", "cnn2d", "cnn1d_no_head"])
def test_alignment_preserves_function_and_finds_a_hidden_permutation(spec, shape, matcher):
    a, b, model = _pair(spec, shape)
    x = jax.random.normal(jax.random.key(9), (7,) + shape)
    aligned_b = crossover.align(a, b, matcher=matcher)
    np.testing.assert_allclose(model.apply(aligned_b, x), model.apply(b, x), rtol=1e-5,
                               atol=1e-6)
    # a permuted copy of a is mapped back onto a exactly
    chain = gdl.crossover.unit_chain(a)
    perms = [jax.random.permutation(jax.random.key(4 + l), a["params"][n]["kernel"].shape[-1])
             for l, n in enumerate(chain[:-1])]
    shuffled = crossover.permute_units(a, perms)
    np.testing.assert_allclose(model.apply(shuffled, x), model.apply(a, x), rtol=1e-5, atol=1e-6)
    back = crossover.align(a, shuffled, matcher=matcher)
    for x1, x2 in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(a)):
        np.testing.assert_array_equal(x1, x2)


@pytest.mark.parametrize("spec,shape", [(gdl.MLPSpec((6, 5)), (4,)), (CNN, (8, 8))],
                         ids=["mlp", "cnn2d"])
def test_align_population_equals_pairwise_alignment_to_the_reference(spec, shape):
    pop = gdl.init_population(jax.random.key(0), spec, (shape, 3), 5)
    chain = crossover.unit_chain(pop.member(0))
    perms = [jax.random.permutation(jax.random.key(4 + l), pop.member(0)["params"][n]["kernel"]
                                    .shape[-1]) for l, n in enumerate(chain[:-1])]
    members = [pop.member(i) for i in range(4)] + [crossover.permute_units(pop.member(2), perms)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *members)
    # an optimizer state whose moments equal the params must stay equal to them
    state = (stacked, {"count": jnp.arange(5)})
    out, (moments, other) = crossover.align_population(stacked, 2, state)
    x = jax.random.normal(jax.random.key(9), (7,) + shape)
    for i, member in enumerate(members):
        mine = jax.tree_util.tree_map(lambda v, i=i: v[i], out)
        want = member if i == 2 else crossover.align(members[2], member)
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
    unmatched = crossover._unmatched(out, 2)  # pylint: disable=protected-access
    assert not bool(unmatched[2]) and not bool(unmatched[4])


def _agreement(pop, perms, i):
    """Git Re-Basin's objective: sum of <member 0, member i permuted by ``perms``>."""
    mine = crossover.permute_units(pop.member(i), [p[i] for p in perms])
    return sum(float(np.vdot(x, y)) for x, y in zip(
        jax.tree_util.tree_leaves(pop.member(0)), jax.tree_util.tree_leaves(mine)))


def test_weight_matching_passes_and_members():
    pop = gdl.init_population(jax.random.key(3), gdl.MLPSpec((12, 10, 8)), ((5,), 3), 6)
    params = jax.tree_util.tree_map(np.asarray, pop.params)

    identity = crossover.match_population(params, 0, members=[], matcher="exact")
    runs = [crossover.match_population(params, 0, passes=k, matcher="exact")
            for k in (1, 2, None)]
    for i in range(1, 6):  # coordinate ascent: every sweep keeps or raises the objective
        scores = [_agreement(pop, perms, i) for perms in [identity] + runs]
        assert all(s1 <= s2 + 1e-4 for s1, s2 in zip(scores, scores[1:])), scores
        assert scores[-1] > scores[0]
    some = crossover.match_population(params, 0, members=[2, 4], matcher="exact")
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
    perms = np.asarray(jax.jit(jax.vmap(crossover.greedy_assignment))(batch))
    for s, perm in zip(batch, perms):
        assert sorted(perm.tolist()) == list(range(n))
        if not np.isnan(s).any() and len(np.unique(s)) == s.size:
            np.testing.assert_array_equal(perm, _greedy_reference(s))
        assert _greedy_order_exists(s, perm)  # with ties: a greedy order, not one tie-break
        assert not _greedy_order_exists(s, np.roll(perm, 1))


def test_greedy_weight_matching_on_the_device():
    pop = gdl.init_population(jax.random.key(3), gdl.MLPSpec((40, 36, 8)), ((5,), 3), 6)

    identity = crossover.match_population(pop.params, 0, members=[])
    exact = crossover.match_population(pop.params, 0, matcher="exact")
    runs = [crossover.match_population(pop.params, 0, passes=k, matcher="greedy")
            for k in (1, None)]
    for i in range(1, 6):  # each sweep keeps or raises the objective; close to exact
        scores = [_agreement(pop, perms, i) for perms in [identity] + runs]
        assert all(s1 <= s2 + 1e-4 for s1, s2 in zip(scores, scores[1:])), scores
        gain, best = scores[-1] - scores[0], _agreement(pop, exact, i) - scores[0]
        assert 0.7 * best < gain <= best + 1e-4, (gain, best)
    jitted = crossover.match_on_device(pop.params, jnp.asarray(0))
    for got, want in zip(jitted, runs[-1]):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got[0], np.arange(got.shape[1]))  # the reference
    some = crossover.match_population(pop.params, 0, members=[2, 4], matcher="greedy")
    for l, perm in enumerate(some):  # members left out keep the identity
        for i in range(6):
            want = runs[-1][l][i] if i in (2, 4) else np.arange(perm.shape[1])
            np.testing.assert_array_equal(perm[i], want)
    with pytest.raises(ValueError, match="matcher"):
        WeightGAConfig(crossover="aligned", crossover_kw=(("matcher", "hungarian"),))
    with pytest.raises(ValueError, match="matcher"):
        crossover.align(pop.member(0), pop.member(1), matcher="hungarian")


def test_unit_crossovers_refuse_rnn():
    a, b, _ = _pair(gdl.RNNSpec("gru", 4))
    with pytest.raises(ValueError, match="need an MLP"):
        crossover.per_neuron(jax.random.key(0), a, b)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5])
def test_mutation_rate_is_honoured(rate):
    params = {"w": jnp.ones((200, 100)) + jax.random.normal(jax.random.key(0), (200, 100))}
    out = mutation.gaussian(jax.random.key(1), params, rate, 0.1)
    changed = np.mean(np.asarray(out["w"]) != np.asarray(params["w"]))
    assert abs(changed - rate) < 0.01
    assert np.isclose(mutation.decayed_rate(0.1, 0.5, 2), 0.1 * np.exp(-1.0))


def test_pbt_copies_the_top_into_the_bottom_within_bounds():
    f = jnp.arange(8.0)
    hp = {"learning_rate": jnp.full(8, 0.09), "momentum": jnp.full(8, 0.9)}
    src, new = mutation.pbt_exploit_explore(jax.random.key(0), f, hp,
                                            {"learning_rate": (1e-4, 0.1)}, quantile=0.25)
    src = np.asarray(src)
    assert np.all(np.isin(src[[0, 1]], [6, 7])) and np.array_equal(src[2:], np.arange(2, 8))
    lr = np.asarray(new["learning_rate"])
    assert np.all(lr <= 0.1) and np.all(lr >= 1e-4)
    assert np.all(np.isclose(lr[:2], 0.1) | np.isclose(lr[:2], 0.072))  # x1.2 clipped, x0.8
    np.testing.assert_array_equal(new["momentum"], hp["momentum"])


def test_de_trials_mix_target_and_mutant():
    params = {"w": jnp.arange(8.0)[:, None] * jnp.ones((8, 50))}
    trial = np.asarray(mutation.de_rand_1_bin(jax.random.key(0), params, f=0.5, cr=0.5)["w"])
    target = np.asarray(params["w"])
    assert np.all((trial != target).sum(1) >= 1)  # at least one mutant weight per member
    assert 0.3 < np.mean(trial != target) < 0.7


@pytest.mark.parametrize("rate", [0.02, 0.05, 0.2])
def test_sparse_mutation_path_honours_the_rate(rate):
    params = {"w": jax.random.normal(jax.random.key(0), (400, 250))}
    out = mutation.gaussian(jax.random.key(1), params, rate, 0.1, max_rate=rate)
    changed = np.mean(np.asarray(out["w"]) != np.asarray(params["w"]))
    assert abs(changed - rate) < 0.2 * rate
    half = mutation.gaussian(jax.random.key(1), params, rate / 2, 0.1, max_rate=rate)
    assert abs(np.mean(np.asarray(half["w"]) != np.asarray(params["w"])) - rate / 2) < 0.2 * rate


def test_coin_mask_is_fair_and_covers_odd_sizes():
    m = np.asarray(crossover.coin_mask(jax.random.key(0), (1001, 37)))
    assert m.shape == (1001, 37) and abs(m.mean() - 0.5) < 0.01


@pytest.mark.parametrize("max_rate", [None, 0.05])
def test_noise_table_mutation_has_the_declared_distribution(max_rate):
    params = {"w": jnp.zeros((400, 250))}  # std 0: the noise scale is 0.1 * 1e-2
    table = mutation.noise_table(1 << 18)
    out = mutation.gaussian(jax.random.key(1), params, 0.05, 0.1, max_rate=max_rate, table=table)
    hit = np.asarray(out["w"]).ravel()
    hit = hit[hit != 0] / 1e-3
    assert abs(hit.size / 100_000 - 0.05) < 0.01
    assert abs(hit.std() - 1.0) < 0.05 and abs(hit.mean()) < 0.05
    # the noise is read from the table: every drawn value is one of its entries
    ref = np.sort(np.asarray(table))
    nearest = np.clip(np.searchsorted(ref, hit), 1, ref.size - 1)
    gap = np.minimum(abs(ref[nearest] - hit), abs(ref[nearest - 1] - hit))
    assert np.mean(gap < 1e-4) > 0.97  # the sparse path may hit a weight twice (a sum)
    again = mutation.gaussian(jax.random.key(2), params, 0.05, 0.1, max_rate=max_rate, table=table)
    assert not np.array_equal(np.asarray(again["w"]), np.asarray(out["w"]))


def test_ga_step_skips_disabled_operators_exactly(digits):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16,)), digits, 6)
    fit = jnp.arange(6.0)
    plain, parents = ga_step(jax.random.key(1), pop, fit, 0,
                             WeightGAConfig(mutation_rate=0.0, crossover_prob=0.0))
    # no crossover, no mutation: every child is an exact copy of its first parent
    for leaf_new, leaf_old in zip(jax.tree_util.tree_leaves(plain.params),
                                  jax.tree_util.tree_leaves(pop.params)):
        np.testing.assert_array_equal(leaf_new, np.asarray(leaf_old)[np.asarray(parents[:, 0])])
