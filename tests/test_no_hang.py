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
