"""Weight matching over permutation specs: permutations that keep a network's function,
greedy and exact assignments, and a population aligned to one member."""
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.operators import matching, permutation
from genetic_dl.core import sharding
from genetic_dl.weights import WeightGAConfig
from genetic_dl.weights.rules.ga import ga_step
from conftest import run_python

CNN = gdl.CNNSpec((4, 5), 3, "max", (6,))


def _pair(spec, shape):
    pop = gdl.init_population(jax.random.key(0), spec, (shape, 3), 2)
    return pop.member(0), pop.member(1), pop.model, permutation.spec_of(pop)


def _shuffle(spec, variables, seed=4):
    """``variables`` with every group's units permuted at random."""
    sizes = permutation.group_sizes(spec, variables)
    perms = {g: jax.random.permutation(jax.random.key(seed + i), sizes[g])
             for i, g in enumerate(spec.groups)}
    return permutation.permute(variables, spec, perms)


@pytest.mark.parametrize("matcher", matching.MATCHERS)
@pytest.mark.parametrize("spec,shape", [(gdl.MLPSpec((6, 5)), (4,)), (CNN, (8, 8)),
                                        (gdl.CNNSpec((6, 5), 3, "none", ()), (10,))],
                         ids=["mlp", "cnn2d", "cnn1d_no_head"])
def test_alignment_preserves_function_and_finds_a_hidden_permutation(spec, shape, matcher):
    a, b, model, units = _pair(spec, shape)
    x = jax.random.normal(jax.random.key(9), (7,) + shape)
    aligned_b = matching.align(a, b, units, matcher=matcher)
    np.testing.assert_allclose(model.apply(aligned_b, x), model.apply(b, x), rtol=1e-5,
                               atol=1e-6)
    # a permuted copy of a is mapped back onto a exactly
    shuffled = _shuffle(units, a)
    assert not np.array_equal(shuffled["params"]["Dense_0"]["kernel"],
                              a["params"]["Dense_0"]["kernel"])
    np.testing.assert_allclose(model.apply(shuffled, x), model.apply(a, x), rtol=1e-5, atol=1e-6)
    back = matching.align(a, shuffled, units, matcher=matcher)
    for x1, x2 in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(a)):
        np.testing.assert_array_equal(x1, x2)


@pytest.mark.parametrize("spec,shape", [(gdl.MLPSpec((6, 5)), (4,)), (CNN, (8, 8))],
                         ids=["mlp", "cnn2d"])
def test_align_population_equals_pairwise_alignment_to_the_reference(spec, shape):
    pop = gdl.init_population(jax.random.key(0), spec, (shape, 3), 5)
    units = permutation.spec_of(pop)
    members = [pop.member(i) for i in range(4)] + [_shuffle(units, pop.member(2))]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *members)
    # an optimizer state whose moments equal the params must stay equal to them
    state = (stacked, {"count": jnp.arange(5)})
    out, (moments, other) = matching.align_population(stacked, 2, units, state)
    x = jax.random.normal(jax.random.key(9), (7,) + shape)
    for i, member in enumerate(members):
        mine = jax.tree_util.tree_map(lambda v, i=i: v[i], out)
        want = member if i == 2 else matching.align(members[2], member, units)
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
    unmatched = matching._unmatched(out, 2, units)  # pylint: disable=protected-access
    assert not bool(unmatched[2]) and not bool(unmatched[4])


def _agreement(pop, perms, i):
    """Git Re-Basin's objective: sum of <member 0, member i permuted by ``perms``>."""
    mine = permutation.permute(pop.member(i), permutation.spec_of(pop),
                               {g: p[i] for g, p in perms.items()})
    return sum(float(np.vdot(x, y)) for x, y in zip(
        jax.tree_util.tree_leaves(pop.member(0)), jax.tree_util.tree_leaves(mine)))


