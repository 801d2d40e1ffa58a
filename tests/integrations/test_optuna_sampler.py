"""The outer GA as an Optuna sampler: values inside their distributions, the GA's own
children, seeded reproducibility, no repeated or nearly repeated configs, failed/pruned
trials never parents, define-by-run spaces, enqueued trials, waiting for a generation,
n_jobs and two processes sharing a journal file (PostgreSQL: test_optuna_postgres.py)."""
import os
import subprocess
import sys

import jax
import numpy as np
import optuna
import pytest

from genetic_dl.search import genome_ops
from genetic_dl.integrations.optuna import CHILD_KEY, GASampler, space_of
from genetic_dl.search.ga import GA, GAState
from conftest import ROOT

optuna.logging.set_verbosity(optuna.logging.WARNING)


def mixed(trial):
    """Every kind of distribution; minimum 0 at x=1, lr=0.01, n=5, c='b'."""
    x = trial.suggest_float("x", -5, 5)
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    q = trial.suggest_float("q", 0.0, 1.0, step=0.125)
    n = trial.suggest_int("n", 1, 8)
    width = trial.suggest_int("width", 8, 512, log=True)
    k = trial.suggest_int("k", 2, 20, step=3)
    c = trial.suggest_categorical("c", ["a", "b", None, 3])
    return ((x - 1) ** 2 + (np.log10(lr) + 2) ** 2 + (n - 5) ** 2 + (c != "b")
            + 0.01 * (q + np.log(width) + k))


def _study(sampler, fn=mixed, n_trials=60, directions=None, **kw):
    study = optuna.create_study(sampler=sampler, directions=directions, **kw)
    study.optimize(fn, n_trials=n_trials, catch=(RuntimeError,))
    return study


def _assert_inside(trials):
    for t in trials:
        for name, value in t.params.items():
            dist = t.distributions[name]
            assert dist._contains(dist.to_internal_repr(value)), (name, value, dist)


def _generation(t):
    return t.system_attrs.get("GASampler:generation")


def test_samples_stay_inside_every_distribution_and_generations_advance():
    study = _study(GASampler(population=6, seed=0), n_trials=60)
    _assert_inside(study.trials)
    assert max(_generation(t) for t in study.trials) >= 8  # 5 new trials per generation
    assert all(isinstance(t.params["n"], int) and isinstance(t.params["x"], float)
               for t in study.trials)


def test_first_generation_is_a_latin_hypercube_in_each_parameter():
    sampler = GASampler(population=9, seed=3)  # elitism 1: 8 trials per generation
    study = _study(sampler, n_trials=8)
    space = space_of(study.trials[0].distributions)
    units = np.array([space.encode(t.params) for t in study.trials])
    for name in ("x", "lr"):
        strata = np.floor(units[:, space.index(name)] * 8).astype(int)
        assert sorted(strata) == list(range(8)), name


def test_children_are_the_outer_GAs_own():
    """Generation 1 holds GA.ask's children of generation 0, in order."""
    sampler = GASampler(population=6, seed=5, crossover="two_point", mutation_rate=0.2)
    study = _study(sampler, n_trials=10)
    gen0 = [t for t in study.trials if _generation(t) == 0]
    gen1 = [t for t in study.trials if _generation(t) == 1]
    space = space_of(gen0[0].distributions)
    genomes = np.array([space.encode(t.params) for t in gen0])
    state = GAState(space=space, genomes=genomes, fitness=[-t.value for t in gen0],
                    generation=0, lo=np.zeros(space.dim), hi=np.ones(space.dim),
                    seen=frozenset(space.key(g) for g in genomes),
                    evaluated=space.coordinates(genomes))
    ga = GA(population=6, crossover="two_point", mutation_rate=0.2, renew="always")
    want = ga.ask(jax.random.fold_in(jax.random.fold_in(jax.random.key(5), 1), 0), state)[0][1:]
    assert [t.system_attrs[CHILD_KEY] for t in gen1] == list(range(len(gen1)))
    for t, genome in zip(gen1, want):  # genes copied from a parent keep its exact value
        bred = space.decode(genome)
        assert t.params.keys() == bred.keys()
        for name, value in t.params.items():
            assert value == pytest.approx(bred[name], rel=1e-6, abs=1e-6), name
    copied = {t.params["x"] for t in gen1} & {t.params["x"] for t in gen0}
    assert copied  # some child took x from a parent: the very value, not its float32


