"""User errors: one clear ``ValueError`` line saying what is wrong and how to fix it."""
from __future__ import annotations

from typing import Iterable, NoReturn


def fail(msg: str) -> NoReturn:
    """Raises ``ValueError(msg)``."""
    raise ValueError(msg)


def check(cond: bool, msg: str) -> None:
    """Raises ``ValueError(msg)`` unless ``cond``."""
    if not cond:
        fail(msg)


def unknown(what: str, name: object, choices: Iterable[object], hint: str = "") -> NoReturn:
    """Raises the one error for a name that is not among the known ones.

    Args:
      what: what the name names (``"crossover"``, ``"dataset"``...).
      name: the name given.
      choices: the known names.
      hint: an optional second clause (``"or give a path to an .npz file"``).
    """
    fail(f"unknown {what} {name!r}: choose one of {', '.join(map(str, choices))}"
         + (f" {hint}" if hint else ""))


def check_choice(what: str, name: object, choices: Iterable[object], hint: str = "") -> None:
    """:func:`unknown` unless ``name`` is one of ``choices``."""
    choices = tuple(choices)
    if name not in choices:
        unknown(what, name, choices, hint)