def test_weight_matching_passes_and_members():
    pop = gdl.init_population(jax.random.key(3), gdl.MLPSpec((12, 10, 8)), ((5,), 3), 6)
    params = jax.tree_util.tree_map(np.asarray, pop.params)
    units = permutation.spec_of(pop)

    identity = matching.match_population(params, 0, units, members=[], matcher="exact")
    runs = [matching.match_population(params, 0, units, passes=k, matcher="exact")
            for k in (1, 2, None)]
    for i in range(1, 6):  # coordinate ascent: every sweep keeps or raises the objective
        scores = [_agreement(pop, perms, i) for perms in [identity] + runs]
        assert all(s1 <= s2 + 1e-4 for s1, s2 in zip(scores, scores[1:])), scores
        assert scores[-1] > scores[0]
    some = matching.match_population(params, 0, units, members=[2, 4], matcher="exact")
    for g, perm in some.items():  # members left out keep the identity
        for i in range(6):
            want = runs[-1][g][i] if i in (2, 4) else np.arange(perm.shape[1])
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
    units = permutation.spec_of(pop)

    identity = matching.match_population(pop.params, 0, units, members=[])
    exact = matching.match_population(pop.params, 0, units, matcher="exact")
    runs = [matching.match_population(pop.params, 0, units, passes=k, matcher="greedy")
            for k in (1, None)]
    for i in range(1, 6):  # each sweep keeps or raises the objective; close to exact
        scores = [_agreement(pop, perms, i) for perms in [identity] + runs]
        assert all(s1 <= s2 + 1e-4 for s1, s2 in zip(scores, scores[1:])), scores
        gain, best = scores[-1] - scores[0], _agreement(pop, exact, i) - scores[0]
        assert 0.7 * best < gain <= best + 1e-4, (gain, best)
    jitted = matching.match_on_device(pop.params, jnp.asarray(0), units)
    for g, got in jitted.items():
        np.testing.assert_array_equal(got, runs[-1][g])
        np.testing.assert_array_equal(got[0], np.arange(got.shape[1]))  # the reference
    some = matching.match_population(pop.params, 0, units, members=[2, 4], matcher="greedy")
    for g, perm in some.items():  # members left out keep the identity
        for i in range(6):
            want = runs[-1][g][i] if i in (2, 4) else np.arange(perm.shape[1])
            np.testing.assert_array_equal(perm[i], want)
    with pytest.raises(ValueError, match="matcher"):
        WeightGAConfig(crossover="aligned", crossover_kw=(("matcher", "hungarian"),))
    with pytest.raises(ValueError, match="matcher"):
        matching.align(pop.member(0), pop.member(1), units, matcher="hungarian")


def check_chunks_equal_one_vmap(size):
    """Matching ``size`` rows in chunks (and on 2 devices when there are 2 and the
    rows split evenly) equals one vmap over all pairs."""
    pop = gdl.init_population(jax.random.key(5), gdl.MLPSpec((12, 10)), ((5,), 3), size)
    units = permutation.spec_of(pop)
    other = jax.tree_util.tree_map(lambda x: jnp.roll(x, 1, axis=0), pop.params)
    ref = pop.member(2)
    want = jax.vmap(lambda a, b: matching.match(units, a, b, 2))(pop.params, other)
    want_ref = jax.vmap(lambda m: matching.match(units, ref, m, 2))(other)
    meshes = [None]
    if jax.device_count() >= 2 and size % 2 == 0:
        meshes.append(gdl.population_mesh(jax.devices()[:2]))
    for mesh in meshes:
        a, b = (sharding.shard_members(t, mesh) for t in (pop.params, other))
        got = jax.jit(functools.partial(matching.match_pairs, spec=units, passes=2,
                                        mesh=mesh))(a, b)
        got_ref = jax.jit(functools.partial(matching.match_pairs, spec=units, passes=2,
                                            mesh=mesh, paired=False))(ref, b)
        for g in units.groups:
            np.testing.assert_array_equal(got[g], want[g])
            np.testing.assert_array_equal(got_ref[g], want_ref[g])
    assert any(not np.array_equal(p, np.arange(p.size)) for p in np.asarray(want["P0"]))
    return len(meshes)


def test_matching_in_chunks_equals_one_vmap():
    """7 rows: chunks of 1 on one device."""
    check_chunks_equal_one_vmap(7)


def test_matching_in_chunks_on_each_device_equals_one_vmap():
    """12 rows on 2 devices: 2 chunks of 3 on each (in a process with 2 devices)."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = run_python("import sys; sys.path[:0] = sys.argv[1:]\n"  # this folder and conftest's
                     "from test_matching import check_chunks_equal_one_vmap\n"
                     "print(check_chunks_equal_one_vmap(12))", devices=2,
                     args=(here, os.path.dirname(here)))
    assert out.split()[-1] == "2"


class NormNet(nn.Module):
    """Dense -> BatchNorm -> relu -> Dense -> LayerNorm -> relu -> Dense: a chain whose
    units carry statistics."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(12)(x)))
        x = nn.relu(nn.LayerNorm()(nn.Dense(10)(x)))
        return nn.Dense(3)(x)


def _xent(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


NORM_LEARNER = gdl.Learner.from_linen(NormNet(), loss=_xent, train_kwargs={"train": True},
                                      eval_kwargs={"train": False}, mutable=("batch_stats",))


@pytest.fixture(scope="module")
def norm_pop(iris):
    pop = gdl.init_population(jax.random.key(0), NORM_LEARNER, iris, 4,
                              hparams={"learning_rate": 3e-2})
    pop, _ = gdl.train(pop, iris, 2, batch_size=16)  # statistics away from their init
    return pop


def _variables(pop, i):
    return jax.tree_util.tree_map(lambda x: x[i], {**pop.params, **pop.collections})


def _apply(pop, variables, x):
    return pop.learner.apply_eval({"params": variables["params"]},
                                  {"batch_stats": variables["batch_stats"]}, x, {})


def test_derived_norm_chain_spec_moves_statistics_with_their_units(norm_pop, iris):
    units = permutation.spec_of(norm_pop)
    table = units.as_dict()
    assert units.groups == ("P0", "P1")
    assert table["batch_stats/BatchNorm_0/mean"] == ("P0",)
    assert table["params/LayerNorm_0/scale"] == ("P1",)
    assert table["params/Dense_2/kernel"] == ("P1", None)
    x = jnp.asarray(iris.x_val[:16])
    a, b = _variables(norm_pop, 0), _variables(norm_pop, 1)
    for matcher in matching.MATCHERS:  # the exact matcher reads any spec, statistics included
        np.testing.assert_allclose(_apply(norm_pop, matching.align(a, b, units, matcher=matcher),
                                          x), _apply(norm_pop, b, x), rtol=1e-5, atol=1e-5)
        back = matching.align(a, _shuffle(units, a), units, matcher=matcher)
        for x1, x2 in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(a)):
            np.testing.assert_array_equal(x1, x2)


