"""Shared fixtures: datasets are loaded once per session (they are read-only)."""
import os
import subprocess
import sys

import pytest

import genetic_dl as gdl

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


def run_python(code: str, devices: int, timeout: int = 600, args=()) -> str:
    """Runs ``code`` in a fresh interpreter with ``devices`` forced host devices."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
