"""A watchdog that ends a run whose process has stopped using CPU time.

A computation wedged inside XLA never returns to Python, so no timeout in the
main thread can fire. The watchdog is a daemon thread that reads the process's
CPU time (``os.times``, all threads) while armed; when it has not advanced for
``seconds`` of wall time it writes every thread's Python stack to a file, prints
one ``error:`` line and ends the process with status 3 (``os._exit``: the main
thread cannot be unwound). A long but busy computation keeps the CPU time
moving and never trips it; a neighbour that takes the cores slows the run but
does not stop its CPU time.
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import threading
import time
from typing import Callable, Iterator, Optional

EXIT_STALLED = 3
# CPU seconds that count as progress: a wedged process's threads all sleep, and
# this thread's own polling costs microseconds.
MIN_PROGRESS = 0.05


def cpu_seconds() -> float:
    """User + system CPU time of this process (every thread) in seconds."""
    t = os.times()
    return t.user + t.system


def _dump_stacks(path: Optional[str]) -> str:
    """Writes every thread's Python stack to ``path`` (stderr when ``None``)."""
    if path is None:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        return "stderr"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"no CPU progress; Python stacks of all threads at {time.ctime()}:\n")
        f.flush()
        faulthandler.dump_traceback(file=f, all_threads=True)
    return path


def _exit_stalled(seconds: float, dump: Optional[str], hint: str) -> None:
    where = _dump_stacks(dump)
    print(f"error: no progress for {seconds:g} s (the process used no CPU time): a computation "
          f"is stuck; Python stacks in {where}; {hint}", file=sys.stderr, flush=True)
    os._exit(EXIT_STALLED)  # pylint: disable=protected-access


@contextlib.contextmanager
def watch(seconds: float, dump: Optional[str] = None, hint: str = "",
          on_stall: Optional[Callable[[float, Optional[str], str], None]] = None,
          clock: Callable[[], float] = cpu_seconds) -> Iterator[None]:
    """Arms the watchdog for the body of the ``with`` block.

    Args:
      seconds: wall seconds of flat CPU time that count as a stall; 0 or less
        disables the watchdog.
      dump: file for the stacks of all threads (stderr when ``None``).
      hint: what the user can do, appended to the error line.
      on_stall: called as ``on_stall(seconds, dump, hint)`` on a stall;
        default: dump the stacks, print the error line, exit with status 3.
      clock: the CPU clock (a parameter so that tests can freeze it).
    """
    if seconds <= 0:
        yield
        return
    stop = threading.Event()
    poll = min(1.0, seconds / 10)

    def loop():
        mark_cpu, mark_wall = clock(), time.monotonic()
        while not stop.wait(poll):
            cpu, now = clock(), time.monotonic()
            if cpu - mark_cpu >= MIN_PROGRESS:
                mark_cpu, mark_wall = cpu, now
            elif now - mark_wall >= seconds:
                (on_stall or _exit_stalled)(seconds, dump, hint)
                return
    thread = threading.Thread(target=loop, name="genetic_dl-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
