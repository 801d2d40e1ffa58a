"""GASampler studies shared by worker processes over a real PostgreSQL server (Optuna's
RDBStorage): every child of every generation evaluated once, the children those of a
one-worker run, and a worker killed mid-trial failed after its heartbeat's grace.

The server's URL comes from ``GENETIC_DL_TEST_POSTGRES`` (``.ci/run`` starts one); without
it the tests skip, except under CI (``CI`` set), where they fail."""
import collections
import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest

from genetic_dl.integrations.optuna import CHILD_KEY, GASampler
from conftest import ROOT

optuna.logging.set_verbosity(optuna.logging.WARNING)
URL_VARIABLE = "GENETIC_DL_TEST_POSTGRES"
GENERATION_KEY = "GASampler:generation"


@pytest.fixture(name="url")
def postgres_url():
    """The server's SQLAlchemy URL."""
    url = os.environ.get(URL_VARIABLE)
    problem = None if url else f"{URL_VARIABLE} names no PostgreSQL server (.ci/run starts one)"
    if importlib.util.find_spec("psycopg2") is None:
        problem = "psycopg2 is missing: pip install psycopg2-binary"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return url


def objective(trial):
    """One continuous, one integer and one categorical parameter; cheap."""
    x = trial.suggest_float("x", -5.0, 5.0)
    n = trial.suggest_int("n", 1, 8)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    return (x - 1.0) ** 2 + abs(n - 3) + (kind != "b")


# argv: url, study, folder, role, population, trials. Roles: "barrier" waits with the
# others for the file "go"; "sleeper" sleeps in its second trial; "survivor" fails stale
# trials (heartbeat) and retries them once (Optuna's retry callback, which copies the failed
# trial's params and attributes: the retry repeats its config by design).
WORKER = """
import os, sys, time, optuna
sys.path[:0] = [os.environ["TESTS_DIR"], os.path.join(os.environ["TESTS_DIR"], "integrations")]
from test_optuna_postgres import objective
from genetic_dl.integrations.optuna import GASampler
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name, folder, role, population, trials = sys.argv[1:]
if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
    retry = {"heartbeat_stale_trial_callback":
             optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
else:
    retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2, **retry)
study = optuna.load_study(study_name=name, storage=storage,
                          sampler=GASampler(population=int(population), seed=0))
def sleepy(trial):
    value = objective(trial)
    if trial.number == 1:
        open(os.path.join(folder, "sleeping"), "w").close()
        time.sleep(600)
    return value
if role == "barrier":
    open(os.path.join(folder, "ready-%d" % os.getpid()), "w").close()
    while not os.path.exists(os.path.join(folder, "go")):
        time.sleep(0.01)
study.optimize(sleepy if role == "sleeper" else objective, n_trials=int(trials))
"""


def _start(url, name, folder, role, population, trials):
    env = dict(os.environ, PYTHONPATH=ROOT, TESTS_DIR=os.path.join(ROOT, "tests"))
    return subprocess.Popen([sys.executable, "-c", WORKER, url, name, str(folder), role,
                             str(population), str(trials)],
                            env=env, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, what, timeout=120.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def _finish(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def _new_study(url):
    name = f"gasampler-{uuid.uuid4().hex}"
    optuna.create_study(study_name=name, storage=url)
    return name


def test_four_workers_released_together_evaluate_each_child_once(url, tmp_path):
    name = _new_study(url)
    procs = [_start(url, name, tmp_path, "barrier", 8, 25) for _ in range(4)]
    try:
        _wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 4, "the workers to load")
        (tmp_path / "go").touch()  # the barrier: all four start asking at once
        for p in procs:
            assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
    finally:
        _finish(procs)
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [t.number for t in trials] == list(range(100))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    claims = collections.Counter((t.system_attrs[GENERATION_KEY], t.system_attrs.get(CHILD_KEY))
                                 for t in trials)
    assert set(claims.values()) == {1}  # each (generation, child) claimed once
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 100

    alone = optuna.create_study(sampler=GASampler(population=8, seed=0))
    alone.optimize(objective, n_trials=100)
    assert [t.params for t in trials] == [t.params for t in alone.trials]


def test_a_worker_killed_mid_trial_is_failed_by_a_survivor_and_retried(url, tmp_path):
    name = _new_study(url)
    sleeper = _start(url, name, tmp_path, "sleeper", 4, 2)  # trial 1 sleeps
    survivor = None
    try:
        _wait_for((tmp_path / "sleeping").exists, "the sleeper's second trial")
        survivor = _start(url, name, tmp_path, "survivor", 4, 6)
        study = optuna.load_study(study_name=name, storage=url)
        _wait_for(lambda: len(study.trials) == 4, "the survivor's trial of generation 1")
        # that trial waits for trial 1, until the survivor fails it as stale
        sleeper.send_signal(signal.SIGKILL)
        assert sleeper.wait(timeout=30) == -signal.SIGKILL
        assert survivor.wait(timeout=300) == 0, survivor.stderr.read()[-3000:]
    finally:
        _finish([sleeper] + ([survivor] if survivor else []))
    trials = optuna.load_study(study_name=name, storage=url).trials
    states = collections.Counter(t.state for t in trials)
    assert states == {optuna.trial.TrialState.COMPLETE: 7, optuna.trial.TrialState.FAIL: 1}
    assert trials[1].state == optuna.trial.TrialState.FAIL
    # RetryFailedTrialCallback repeats the killed trial's config by design
    retry, = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert retry.params == trials[1].params and retry.system_attrs[CHILD_KEY] is None
    bred = [t for t in trials if t.system_attrs[CHILD_KEY] is not None]
    assert all(divmod(t.number, 3) == (t.system_attrs[GENERATION_KEY], t.system_attrs[CHILD_KEY])
               for t in bred)
    assert len({tuple(sorted(t.params.items())) for t in bred}) == len(bred)
