"""A persistent XLA compilation cache, so that a repeated or resumed run does not recompile.

A search compiles one training program per distinct shape (seconds each); the
second run of the same search, or a resumed one, reads them from disk instead.
The CLI turns the cache on; library users call :func:`enable_compile_cache`.
Compiled programs are deterministic, so results do not depend on the cache.
Each JAX version and device configuration (CPU device count, ``XLA_FLAGS``) gets
a folder of its own: a process never loads an executable built for another
configuration, which XLA cannot always detect and may crash on.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional

import jax

ENV = "GENETIC_DL_CACHE"


def default_dir() -> Optional[str]:
    """``$GENETIC_DL_CACHE``, ``None`` when it is ``off``, else ``~/.cache/genetic_dl/xla``."""
    value = os.environ.get(ENV, "")
    if value.lower() in ("off", "0", "no", "false"):
        return None
    return value or os.path.join(os.path.expanduser("~"), ".cache", "genetic_dl", "xla")


def enable_compile_cache(path: Optional[str] = None, min_compile_seconds: float = 0.2) -> \
        Optional[str]:
    """Turns on JAX's persistent compilation cache.

    Args:
      path: cache folder; :func:`default_dir` when ``None``.
      min_compile_seconds: programs that compile faster are not stored.

    Returns:
      The folder used, or ``None`` when the cache is switched off.
    """
    path = path or default_dir()
    if path is None:
        return None
    path = os.path.join(path, configuration())
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache rather than fail
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return path


def configuration() -> str:
    """The folder name of this process's compile configuration: the JAX version, the
    requested CPU device count and a digest of ``XLA_FLAGS``."""
    flags = hashlib.sha256(os.environ.get("XLA_FLAGS", "").encode()).hexdigest()[:12]
    devices = getattr(jax.config, "jax_num_cpu_devices")  # a flag the stubs lack
    return f"jax{jax.__version__}-cpu{devices}-{flags}"