def test_a_seeded_sequential_study_is_reproducible():
    a, b = (_study(GASampler(population=5, seed=11), n_trials=30) for _ in range(2))
    c = _study(GASampler(population=5, seed=12), n_trials=30)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]


def test_a_config_in_the_study_is_never_proposed_again():
    def small(trial):  # 4 x 3 = 12 configs
        return trial.suggest_int("n", 1, 4) + 0.1 * ["a", "b", "c"].index(
            trial.suggest_categorical("c", ["a", "b", "c"]))
    study = _study(GASampler(population=4, seed=0), fn=small, n_trials=12)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 12


def test_failed_and_pruned_trials_never_become_parents():
    def flaky(trial):
        value = mixed(trial)
        if trial.params["n"] in (2, 3):
            raise RuntimeError("this config crashes")
        if trial.params["c"] is None:
            raise optuna.TrialPruned()
        return value
    study = _study(GASampler(population=6, seed=1), fn=flaky, n_trials=80)
    states = {t._trial_id: t.state for t in study.trials}
    attrs = study._storage.get_study_system_attrs(study._study_id)
    parent_lists = [v for k, v in attrs.items() if k.startswith("GASampler:parent:")]
    assert len(parent_lists) >= 3
    assert {states[i] for ids in parent_lists for i in ids} == {optuna.trial.TrialState.COMPLETE}
    done = {s for s in states.values()}
    assert optuna.trial.TrialState.FAIL in done and optuna.trial.TrialState.PRUNED in done


def test_define_by_run_parameters_outside_the_shared_space_are_sampled_independently():
    def branchy(trial):
        kind = trial.suggest_categorical("kind", ["mlp", "cnn"])
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        if kind == "mlp":
            return (np.log10(lr) + 2) ** 2 + trial.suggest_int("layers", 1, 4)
        return (np.log10(lr) + 3) ** 2 + trial.suggest_float("kernel", 1.0, 7.0, step=2.0)
    study = _study(GASampler(population=5, seed=2), fn=branchy, n_trials=40)
    _assert_inside(study.trials)
    later = [t for t in study.trials if _generation(t) >= 1]
    assert later and all(CHILD_KEY in t.system_attrs for t in later)  # kind, lr: relative
    assert {t.params["kind"] for t in study.trials} == {"mlp", "cnn"}


def test_parallel_threads_record_every_trial_once_and_breed_a_sequential_studys_children():
    study = optuna.create_study(sampler=GASampler(population=6, seed=0))
    study.optimize(mixed, n_trials=30, n_jobs=2)
    assert sorted(t.number for t in study.trials) == list(range(30))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    _assert_inside(study.trials)
    alone = _study(GASampler(population=6, seed=0), n_trials=30)
    assert [t.params for t in study.trials] == [t.params for t in alone.trials]


WORKER = """
import sys, optuna
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from test_optuna_sampler import mixed
from genetic_dl.integrations.optuna import GASampler
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(sys.argv[1]))
study = optuna.load_study(study_name="shared", storage=storage, sampler=GASampler(6, seed=0))
study.optimize(mixed, n_trials=15)
"""


def test_two_processes_sharing_a_journal_file_cooperate(tmp_path):
    path = str(tmp_path / "journal.log")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    optuna.create_study(study_name="shared", storage=storage)
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, path, os.path.dirname(__file__),
                               os.path.join(ROOT, "tests")],
                              env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert sorted(t.number for t in study.trials) == list(range(30))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    _assert_inside(study.trials)
    assert max(_generation(t) for t in study.trials) >= 3
    alone = _study(GASampler(6, seed=0), n_trials=30)
    assert [t.params for t in study.trials] == [t.params for t in alone.trials]


def three(trial):
    """The reported function: one continuous, one integer and one categorical parameter."""
    x = trial.suggest_float("x", 0.0, 1.0)
    n = trial.suggest_int("n", 1, 8)
    c = trial.suggest_categorical("c", ["a", "b", "c", "d"])
    return (x - 0.3) ** 2 + abs(n - 3) + (c != "b")


