"""Device setup is explicit: importing genetic_dl changes nothing outside it;
``use_host_devices()`` asks for one CPU device per core, and says when it is too late."""
import os
import subprocess
import sys
import warnings

import jax
import pytest

import genetic_dl as gdl
from genetic_dl.core import sharding
from conftest import ROOT

IMPORT_ONLY = """
import json, os, sys
before = os.environ.get("XLA_FLAGS")
import genetic_dl
import jax
from jax._src import xla_bridge
print(json.dumps({"flags": os.environ.get("XLA_FLAGS"), "before": before,
                  "started": xla_bridge.backends_are_initialized(),
                  "num_cpu_devices": jax.config.jax_num_cpu_devices}))
"""

LATE = """
import warnings, jax, jax.numpy as jnp
import genetic_dl as gdl
jnp.zeros(1).block_until_ready()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert gdl.use_host_devices(4) is False
print(jax.device_count(), "|", caught[0].message if caught else "no warning")
"""

EARLY = """
import jax, genetic_dl as gdl
assert gdl.use_host_devices(3) is True
print(jax.device_count())
"""


def _python(code, **env):
    full = dict(os.environ, PYTHONPATH=ROOT, **env)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.parametrize("flags", ["", "--xla_cpu_enable_fast_math=false"])
def test_import_leaves_the_environment_and_jax_untouched(flags):
    import json  # pylint: disable=import-outside-toplevel
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    if flags:
        env["XLA_FLAGS"] = flags
    proc = subprocess.run([sys.executable, "-c", IMPORT_ONLY], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert got["flags"] == got["before"] == (flags or None)
    assert got["started"] is False and got["num_cpu_devices"] == -1


def test_use_host_devices_before_jax_starts_sets_the_count_and_after_it_warns():
    assert _python(EARLY).splitlines()[-1] == "3"
    count, message = _python(LATE).splitlines()[-1].split(" | ")
    assert count == "1" and "after JAX's first computation" in message
    # a count the user chose in XLA_FLAGS wins
    assert _python(EARLY.replace("is True", "is False"),
                   XLA_FLAGS="--xla_force_host_platform_device_count=2").splitlines()[-1] == "2"


def test_training_on_one_device_of_many_cores_says_how_to_use_them(monkeypatch, iris):
    if jax.device_count() > 1:
        pytest.skip("needs a process with one device")  # the suite's processes have one
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.delenv(sharding.ENV_COUNT, raising=False)
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), iris, 2)
    with pytest.warns(UserWarning, match=r"4 cores: call genetic_dl.use_host_devices\(\)"):
        gdl.train(pop, iris, 1, batch_size=16)
    with warnings.catch_warnings():  # one member or an explicit single device: no advice
        warnings.simplefilter("error")
        gdl.train(pop, iris, 1, batch_size=16, mesh=None)
        gdl.train(gdl.take(pop, [0]), iris, 1, batch_size=16)
        monkeypatch.setenv(sharding.ENV_COUNT, "1")
        gdl.train(pop, iris, 1, batch_size=16)
