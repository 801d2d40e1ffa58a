"""Runs that must end: programs that once wedged XLA CPU, and the CLI's watchdog."""
import json
import subprocess

import pytest

from conftest import run_python

# A vmapped 2-layer LSTM population's init once deadlocked XLA CPU's thread pool
# (benchmarks/xla_qr_deadlock.py). Fully optimised, as users run it; the timeout
# is ~30x its normal run time: a hang detector, not a timing assertion.
LSTM_POPULATION = """
import json, sys
import jax, numpy as np, sklearn.datasets
import genetic_dl as gdl
x, y = sklearn.datasets.make_classification(178, 13, n_informative=8, n_classes=3,
                                            random_state=0)
data = gdl.make_dataset("lstm", x[:134].astype(np.float32), y[:134], x[134:], y[134:])
pop = gdl.init_population(jax.random.key(0), gdl.RNNSpec(cell="lstm", hidden=128, layers=2),
                          data, size=2, optimizer="adamw")
pop, h = gdl.train(pop, data, 1, batch_size=64)
print(json.dumps(np.asarray(h["val_loss"]).ravel().tolist()))
"""


@pytest.mark.parametrize("devices", [1, 2])
def test_two_layer_lstm_population_trains_and_ends(devices):
    try:
        out = run_python(LSTM_POPULATION, devices, timeout=300, optimized=True)
    except subprocess.TimeoutExpired:
        pytest.fail("a 2-layer LSTM population did not finish in 300 s: XLA CPU deadlock")
    losses = json.loads(out.strip().splitlines()[-1])
    assert len(losses) == 2 and all(0.0 < v < 5.0 for v in losses)


def test_watchdog_fires_on_flat_cpu_time_and_not_on_a_moving_one():
    from genetic_dl.app import watchdog  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel
    stalls = []
    fired = threading.Event()

    def on_stall(seconds, dump, hint):
        stalls.append((seconds, dump, hint))
        fired.set()
    with watchdog.watch(0.3, "hang.txt", "retry", on_stall=on_stall, clock=lambda: 1.0):
        assert fired.wait(5.0)
    assert stalls == [(0.3, "hang.txt", "retry")]
    ticks = iter(range(10 ** 6))
    with watchdog.watch(0.3, None, "", on_stall=on_stall, clock=lambda: next(ticks) * 0.1):
        time.sleep(1.0)  # CPU "advances" 0.1 s per poll: busy, never a stall
    assert len(stalls) == 1
    with watchdog.watch(0, None, "", on_stall=on_stall, clock=lambda: 1.0):
        time.sleep(0.3)  # 0 disables it
    assert len(stalls) == 1


# The CLI with one generation's report replaced: a sleep (a stall: no CPU time) or a
# busy loop (a long but busy round). Member results are unchanged by either.
PATCHED_CLI = """
import sys, time
from genetic_dl.app import cli
real_line = cli._line
def stalled_report(args, bar, text, advance):
    if text.startswith("gen   1") and sys.argv[1] == "sleep":
        time.sleep(600)
    if text.startswith("gen   1") and sys.argv[1] == "busy":
        end = time.time() + 6
        while time.time() < end:
            sum(i * i for i in range(1000))
    real_line(args, bar, text, advance)
cli._line = stalled_report
sys.exit(cli.main(sys.argv[2:]))
"""
RUN = ["evolve-weights", "--dataset", "iris", "--population", "4", "--generations", "3",
       "--epochs", "1", "--batch-size", "16", "--hidden", "8"]


def _patched_cli(mode, *args):
    import os  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    from conftest import ROOT  # pylint: disable=import-outside-toplevel
    env = dict(os.environ, PYTHONPATH=ROOT, GENETIC_DL_HOST_DEVICES="0")
    return subprocess.run([sys.executable, "-c", PATCHED_CLI, mode, *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def test_cli_watchdog_dumps_stacks_and_exits_3_then_resume_finishes(tmp_path):
    out = tmp_path / "run"
    proc = _patched_cli("sleep", *RUN, "--watchdog-seconds", "3", "--out", str(out))
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no progress for 3 s"), proc.stderr
    assert "--resume" in lines[0]
    stacks = (out / "hang.txt").read_text()
    assert "stalled_report" in stacks and "time.sleep" not in lines[0]
    assert not (out / "result.json").exists()
    retry = _patched_cli("none", *RUN, "--watchdog-seconds", "3", "--out", str(out), "--resume")
    assert retry.returncode == 0, retry.stderr
    fresh = _patched_cli("none", *RUN, "--out", str(tmp_path / "fresh"))
    assert json.loads((out / "result.json").read_text())["best"] == \
        json.loads((tmp_path / "fresh" / "result.json").read_text())["best"]


def test_cli_watchdog_leaves_a_long_busy_round_alone(tmp_path):
    proc = _patched_cli("busy", *RUN, "--watchdog-seconds", "2", "--quiet",
                        "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "result.json").exists()
