"""The GDNN loop: elitism, lineage, budget, determinism, rules, callbacks."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.weights.rules.ga import GARule, GAState, ga_step
from genetic_dl.weights import WeightGAConfig, evolve_weights


@pytest.fixture(scope="module")
def trained(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16, 16)), iris, 8)
    pop, _ = gdl.train(pop, iris, 2, batch_size=16)
    return pop, gdl.fitness_from_metrics(gdl.evaluate(pop, iris))


@pytest.mark.parametrize("crossover", ["uniform", "per_neuron", "aligned", "two_point"])
def test_ga_step_keeps_elites_and_records_parents(trained, crossover):
    pop, fit = trained
    cfg = WeightGAConfig(elitism=2, crossover=crossover)
    new, parents = ga_step(jax.random.key(1), pop, fit, 0, cfg)
    best = np.argsort(-np.asarray(fit))[:2]
    for j, i in enumerate(best):
        for x, y in zip(jax.tree_util.tree_leaves(new.member(j)),
                        jax.tree_util.tree_leaves(pop.member(int(i)))):
            np.testing.assert_array_equal(x, y)
    assert np.asarray(new.ids)[:2].tolist() == np.asarray(pop.ids)[best].tolist()
    assert np.asarray(new.ids)[2:].min() > np.asarray(pop.ids).max()
    assert parents.shape == (8, 2) and new.size == 8


def test_distinct_parents(trained):
    pop, fit = trained
    _, parents = ga_step(jax.random.key(2), pop, fit, 0,
                         WeightGAConfig(elitism=0, distinct_parents=True,
                                        selection_kw=(("k", 8),)))
    parents = np.asarray(parents)
    assert np.all(parents[:, 0] != parents[:, 1])  # k = P would otherwise pick the best twice


def test_loop_runs_in_a_few_lines_and_accounts_budget(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16,)), iris, 6)
    res = evolve_weights(jax.random.key(1), pop, iris, generations=3, epochs=2, batch_size=16)
    assert [h["network_epochs"] for h in res.history] == [12, 24, 36]
    assert len(res.lineage) == 2 * (6 - 1)  # every non-elite child, each generation after 0
    assert res.best_fitness == max(h["best"] for h in res.history)
    assert all(h["diversity"] > 0 for h in res.history)


def test_loop_is_deterministic(iris):
    def run():
        pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4)
        return evolve_weights(jax.random.key(1), pop, iris, generations=2, epochs=1,
                              batch_size=16)
    a, b = run(), run()
    assert [h["best"] for h in a.history] == [h["best"] for h in b.history]
    assert a.lineage == b.lineage


@pytest.mark.parametrize("rule", ["pbt", "de", "none"])
def test_other_rules_improve_or_keep(iris, rule):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4)
    res = evolve_weights(jax.random.key(1), pop, iris, generations=3, epochs=2, batch_size=16,
                         config=WeightGAConfig(rule=rule), fitness="accuracy")
    if rule == "de":  # greedy replacement never lets a member's fitness drop
        assert res.history[-1]["mean"] >= res.history[0]["mean"]
    assert res.history[-1]["best"] >= 0.5


def test_callback_stops_the_run(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4)
    res = evolve_weights(jax.random.key(1), pop, iris, generations=5, epochs=1, batch_size=16,
                         callbacks=[lambda gen, p, rec: gen == 1])
    assert len(res.history) == 2


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown crossover"):
        WeightGAConfig(crossover="sexual")
    with pytest.raises(ValueError, match="unknown rule"):
        WeightGAConfig(rule="cma")


def test_children_without_crossover_or_mutation_copy_their_first_parent(trained):
    pop, fit = trained
    cfg = WeightGAConfig(elitism=0, crossover_prob=0, mutation_rate=0)  # ints, as a user types
    assert cfg.crossover_prob == 0.0 and isinstance(cfg.crossover_prob, float)
    new, parents = ga_step(jax.random.key(4), pop, fit, 0, cfg)
    for n, o in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(pop.params)):
        np.testing.assert_array_equal(n, np.asarray(o)[np.asarray(parents[:, 0])])
    with pytest.raises(ValueError, match="crossover_prob must be a number"):
        WeightGAConfig(crossover_prob="high")


@pytest.mark.parametrize("rule", ["reset", "inherit", "average"])
def test_child_optimizer_state(trained, rule):
    pop, fit = trained
    new, parents = ga_step(jax.random.key(4), pop, fit, 0,
                           WeightGAConfig(elitism=0, opt_state=rule))
    a, b = np.asarray(parents[:, 0]), np.asarray(parents[:, 1])
    for n, o in zip(jax.tree_util.tree_leaves(new.opt_state),
                    jax.tree_util.tree_leaves(pop.opt_state)):
        n, o = np.asarray(n), np.asarray(o)
        if rule == "reset":
            assert not np.any(n)  # adam's count, mu and nu start at zero
        elif rule == "inherit" or not np.issubdtype(o.dtype, np.floating):
            np.testing.assert_array_equal(n, o[a])
        else:
            np.testing.assert_allclose(n, (o[a] + o[b]) / 2, rtol=1e-6)


def test_self_adaptive_scales_are_the_rule_state_inherited_and_perturbed(trained):
    pop, fit = trained
    rule = GARule(WeightGAConfig(elitism=1, self_adaptive=True, mutation_scale=0.1))
    state = rule.init(jax.random.key(0), pop)
    np.testing.assert_array_equal(state.mutation_scale, np.full(8, 0.1, np.float32))
    mine = np.geomspace(0.05, 0.2, 8).astype(np.float32)
    new, state2, info = rule.step(jax.random.key(5), GAState(mine), pop, fit, None, 0)
    scales, parents = np.asarray(state2.mutation_scale), np.asarray(info["parents"])
    assert "mutation_scale" not in new.hparams  # the optimizer's hparams stay the optimizer's
    best = int(np.nanargmax(np.asarray(fit)))
    assert scales[0] == mine[best]  # the elite keeps its own
    ratio = scales[1:] / mine[parents[1:, 0]]  # a child's: its first parent's, perturbed
    assert np.all(ratio > 0) and np.all(ratio != 1.0)
    # the scale is what each child mutates with: the same step with other scales differs
    other = rule.step(jax.random.key(5), GAState(mine * 3), pop, fit, None, 0)[0]
    moved = [np.abs(np.asarray(x) - np.asarray(y))[1:].max()
             for x, y in zip(jax.tree_util.tree_leaves(new.params),
                             jax.tree_util.tree_leaves(other.params))]
    assert max(moved) > 0


def test_hall_of_fame_holds_the_best_distinct_members(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 6)
    res = evolve_weights(jax.random.key(1), pop, iris, generations=3, epochs=1, batch_size=16,
                         config=WeightGAConfig(hall_of_fame=4))
    hall = res.hall_of_fame
    seen = {}
    for h in res.history:
        for i, f in zip(h["member_ids"], h["member_fitness"]):
            if np.isfinite(f):
                seen[i] = max(seen.get(i, -np.inf), f)
    best = sorted(seen.values(), reverse=True)[:4]
    assert [h["fitness"] for h in hall] == pytest.approx(best)
    assert len({h["id"] for h in hall}) == 4 and hall[0]["id"] == res.best_id
    top = gdl.build_model(pop.spec, iris.feature_shape, iris.out_dim)
    from genetic_dl.core.train import split_metrics  # pylint: disable=import-outside-toplevel
    assert -split_metrics(top, hall[0]["params"], iris, "val")["loss"] == \
        pytest.approx(hall[0]["fitness"], abs=1e-5)
    if pytest.importorskip("pandas"):
        frame = res.to_pandas()
        assert list(frame["generation"]) == [0, 1, 2]
        assert list(frame["best_accuracy"]) == [h["best_metrics"]["accuracy"]
                                                for h in res.history]
        assert not any(isinstance(v, dict) for v in frame.iloc[0])  # flat: no column of dicts
        assert len(res.to_pandas("lineage")) == len(res.lineage)


def test_aligned_to_the_best_shares_one_unit_order_between_rematches(trained):
    """match_to="best": a re-matching generation leaves every member in the best member's
    unit order (matching again changes nothing; elites compute what they did), and the
    generations in between cross the inherited order exactly as the base crossover does."""
    pop, fit = trained
    cfg = WeightGAConfig(elitism=2, crossover="aligned",
                         crossover_kw=(("match_to", "best"), ("every", 3)))
    copies = dataclasses.replace(cfg, crossover_prob=0.0, mutation_rate=0.0)
    new, _ = ga_step(jax.random.key(3), pop, fit, 3, copies)
    units = gdl.permutation.spec_of(new)
    for perm in gdl.matching.match_on_device(new.params, 0, units).values():
        np.testing.assert_array_equal(perm, np.broadcast_to(np.arange(perm.shape[1]), perm.shape))
    x = jax.random.normal(jax.random.key(4), (5, 4))
    for j, i in enumerate(np.argsort(-np.asarray(fit))[:2]):
        np.testing.assert_allclose(pop.model.apply(new.member(j), x),
                                   pop.model.apply(pop.member(int(i)), x), rtol=1e-5, atol=1e-6)
    between = ga_step(jax.random.key(3), pop, fit, 4, cfg)[0]
    plain = ga_step(jax.random.key(3), pop, fit, 4, dataclasses.replace(
        cfg, crossover="uniform", crossover_kw=()))[0]
    for x, y in zip(jax.tree_util.tree_leaves(between), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_array_equal(x, y)
    for bad in ((("every", 2),), (("match_to", "best"), ("every", 0)),
                (("matcher", "exact"), ("match_to", "parent")), (("match_to", "all"),)):
        with pytest.raises(ValueError, match="match_to"):
            WeightGAConfig(crossover="aligned", crossover_kw=bad)


@pytest.mark.parametrize("kw,prob,elitism", [
    ((("matcher", "greedy"),), 0.5, 0), ((("matcher", "exact"),), 1.0, 2),
    ((("match_to", "best"),), 0.5, 2)])
def test_aligned_child_state_follows_the_permuted_units(trained, kw, prob, elitism):
    """Moments equal to the params stay equal to them through aligned arithmetic crossover
    with averaged optimizer state: each parent's moments are permuted with its units (a
    child that copies its first parent, and an elite, keep them as its units are)."""
    pop, fit = trained
    treedef = jax.tree_util.tree_structure(pop.params)

    def like_params(x):
        return jax.tree_util.tree_structure(x) == treedef
    moments = jax.tree_util.tree_map(lambda x: pop.params if like_params(x) else x,
                                     pop.opt_state, is_leaf=like_params)
    pop = pop.replace(opt_state=moments)
    cfg = WeightGAConfig(elitism=elitism, mutation_rate=0.0, opt_state="average",
                         crossover="aligned", distinct_parents=True, crossover_prob=prob,
                         crossover_kw=(("base", "arithmetic"),) + kw)
    new, _ = ga_step(jax.random.key(5), pop, fit, 0, cfg)
    states = [s for s in jax.tree_util.tree_leaves(new.opt_state, is_leaf=like_params)
              if like_params(s)]
    assert states
    x = jax.random.normal(jax.random.key(6), (5, 4))
    plain = ga_step(jax.random.key(5), pop, fit, 0, dataclasses.replace(
        cfg, crossover="arithmetic", crossover_kw=()))[0]
    outputs = []
    for child in (new, plain):
        outputs.append(np.asarray(jax.vmap(lambda p: pop.model.apply(p, x))(child.params)))
        for state in states if child is new else ():
            for m, p in zip(jax.tree_util.tree_leaves(state),
                            jax.tree_util.tree_leaves(child.params)):
                np.testing.assert_allclose(m, p, rtol=1e-6, atol=1e-7)
    assert not np.allclose(outputs[0], outputs[1])  # the alignment changed the children


def test_aligned_crossover_options_live_in_their_own_config_value():
    old = WeightGAConfig(crossover="aligned", crossover_kw=(("match_to", "best"), ("every", 3),
                                                            ("base", "arithmetic")))
    new = WeightGAConfig(crossover="aligned",
                         alignment=gdl.Alignment(base="arithmetic", match_to="best", every=3))
    assert old == new and hash(old) == hash(new) and new.crossover_kw == ()
    assert (new.match_to, new.match_every, new.match_passes, new.matcher) == ("best", 3, 2,
                                                                              "greedy")
    exact = gdl.Alignment(matcher="exact")
    assert exact.match_to == "best" and exact.passes is None  # the exact matcher's defaults
    assert WeightGAConfig().alignment is None
    assert dataclasses.replace(new, crossover="uniform") == WeightGAConfig()  # not aligned: none
    for bad, message in ((lambda: WeightGAConfig(crossover="aligned",
                                                 crossover_kw=(("every", 2),),
                                                 alignment=gdl.Alignment()), "both"),
                         (lambda: gdl.Alignment(matcher="exact", match_to="parent"), "host"),
                         (lambda: gdl.Alignment(base="aligned"), "base crossover"),
                         (lambda: gdl.Alignment(every=2), "every")):
        with pytest.raises(ValueError, match=message):
            bad()


def test_generation_rules_are_strategies_with_their_own_state(iris):
    from genetic_dl.weights.rules import rule_of  # pylint: disable=import-outside-toplevel
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), iris, 4)
    fit = jnp.asarray([0.1, 0.4, 0.2, 0.3])
    metrics = {"loss": -fit}
    control = rule_of(WeightGAConfig(rule="none"))
    same, state, info = control.step(jax.random.key(1), None, pop, fit, metrics, 0)
    assert same is pop and state is None and info == {}
    de = rule_of(WeightGAConfig(rule="de"))
    assert de.init(jax.random.key(0), pop) is None
    trials, targets, info = de.step(jax.random.key(1), None, pop, fit, metrics, 0)
    assert targets.population is pop and np.array_equal(info["parents"][:, 0], np.arange(4))
    assert not np.array_equal(trials.ids, pop.ids)  # new members
    trial_fit = jnp.asarray([0.5, 0.0, 0.2, jnp.nan])  # better, worse, tie, failed
    kept, kept_fit, kept_metrics = de.evaluated(targets, trials, trial_fit, {"loss": -trial_fit})
    np.testing.assert_array_equal(kept.ids, [trials.ids[0], pop.ids[1], trials.ids[2], pop.ids[3]])
    np.testing.assert_allclose(kept_fit, [0.5, 0.4, 0.2, 0.3])
    np.testing.assert_allclose(kept_metrics["loss"], [-0.5, -0.4, -0.2, -0.3])
    ga = rule_of(WeightGAConfig(elitism=1))
    child, state, info = ga.step(jax.random.key(2), None, pop, fit, metrics, 0)
    assert state is None and info["parents"].shape == (4, 2) and child.ids[0] == pop.ids[1]


def test_loop_states_are_values_and_resuming_from_one_leaves_it_as_it_was(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), iris, 4)
    kw = dict(generations=4, epochs=1, batch_size=16, config=WeightGAConfig(rule="de"))
    states = []
    full = evolve_weights(jax.random.key(1), pop, iris, on_state=states.append, **kw)
    assert [s.generation for s in states] == [1, 2, 3]
    assert [len(s.history) for s in states] == [1, 2, 3]  # earlier states were not changed
    with pytest.raises(dataclasses.FrozenInstanceError):
        states[0].generation = 5
    mid = states[1]
    before = (len(mid.history), len(mid.lineage), mid.generation)
    resumed = evolve_weights(jax.random.key(99), pop, iris, resume=mid, **kw)
    assert (len(mid.history), len(mid.lineage), mid.generation) == before
    assert [h["best"] for h in resumed.history] == [h["best"] for h in full.history]
    assert resumed.lineage == full.lineage


def test_self_adaptive_scales_resume_bit_identically_from_a_checkpoint_file(iris, tmp_path):
    from genetic_dl.app import checkpoint  # pylint: disable=import-outside-toplevel
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), iris, 4)
    kw = dict(generations=4, epochs=1, batch_size=16,
              config=WeightGAConfig(self_adaptive=True, elitism=1, mutation_rate=0.2))
    states = []
    full = evolve_weights(jax.random.key(1), pop, iris, on_state=states.append, **kw)
    scales = np.asarray(states[1].rule_state.mutation_scale)
    assert scales.shape == (4,) and len(set(scales.tolist())) > 1  # each member its own
    assert "mutation_scale" not in states[1].population.hparams
    path = checkpoint.save(str(tmp_path), states[1], {"seed": 1})
    loaded, _ = checkpoint.load(path, pop)
    np.testing.assert_array_equal(loaded.rule_state.mutation_scale, scales)
    resumed = evolve_weights(jax.random.key(99), pop, iris, resume=loaded, **kw)
    assert [h["best"] for h in resumed.history] == [h["best"] for h in full.history]
    for a, b in zip(jax.tree_util.tree_leaves(resumed.best_params),
                    jax.tree_util.tree_leaves(full.best_params)):
        np.testing.assert_array_equal(a, b)


def _leaves(pop):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves((pop.params, pop.opt_state))]


def test_pbt_in_the_loop_copies_weights_and_optimizer_state_within_bounds(iris):
    bounds = (1e-3, 2e-2)
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16,)), iris, 8, "adam",
                              {"learning_rate": np.geomspace(1e-3, 2e-2, 8)})
    cfg = WeightGAConfig(rule="pbt", pbt_quantile=0.25,
                         pbt_bounds=(("learning_rate", bounds),))
    evaluated, stepped = [], []
    res = evolve_weights(jax.random.key(1), pop, iris, generations=4, epochs=2,
                         batch_size=16, config=cfg, fitness="accuracy",
                         callbacks=[lambda g, p, r: evaluated.append(p) and False],
                         on_state=lambda s: stepped.append(s.population))
    assert len(stepped) == 3
    copies = 0
    for before, after in zip(evaluated, stepped):
        ids_before, ids_after = np.asarray(before.ids), np.asarray(after.ids)
        parent_of = {c: pa for _, c, pa, _ in res.lineage}
        for j, member in enumerate(ids_after):
            new = member not in ids_before
            src = int(np.flatnonzero(ids_before == (parent_of[int(member)] if new else member))[0])
            copies += int(new)
            # a copy takes its source's weights and its Adam moments and step count
            for x, y in zip(_leaves(after), _leaves(before)):
                np.testing.assert_array_equal(x[j], y[src])
        lr = np.asarray(after.hparams["learning_rate"])
        assert np.all(lr >= bounds[0] * (1 - 1e-6)) and np.all(lr <= bounds[1] * (1 + 1e-6))
    assert copies == 3 * 2  # the bottom quarter of 8, each generation
    assert any(np.any(x != 0) for x in jax.tree_util.tree_leaves(stepped[0].opt_state))


def test_rule_none_is_plain_training_at_equal_compute(iris):
    pop = gdl.init_population(jax.random.key(3), gdl.MLPSpec((16,)), iris, 4)
    res = evolve_weights(jax.random.key(4), pop, iris, generations=3, epochs=2,
                         batch_size=16, config=WeightGAConfig(rule="none"))
    plain, _ = gdl.train(pop, iris, 6, batch_size=16)
    for x, y in zip(_leaves(res.population), _leaves(plain)):
        np.testing.assert_array_equal(x, y)
    assert res.history[-1]["network_epochs"] == 4 * 6  # the same compute
