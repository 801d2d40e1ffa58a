"""Recombination while a generation trains (WeightGAConfig.recombination): its options,
rounds, determinism and resume, every rule, and the CLI's flags."""
import json
import subprocess

import jax
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.operators.recombination import shared_start
from genetic_dl.weights import WeightGAConfig, evolve_weights
from genetic_dl.weights.rules import RULE_CLASSES, RuleBase, rule_of
from genetic_dl.weights.rules import base
from genetic_dl.core.train import round_lengths


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _members_equal(pop):
    return all(np.array_equal(x[0], x[i]) for x in _leaves((pop.params, pop.opt_state))
               if x.ndim > 1 for i in range(1, x.shape[0]))


def test_options_default_off_with_per_method_rates_and_refuse_bad_values():
    assert WeightGAConfig().recombination == "none"
    assert [WeightGAConfig(recombination=m).recombination_strength
            for m in ("wash", "pull", "pairwise")] == [0.01, 0.5, 1.0]
    cfg = WeightGAConfig(recombination="wash", recombination_rate=0, recombination_period=3)
    assert cfg.recombination_strength == 0.0 and isinstance(cfg.recombination_rate, float)
    for kw, message in ((dict(recombination="papa"), "unknown recombination 'papa'"),
                        (dict(recombination_rate=1.5), "recombination_rate must be in"),
                        (dict(recombination_rate="x"), "recombination_rate must be a number"),
                        (dict(recombination_period=0), "recombination_period must be"),
                        (dict(recombination_period=1.5), "recombination_period must be")):
        with pytest.raises(ValueError, match=message) as err:
            WeightGAConfig(**kw)
        assert "\n" not in str(err.value)


def test_rounds_cover_the_generations_epochs():
    assert round_lengths(5, 1) == [1] * 5
    assert round_lengths(5, 2) == [2, 2, 1]
    assert round_lengths(2, 4) == [2]


def test_every_rule_trains_through_the_base_so_every_rule_recombines():
    for name, cls in RULE_CLASSES.items():
        assert cls.train is RuleBase.train, name


def test_full_pull_makes_the_members_equal_after_every_round(iris):
    pop = shared_start(gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4))
    trained, _ = gdl.train(pop, iris, 1, batch_size=16)
    assert not _members_equal(trained)  # each member its own data order: they drift apart
    cfg = WeightGAConfig(rule="none", recombination="pull", recombination_rate=1.0)
    equal = []
    out = evolve_weights(jax.random.key(1), pop, iris, generations=3, epochs=2, batch_size=16,
                         config=cfg, callbacks=[lambda g, p, r: equal.append(_members_equal(p))])
    assert equal == [True] * 3 and out.history[-1]["diversity"] < 1e-6
    # a generation of 2 epochs in rounds of 1 is not one round of 2
    once = rule_of(WeightGAConfig(rule="none", recombination="pull", recombination_rate=1.0,
                                  recombination_period=2))
    twice = rule_of(cfg)
    a = once.train(None, pop, iris, 2, batch_size=16, mesh=None)
    b = twice.train(None, pop, iris, 2, batch_size=16, mesh=None)
    assert _members_equal(a) and _members_equal(b)
    assert not np.array_equal(_leaves(a.params)[0], _leaves(b.params)[0])


def test_a_new_rate_reuses_the_compiled_recombination(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), iris, 4)
    base.recombined(pop, WeightGAConfig(recombination="wash"))
    compiled = base._recombined._cache_size()  # pylint: disable=protected-access
    for rate in (0.2, 0.7):
        base.recombined(pop, WeightGAConfig(recombination="wash", recombination_rate=rate))
    assert base._recombined._cache_size() == compiled  # pylint: disable=protected-access


@pytest.mark.parametrize("rule,method", [("ga", "wash"), ("de", "pull"), ("pbt", "pairwise")])
def test_reruns_and_resumed_runs_are_bit_identical(iris, rule, method):
    pop = shared_start(gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), iris, 4))
    kw = dict(generations=3, epochs=2, batch_size=16,
              config=WeightGAConfig(rule=rule, recombination=method, recombination_rate=0.3))
    states = []
    full = evolve_weights(jax.random.key(1), pop, iris, on_state=states.append, **kw)
    again = evolve_weights(jax.random.key(1), pop, iris, **kw)
    resumed = evolve_weights(jax.random.key(99), pop, iris, resume=states[0], **kw)
    off = evolve_weights(jax.random.key(1), pop, iris,
                         **{**kw, "config": WeightGAConfig(rule=rule)})
    for run in (again, resumed):
        assert [h["member_fitness"] for h in run.history] == \
            [h["member_fitness"] for h in full.history]
        for x, y in zip(_leaves(run.population.params), _leaves(full.population.params)):
            np.testing.assert_array_equal(x, y)
    assert [h["member_fitness"] for h in off.history] != \
        [h["member_fitness"] for h in full.history]  # the recombination did something


