"""Early-stopping callbacks for ``evolve_weights`` and ``run_search``.

Each is called after a generation (round) with that loop's arguments, the last
of which is the generation's record (``best``: its best fitness, ``elapsed``:
seconds since the start), and returns ``True`` to stop. They are small
immutable-config objects whose only state is the run they watch; make a new
one per run. Example::

    res = gdl.evolve_weights(key, pop, data, generations=50, epochs=2,
                             callbacks=[gdl.stopping.Saturation(patience=5),
                                        gdl.stopping.TimeLimit(600)])
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Dict, Optional


def _best(record: Dict[str, Any]) -> float:
    value = record.get("best")
    return float(value) if value is not None and math.isfinite(value) else -math.inf


@dataclasses.dataclass
class Saturation:
    """Stops when the best fitness has not improved by ``min_delta`` for ``patience``
    generations (the GA has converged)."""
    patience: int = 5
    min_delta: float = 0.0
    _best: float = -math.inf
    _stalled: int = 0

    def __call__(self, *args: Any) -> bool:
        best = _best(args[-1])
        if best > self._best + self.min_delta:
            self._best, self._stalled = best, 0
        else:
            self._stalled += 1
        return self._stalled >= self.patience


@dataclasses.dataclass
class Target:
    """Stops as soon as a generation's best fitness reaches ``value``."""
    value: float

    def __call__(self, *args: Any) -> bool:
        return _best(args[-1]) >= self.value


@dataclasses.dataclass
class TimeLimit:
    """Stops after the first generation that ends ``seconds`` after the run started
    (or after this object was first called, when records carry no ``elapsed``)."""
    seconds: float
    _start: Optional[float] = None

    def __call__(self, *args: Any) -> bool:
        elapsed = args[-1].get("elapsed")
        if elapsed is None:
            self._start = self._start if self._start is not None else time.perf_counter()
            elapsed = time.perf_counter() - self._start
        return elapsed >= self.seconds