def test_bred_children_keep_away_from_every_earlier_config():
    """Reported: x = 0.20521016 came back as 0.20521045 with the same n and c (a parent
    copied through float32 genomes; now its exact value, a repeat), and children a hair
    away from a known point re-evaluate it: each keeps GA.min_distance from them all."""
    def gaps(**options):
        out = []
        for seed in range(6):
            study = _study(GASampler(population=8, seed=seed, **options), fn=three, n_trials=21)
            space = space_of(study.trials[0].distributions)
            genomes = np.array([space.encode(t.params) for t in study.trials])
            generation = np.array([_generation(t) for t in study.trials])
            for g in (1, 2):
                out.append(space.separation(space.coordinates(genomes[generation == g]),
                                            space.coordinates(genomes[generation < g])).min(1))
        return np.concatenate(out)
    assert np.all(gaps() >= GA().min_distance)
    old = gaps(min_distance=0.0)  # only exact repeats renewed, as before
    assert np.any((old > 0) & (old < GA().min_distance))


def test_enqueued_trials_keep_their_params_fill_their_slot_and_may_be_parents():
    study = optuna.create_study(sampler=GASampler(population=4, seed=0))
    best = {"x": 1.0, "lr": 0.01, "q": 0.0, "n": 5, "width": 8, "k": 2, "c": "b"}
    study.enqueue_trial(best)
    study.optimize(mixed, n_trials=9)
    first = study.trials[0]
    assert first.params == best and first.system_attrs[CHILD_KEY] is None
    assert [_generation(t) for t in study.trials] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [t.system_attrs[CHILD_KEY] for t in study.trials[1:]] == [1, 2, 0, 1, 2, 0, 1, 2]
    assert first.number in {t.number for t in study.sampler.get_parent_population(study, 1)}


def test_a_trial_of_the_next_generation_waits_for_the_last_one_and_says_so():
    study = optuna.create_study(sampler=GASampler(population=4, seed=0, wait_timeout=0.2))
    first = [study.ask() for _ in range(3)]  # generation 0 (3 new trials: one elite)
    values = [mixed(t) for t in first]
    study.tell(first[0], values[0])
    study.tell(first[1], values[1])
    later = study.ask()
    with pytest.raises(RuntimeError, match=r"trial 3 \(generation 1\) waits for trial\(s\) "
                       r"\[2\] of the previous generation.*heartbeat_interval"):
        mixed(later)
    study.tell(first[2], values[2])
    study.tell(later, mixed(later))
    assert later.params and study.trials[3].system_attrs[CHILD_KEY] == 0


def test_multi_objective_parents_keep_the_pareto_front():
    """(mu + lambda): each generation's parents are the best of the previous parents and
    the previous generation, the non-dominated ones first."""
    def two(trial):
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        return x, (1 - x) ** 2 + y
    study = _study(GASampler(population=6, seed=4), fn=two, n_trials=42,
                   directions=["minimize", "minimize"])
    _assert_inside(study.trials)
    sampler = study.sampler
    last = max(_generation(t) for t in study.trials)
    for g in range(2, last + 1):
        pool = {t.number: t for t in sampler.get_parent_population(study, g - 1)}
        pool.update((t.number, t) for t in study.trials if _generation(t) == g - 1)
        pool = list(pool.values())
        front = genome_ops.pareto_front(-np.array([t.values for t in pool]))  # maximised
        on_front = {pool[i].number for i in front}
        kept = {t.number for t in sampler.get_parent_population(study, g)}
        assert len(kept) == 6
        assert (kept <= on_front) if len(on_front) >= 6 else (on_front <= kept), g


def test_it_beats_random_sampling_on_a_mixed_function():
    ga = [_study(GASampler(population=8, seed=s), n_trials=100).best_value for s in range(3)]
    rnd = [_study(optuna.samplers.RandomSampler(seed=s), n_trials=100).best_value
           for s in range(3)]
    assert np.mean(ga) < 0.5 * np.mean(rnd), (ga, rnd)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown GA option.*mutation_rat"):
        GASampler(mutation_rat=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        GASampler(population=1)


def test_ga_options_pass_through_to_the_breeding():
    plain = _study(GASampler(population=5, seed=6), n_trials=20)
    screened = _study(GASampler(population=5, seed=6, screen=4), n_trials=20)
    _assert_inside(screened.trials)
    params = [[t.params for t in s.trials] for s in (plain, screened)]
    assert params[0][:4] == params[1][:4] and params[0] != params[1]  # same first generation