def test_the_cli_flags_reach_the_run(tmp_path, capsys, monkeypatch):
    from genetic_dl.app import cli  # pylint: disable=import-outside-toplevel
    args = cli.parse(["evolve-weights", "--recombination", "pull", "--recombination-rate",
                      "0.25", "--recombination-period", "2"])
    assert (args.recombination, args.recombination_rate, args.recombination_period) == \
        ("pull", 0.25, 2)
    monkeypatch.setenv("GENETIC_DL_CACHE", "off")
    out = tmp_path / "run"
    code = cli.main(["evolve-weights", "--dataset", "iris", "--population", "3",
                     "--generations", "2", "--epochs", "2", "--batch-size", "16", "--hidden",
                     "4", "--recombination", "wash", "--recombination-rate", "0.1", "--quiet",
                     "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert len(result["history"]) == 2 and result["budget_used"] == 12
    code = cli.main(["evolve-weights", "--recombination-rate", "2", "--recombination", "pull"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: recombination_rate must be in [0, 1]"), err


def test_shared_start_gives_every_member_member_0s_start_and_reruns_and_resumes_exactly(iris):
    still = gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), iris, 4,
                                optimizer=lambda hp: optax.set_to_zero())  # nothing moves
    seen = []
    kw = dict(generations=1, epochs=1, batch_size=16,
              callbacks=[lambda g, p, r: seen.append((p, r["member_fitness"]))])
    for shared in (True, False):
        evolve_weights(jax.random.key(1), still, iris,
                       config=WeightGAConfig(rule="none", shared_start=shared), **kw)
    (shared_pop, shared_fit), (own_pop, own_fit) = seen
    for x, y in zip(_leaves(shared_pop.params), _leaves(still.params)):
        np.testing.assert_array_equal(x, np.broadcast_to(y[0], x.shape))  # member 0's start
    assert len(set(shared_fit)) == 1 and len(set(own_fit)) == 4
    assert not _members_equal(own_pop)
    with pytest.raises(ValueError, match="shared_start must be True or False"):
        WeightGAConfig(shared_start="yes")
    # GA steps make the members differ again; a resume must not collapse them a second time
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), iris, 4)
    kw = dict(generations=3, epochs=1, batch_size=16,
              config=WeightGAConfig(rule="ga", shared_start=True, recombination="pull"))
    states = []
    full = evolve_weights(jax.random.key(1), pop, iris, on_state=states.append, **kw)
    again = evolve_weights(jax.random.key(1), pop, iris, **kw)
    resumed = evolve_weights(jax.random.key(99), pop, iris, resume=states[0], **kw)
    assert not _members_equal(states[0].population)
    for run in (again, resumed):
        assert [h["member_fitness"] for h in run.history] == \
            [h["member_fitness"] for h in full.history]
        for x, y in zip(_leaves(run.population.params), _leaves(full.population.params)):
            np.testing.assert_array_equal(x, y)


def test_the_shared_start_flag_reaches_the_config(tmp_path, capsys, monkeypatch):
    from genetic_dl.app import cli  # pylint: disable=import-outside-toplevel
    configs = []

    def spy(*args, **kwargs):
        configs.append(kwargs["config"])
        return evolve_weights(*args, **kwargs)
    monkeypatch.setattr(cli, "evolve_weights", spy)
    monkeypatch.setenv("GENETIC_DL_CACHE", "off")
    for i, flags in enumerate(([], ["--shared-start", "--reset-statistics", "3"])):
        code = cli.main(["evolve-weights", "--dataset", "iris", "--population", "2",
                         "--generations", "1", "--epochs", "1", "--hidden", "4", "--quiet",
                         "--out", str(tmp_path / str(i)), *flags])
        assert code == 0, capsys.readouterr().err
    assert [c.shared_start for c in configs] == [False, True]
    assert [c.reset_statistics for c in configs] == [0, 3]


