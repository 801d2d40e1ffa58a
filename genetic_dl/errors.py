"""User errors: one clear ``ValueError`` line saying what is wrong and how to fix it."""
from __future__ import annotations

from typing import NoReturn


def fail(msg: str) -> NoReturn:
    """Raises ``ValueError(msg)``."""
    raise ValueError(msg)


def check(cond: bool, msg: str) -> None:
    """Raises ``ValueError(msg)`` unless ``cond``."""
    if not cond:
        fail(msg)
