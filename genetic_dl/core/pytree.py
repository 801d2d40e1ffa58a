"""Type aliases of pytrees, whose structure has no static type in JAX."""
from __future__ import annotations

from typing import Any

# Nested dicts, lists and tuples of arrays.
PyTree = Any
# Flax variables of one member, ``{"params": ...}``, or of a population (leading axis P).
Params = Any