def test_repair_options_are_checked():
    assert WeightGAConfig(recombination="pull", repair=2).repair == 2
    for kw, message in ((dict(repair=2), "repair rescales members made by averaging"),
                        (dict(recombination="wash", repair=1), "not 'wash'"),
                        (dict(recombination="pull", repair=-1), "repair is a number"),
                        (dict(recombination="pull", repair=True), "repair is a number")):
        with pytest.raises(ValueError, match=message) as err:
            WeightGAConfig(**kw)
        assert "\n" not in str(err.value)


def test_repaired_rounds_rerun_and_resume_exactly_and_change_the_members(iris):
    pop = shared_start(gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4))
    cfg = WeightGAConfig(rule="ga", recombination="pairwise", recombination_rate=0.5, repair=2)
    kw = dict(generations=2, epochs=2, batch_size=16, config=cfg)
    states = []
    full = evolve_weights(jax.random.key(1), pop, iris, on_state=states.append, **kw)
    resumed = evolve_weights(jax.random.key(9), pop, iris, resume=states[0], **kw)
    plain = evolve_weights(jax.random.key(1), pop, iris,
                           **{**kw, "config": WeightGAConfig(rule="ga", recombination="pairwise",
                                                             recombination_rate=0.5)})
    for x, y in zip(_leaves(resumed.population.params), _leaves(full.population.params)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in
               zip(_leaves(plain.population.params), _leaves(full.population.params)))
    stream = gdl.Stream.from_dataset(iris, 16)
    with pytest.raises(ValueError, match="repair needs a Dataset"):
        evolve_weights(jax.random.key(1), pop, stream, **kw)


def test_the_repair_flag_reaches_the_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GENETIC_DL_CACHE", "off")
    from genetic_dl.app import cli  # pylint: disable=import-outside-toplevel
    out = tmp_path / "run"
    code = cli.main(["evolve-weights", "--dataset", "iris", "--population", "3",
                     "--generations", "1", "--epochs", "1", "--batch-size", "16", "--hidden",
                     "4", "--recombination", "pull", "--repair", "2", "--quiet",
                     "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "repair = 2" in (out / "config.toml").read_text().splitlines()
    code = cli.main(["evolve-weights", "--dataset", "iris", "--repair", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: repair rescales members"), err


RECOMBINING_RUN = """
import json
import jax, numpy as np
import genetic_dl as gdl
from genetic_dl.weights import WeightGAConfig, evolve_weights
data = gdl.load_dataset("iris")
pop = gdl.shared_start(gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), data, 4))
out = {}
for method, rate, repair in (("wash", 0.5, 0), ("pull", 1.0, 2), ("pairwise", 1.0, 0)):
    res = evolve_weights(jax.random.key(1), pop, data, generations=2, epochs=2, batch_size=16,
                         config=WeightGAConfig(rule="none", recombination=method,
                                               recombination_rate=rate, repair=repair))
    leaves = jax.tree_util.tree_leaves(res.population.params)
    out[method] = {"fitness": np.asarray(res.history[-1]["member_fitness"]).tolist(),
                   "equal": all(np.array_equal(x[0], x[i]) for x in leaves
                                for i in range(1, 4))}
print(json.dumps(out))
"""


@pytest.mark.parametrize("devices", [1, 2])
def test_recombining_runs_end_on_one_and_two_devices(devices):
    from conftest import run_python  # pylint: disable=import-outside-toplevel
    try:
        out = json.loads(run_python(RECOMBINING_RUN, devices, timeout=300).splitlines()[-1])
    except subprocess.TimeoutExpired:
        pytest.fail(f"recombining runs on {devices} device(s) did not finish in 300 s")
    assert all(np.isfinite(v).all() for v in (r["fitness"] for r in out.values()))
    assert out["pull"]["equal"] and not out["wash"]["equal"]  # a full pull: one network


@pytest.mark.parametrize("method", ["wash", "pull", "pairwise"])
def test_rounds_in_one_program_equal_rounds_one_call_at_a_time(iris, method):
    pop = shared_start(gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4))
    cfg = WeightGAConfig(recombination=method, recombination_rate=0.5, recombination_period=2)
    fused, hist = gdl.train(pop, iris, 3, batch_size=16, between=base._between(method, 2),
                            between_arg=np.float32(0.5))  # pylint: disable=protected-access
    looped, losses = pop, []
    for length in (2, 1):
        looped, h = gdl.train(looped, iris, length, batch_size=16)
        looped = base.recombined(looped, cfg)
        losses.append(np.asarray(h["train_loss"]))
    np.testing.assert_allclose(np.asarray(hist["train_loss"]), np.concatenate(losses, axis=1),
                               rtol=1e-5)
    for x, y in zip(_leaves(fused.params), _leaves(looped.params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
