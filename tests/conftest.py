"""Shared fixtures: datasets are loaded once per session (they are read-only).

Tests compile with XLA's backend optimisations off (``-O0``): they check what the
code computes, not how fast, and most of their time is compiling small programs
(the suite runs in ~60 % of the time). ``GENETIC_DL_TEST_OPT=full`` runs them
fully optimised, as users, the benchmarks and the CLI run.
"""
import os
import subprocess
import sys

if os.environ.get("GENETIC_DL_TEST_OPT", "") != "full":  # before JAX starts its backend
    TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
    if "optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()
else:
    TEST_XLA_FLAGS = ""

import pytest  # noqa: E402  pylint: disable=wrong-import-position

import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def digits():
    return gdl.load_dataset("digits")


@pytest.fixture(scope="session")
def iris():
    return gdl.load_dataset("iris")


@pytest.fixture(scope="session")
def binary():
    return gdl.load_dataset("binary")


@pytest.fixture(scope="session")
def friedman():
    return gdl.load_dataset("friedman")


def run_python(code: str, devices: int, timeout: int = 600, args=(), optimized=False) -> str:
    """Runs ``code`` in a fresh interpreter with ``devices`` forced host devices
    (compiled as the suite compiles, or fully ``optimized``)."""
    opt = "" if optimized else TEST_XLA_FLAGS
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
               f"{opt}".strip(),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
