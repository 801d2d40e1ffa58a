"""Shared fixtures: datasets are loaded once per session (they are read-only).

Tests compile with XLA's backend optimisations off (``-O0``): they check what the
code computes, not how fast, and most of their time is compiling small programs
(the suite runs in ~60 % of the time). ``GENETIC_DL_TEST_OPT=full`` runs them
fully optimised, as users, the benchmarks and the CLI run.

A test that outlives its time limit (pytest-timeout, ``timeout`` in pyproject.toml)
fails, its worker ended; the stacks of its threads go to stderr just before.
"""
import faulthandler
import os
import subprocess
import sys

if os.environ.get("GENETIC_DL_TEST_OPT", "") != "full":  # before JAX starts its backend
    TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
    if "optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()
else:
    TEST_XLA_FLAGS = ""

# No persistent compilation cache in tests or the CLI processes they start: tests compile
# with their own flags, and a cache shared by many processes is what users run, not this.
os.environ["GENETIC_DL_CACHE"] = "off"

import pytest  # noqa: E402  pylint: disable=wrong-import-position

import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# seconds before its time limit at which a test's stacks are written (the limit's last 2 %)
STACKS_AHEAD = 0.02
_STDERR = pytest.StashKey[int]()


def pytest_configure(config):
    config.stash[_STDERR] = os.dup(2)


def pytest_unconfigure(config):
    faulthandler.cancel_dump_traceback_later()
    os.close(config.stash[_STDERR])


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item, settings):
    """pytest-timeout's thread method (the one that ends a hang inside XLA's C++ code)
    writes the stacks to the terminal, which xdist's workers do not show: faulthandler
    writes every thread's Python stack to stderr just before the limit."""
    if settings.timeout and settings.timeout > 0:
        faulthandler.dump_traceback_later(settings.timeout * (1 - STACKS_AHEAD),
                                          file=item.config.stash[_STDERR])


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item):  # pylint: disable=unused-argument
    faulthandler.cancel_dump_traceback_later()


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
