"""Run records (history, evaluations, hall of fame, lineage) as tables."""
from __future__ import annotations

from typing import Any, Iterable, Mapping


def to_pandas(rows: Iterable[Mapping[str, Any]]):
    """A list of dicts as a ``pandas.DataFrame`` (pandas is optional).

    Raises:
      ImportError: without pandas, saying how to install it.
    """
    try:
        import pandas  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ImportError("to_pandas() needs pandas: pip install pandas") from err
    return pandas.DataFrame(list(rows))