@pytest.mark.parametrize("matcher", matching.MATCHERS)
def test_aligned_copies_to_the_best_keep_their_parents_function(norm_pop, iris, matcher):
    """With no crossover and no mutation every child is its first parent permuted to the
    best member's unit order (statistics and moments with it): the same function."""
    config = WeightGAConfig(crossover="aligned", crossover_prob=0.0, mutation_rate=0.0,
                            elitism=1, opt_state="inherit",
                            crossover_kw=(("match_to", "best"), ("matcher", matcher)))
    fit = jnp.asarray([0.1, 0.9, 0.5, 0.3])
    new, parents = ga_step(jax.random.key(0), norm_pop, fit, 0, config)
    x = jnp.asarray(iris.x_val[:16])
    moved = 0
    for i, (p, _) in enumerate(np.asarray(parents)):
        np.testing.assert_allclose(_apply(new, _variables(new, i), x),
                                   _apply(norm_pop, _variables(norm_pop, int(p)), x),
                                   rtol=1e-4, atol=1e-4)
        moved += not np.array_equal(new.params["params"]["Dense_0"]["kernel"][i],
                                    norm_pop.params["params"]["Dense_0"]["kernel"][int(p)])
    assert moved  # units were reordered, not only copied
    matched = matching.match_on_device({**new.params, **new.collections}, 0,
                                       permutation.spec_of(new), 2)
    assert all(np.array_equal(p[0], np.arange(p.shape[1])) for p in matched.values())


def test_spec_of_takes_the_derivation_as_a_parameter(norm_pop):
    """The one seam a model's spec comes through: a derivation sees one member's
    variables in call order and a forward pass; its spec is verified like any other."""
    seen = {}

    def chain(variables, forward):
        seen["modules"] = list(variables["params"])
        seen["outputs"] = np.shape(forward(variables))
        return permutation.derive(variables, forward)

    assert permutation.spec_of(norm_pop, chain) == permutation.spec_of(norm_pop)
    assert seen == {"modules": ["Dense_0", "BatchNorm_0", "Dense_1", "LayerNorm_0", "Dense_2"],
                    "outputs": (2, 3)}

    def wrong(variables, forward):
        spec = dict(permutation.derive(variables, forward).axes)
        spec["params/Dense_2/kernel"] = (None, None)  # the output layer ignores P1's order
        return gdl.PermutationSpec.of(spec)

    with pytest.raises(ValueError, match="does not preserve"):
        permutation.spec_of(norm_pop, wrong)


@pytest.mark.parametrize("spec,shape,groups", [
    (gdl.MLPSpec((6, 5)), (4,), {"P0": 6, "P1": 5}),
    (CNN, (8, 8), {"P0": 4, "P1": 5, "P2": 6})], ids=["mlp", "cnn2d"])
def test_the_zoo_chains_get_one_group_per_hidden_layer(spec, shape, groups):
    pop = gdl.init_population(jax.random.key(0), spec, (shape, 3), 2)
    units = permutation.spec_of(pop)
    assert permutation.group_sizes(units, pop.member(0)) == groups
    last = sorted(pop.member(0)["params"])[-1]  # the output layer: its units stay
    assert units.as_dict().get(f"params/{last}/bias", (None,)) == (None,)


class _Cumulative(nn.Module):
    """A hidden layer whose units feed a running sum: their order matters."""
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(jnp.cumsum(nn.relu(nn.Dense(4)(x)), axis=-1))


def test_a_model_without_permutable_units_says_why_and_what_to_use():
    learner = gdl.Learner.from_linen(_Cumulative(), loss=_xent)
    pop = gdl.init_population(jax.random.key(0), learner, ((3,), 3), 2)
    with pytest.raises(ValueError, match="no hidden units.*cumsum.*uniform"):
        permutation.spec_of(pop)
    with pytest.raises(ValueError, match="no hidden units.*uniform"):
        ga_step(jax.random.key(0), pop, jnp.asarray([0.5, 0.4]), 0,
                WeightGAConfig(crossover="per_neuron"))
