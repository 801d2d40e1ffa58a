"""Properties of the weight-GA operators, parametrised over their registries."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.operators import crossover
from genetic_dl.operators import mutation
from genetic_dl.operators import permutation
from genetic_dl.operators import selection
from genetic_dl.weights import WeightGAConfig
from genetic_dl.weights.rules.ga import ga_step

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
    return pop.member(0), pop.member(1), pop


@pytest.mark.parametrize("family", ["mlp", "cnn"])
@pytest.mark.parametrize("name", sorted(set(crossover.OPERATORS) - {"arithmetic"}))
def test_children_take_every_weight_from_a_parent(name, family):
    a, b, pop = _pair() if family == "mlp" else _pair(CNN, (8, 8))
    kw = {"spec": permutation.spec_of(pop)} if name == "per_neuron" else {}
    child = crossover.get(name, **kw)(jax.random.key(3), a, b)
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
    a, b, pop = _pair()
    child = crossover.per_neuron(jax.random.key(2), a, b, permutation.spec_of(pop))
    # last hidden layer's unit j: incoming column, bias and outgoing row from one parent
    sources = set()
    for j in range(5):
        src = b if np.array_equal(child["params"]["Dense_1"]["kernel"][:, j],
                                  b["params"]["Dense_1"]["kernel"][:, j]) else a
        sources.add(src is b)
        np.testing.assert_array_equal(child["params"]["Dense_1"]["kernel"][:, j],
                                      src["params"]["Dense_1"]["kernel"][:, j])
        np.testing.assert_array_equal(child["params"]["Dense_1"]["bias"][j],
                                      src["params"]["Dense_1"]["bias"][j])
        np.testing.assert_array_equal(child["params"]["Dense_2"]["kernel"][j],
                                      src["params"]["Dense_2"]["kernel"][j])
    assert sources == {True, False}


def test_aligned_crossover_is_the_ga_steps_and_names_are_checked():
    assert "aligned" in crossover.CROSSOVERS and "aligned" not in crossover.OPERATORS
    with pytest.raises(ValueError, match="WeightGAConfig"):
        crossover.get("aligned")
    with pytest.raises(ValueError, match="unknown crossover 'blend': choose one of"):
        crossover.get("blend")


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


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_tournament_follows_the_order_statistics_of_k_draws(k):
    # entrants are uniform with replacement over the 6 members that did not fail, so the
    # member of rank r (1 = worst of them) wins with probability (r^k - (r - 1)^k) / 6^k
    f = np.asarray(FITNESS)
    ok = np.isfinite(f)
    ranks = np.zeros(8)
    ranks[ok] = np.argsort(np.argsort(f[ok])) + 1
    probs = np.where(ok, (ranks ** k - (ranks - 1) ** k) / ok.sum() ** k, 0.0)
    _frequencies(probs, lambda key, x, n: selection.tournament(key, x, n, k=k))


@pytest.mark.parametrize("n", [8, 13, 100])
def test_sus_pointers_are_evenly_spaced(n):
    # one spin of n pointers 1/n apart: whatever the spin, member i is picked floor(n p_i)
    # or ceil(n p_i) times, in wheel order (independent draws spread far wider)
    expected = n * np.asarray(selection.roulette_probabilities(FITNESS), np.float64)
    spreads = []
    for seed in range(25):
        idx = np.asarray(selection.sus(jax.random.key(seed), FITNESS, n))
        counts = np.bincount(idx, minlength=8)
        assert np.all(counts >= np.floor(expected - 1e-4))
        assert np.all(counts <= np.ceil(expected + 1e-4))
        assert np.all(np.diff(idx) >= 0)
        spreads.append(counts)
    assert len({tuple(c) for c in spreads}) > 1  # the spin itself is random


def test_per_layer_takes_each_layer_whole_from_one_parent():
    a, b, _ = _pair(gdl.MLPSpec((6, 5, 4)))
    b = jax.tree_util.tree_map(lambda x: x + 1.0, b)  # biases start at 0 in both parents
    taken = []
    for seed in range(16):
        child = crossover.per_layer(jax.random.key(seed), a, b)
        row = {}
        for layer, leaves in child["params"].items():
            src = {name: "a" if np.array_equal(v, a["params"][layer][name]) else
                   "b" if np.array_equal(v, b["params"][layer][name]) else None
                   for name, v in leaves.items()}
            assert set(src) == {"kernel", "bias"}
            assert None not in src.values()  # whole tensors, never a mix
            assert len(set(src.values())) == 1  # a layer's kernel and bias from one parent
            row[layer] = src["kernel"]
        taken.append(row)
    for layer in taken[0]:
        assert {row[layer] for row in taken} == {"a", "b"}
    assert len({tuple(sorted(row.items())) for row in taken}) > 2  # layers choose apart


def test_de_trial_weights_are_the_target_or_a_plus_f_times_b_minus_c():
    size, f, cr = 6, 0.7, 0.5
    params = {"w": jax.random.normal(jax.random.key(0), (size, 40)),
              "b": jax.random.normal(jax.random.key(1), (size, 3))}
    trial = mutation.de_rand_1_bin(jax.random.key(2), params, f=f, cr=cr)
    x = np.concatenate([np.asarray(params[k]).reshape(size, -1) for k in sorted(params)], 1)
    t = np.concatenate([np.asarray(trial[k]).reshape(size, -1) for k in sorted(params)], 1)
    crossed_share = []
    for i in range(size):
        crossed = t[i] != x[i]
        assert crossed.any()  # at least one mutant weight
        others = [j for j in range(size) if j != i]
        mutants = [(a, b, c) for a, b, c in itertools.permutations(others, 3)
                   if np.allclose(t[i][crossed], (x[a] + f * (x[b] - x[c]))[crossed],
                                  rtol=1e-5, atol=1e-6)]
        assert len(mutants) == 1  # one mutant of three distinct members other than i
        crossed_share.append(crossed.mean())
    assert abs(np.mean(crossed_share) - cr) < 0.15


def test_gaussian_noise_scales_with_each_tensors_std():
    keys = jax.random.split(jax.random.key(0), 2)
    params = {"big": 3.0 * jax.random.normal(keys[0], (300, 200)),
              "small": 0.01 * jax.random.normal(keys[1], (400,)) + 5.0}
    for scale in (0.1, 0.5):
        out = mutation.gaussian(jax.random.key(1), params, 1.0, scale)
        for name, x in params.items():
            noise = np.asarray(out[name], np.float64) - np.asarray(x, np.float64)
            ratio = noise.std() / (scale * float(np.std(np.asarray(x))))
            assert abs(ratio - 1) < 0.1, (name, scale, ratio)
            assert abs(noise.mean()) < 0.2 * noise.std()
