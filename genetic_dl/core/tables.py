"""Run records (history, evaluations, hall of fame, lineage) as tables."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

import numpy as np


def first_objective(fitness: Any) -> float:
    """The (first) objective of a fitness as a float; NaN for a failed or missing one."""
    value = fitness[0] if isinstance(fitness, (tuple, list, np.ndarray)) else fitness
    return float(value) if value is not None and np.isfinite(value) else float("nan")


def fitness_summary(values: Iterable[float]) -> Dict[str, float]:
    """``best``, ``mean`` and ``std`` of the finite values (NaN when none) and how many
    ``failed`` (NaN/inf: a failed member or evaluation); an array keeps its dtype."""
    fit = values if isinstance(values, np.ndarray) else np.asarray(list(values), np.float64)
    ok = np.isfinite(fit)
    if not ok.any():
        return {"best": float("nan"), "mean": float("nan"), "std": float("nan"),
                "failed": int(len(fit))}
    return {"best": float(fit[ok].max()), "mean": float(fit[ok].mean()),
            "std": float(fit[ok].std()), "failed": int((~ok).sum())}


def to_pandas(rows: Iterable[Mapping[str, Any]]) -> Any:
    """A list of dicts as a ``pandas.DataFrame`` (pandas is optional).

    Raises:
      ImportError: without pandas, saying how to install it.
    """
    try:
        import pandas  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ImportError("to_pandas() needs pandas: pip install pandas") from err
    return pandas.DataFrame(list(rows))
