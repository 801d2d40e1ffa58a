"""Which axes of a model's variables are the same hidden unit: the permutation spec.

A network computes the same function after its hidden units are reordered,
as long as every weight, bias and normalisation statistic of a unit moves
with it. Ainsworth et al. (2022), "Git Re-Basin: Merging Models modulo
Permutation Symmetries", describe this with a permutation spec: for each
variable, the permutation group of each of its axes (or ``None``). The spec
is a property of the model (:attr:`genetic_dl.Learner.permutation_spec`);
the operations on it live in :mod:`genetic_dl.operators.permutation`.

Paths are ``"/"``-joined keys of the variables dict, collections included::

    {"params/Conv_0/kernel": (None, None, None, "P0"),
     "params/Conv_0/bias": ("P0",),
     "params/BatchNorm_0/scale": ("P0",), "params/BatchNorm_0/bias": ("P0",),
     "batch_stats/BatchNorm_0/mean": ("P0",), "batch_stats/BatchNorm_0/var": ("P0",),
     "params/Dense_0/kernel": ("P0", None)}

An axis may hold a whole number of copies of a group, unit fastest: the rows
of a dense layer reading a flattened ``(H, W, C)`` conv output are
``s * C + c``, so ``"P0"`` on that axis permutes the channels of every pixel.
Variables the spec does not name are never permuted.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import jax
import numpy as np

from ..errors import check, fail

Axes = Tuple[Optional[str], ...]


def _natural(name: str) -> Tuple[str, int, str]:
    """Sort key putting ``P2`` before ``P10``."""
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    return head, int(tail) if tail else -1, name


@dataclasses.dataclass(frozen=True)
class PermutationSpec:
    """The permutation group of each axis of each named variable (hashable).

    Attributes:
      axes: ``((path, (group or None, ...)), ...)``, one entry per variable.
    """
    axes: Tuple[Tuple[str, Axes], ...]

    @classmethod
    def of(cls, spec: Union["PermutationSpec", Mapping[Any, Any]]) -> "PermutationSpec":
        """A spec from a mapping ``{path: (group or None, ...)}``; a path is a
        ``"/"``-joined string or a tuple of keys."""
        if isinstance(spec, PermutationSpec):
            return spec
        check(isinstance(spec, Mapping),
              f"permutation_spec must map variable paths to one group name (or None) per "
              f"axis, got {type(spec).__name__}")
        out = []
        for path, axes in spec.items():
            key = "/".join(map(str, path)) if isinstance(path, tuple) else str(path)
            axes = (axes,) if isinstance(axes, str) or axes is None else tuple(axes)
            check(all(a is None or isinstance(a, str) for a in axes),
                  f"permutation_spec[{key!r}] must be group names or None per axis, "
                  f"got {axes!r}")
            out.append((key, axes))
        return cls(tuple(sorted(out)))

    def as_dict(self) -> Dict[str, Axes]:
        """``{path: axes}``."""
        return dict(self.axes)

    @property
    def groups(self) -> Tuple[str, ...]:
        """The permutation groups, sorted by name (natural order: P2 before P10)."""
        names = {a for _, axes in self.axes for a in axes if a is not None}
        return tuple(sorted(names, key=_natural))

    def occurrences(self, group: str) -> List[Tuple[str, int]]:
        """``(path, axis)`` of every axis permuted by ``group``."""
        return [(path, i) for path, axes in self.axes for i, a in enumerate(axes) if a == group]


def _key_name(key: Any) -> str:
    return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def path_name(path: Tuple[Any, ...]) -> str:
    """The ``"/"``-joined name of a pytree key path, as the spec names variables."""
    return "/".join(_key_name(k) for k in path)


def flatten(variables: Any) -> Dict[str, Any]:
    """``{path: leaf}`` of a variables pytree (paths ``"/"``-joined)."""
    return {path_name(path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}


def group_sizes(spec: PermutationSpec, variables: Any) -> Dict[str, int]:
    """Each group's number of units, checked against the variables' shapes.

    Args:
      spec: the permutation spec.
      variables: one member's variables (or any pytree with the spec's paths).

    Returns:
      ``{group: units}``.

    Raises:
      ValueError: a path the variables lack, an axes tuple of the wrong
        length, or an axis that is not a whole number of copies of its group.
    """
    leaves = flatten(variables)
    sizes: Dict[str, int] = {}
    for path, axes in spec.axes:
        if path not in leaves:
            fail(f"permutation_spec names {path!r}, which the model does not have: its "
                 f"variables are {', '.join(sorted(leaves))}")
        shape = np.shape(leaves[path])
        check(len(axes) == len(shape),
              f"permutation_spec[{path!r}] gives {len(axes)} axes for a variable of shape "
              f"{shape}: give one group name or None per axis")
        for a, n in zip(axes, shape):
            if a is not None:
                sizes[a] = min(sizes.get(a, n), n)
    for path, axes in spec.axes:
        for a, n in zip(axes, np.shape(leaves[path])):
            if a is not None and n % sizes[a]:
                fail(f"permutation_spec[{path!r}]: an axis of size {n} cannot hold group {a!r} "
                     f"of {sizes[a]} units (nor a whole number of copies of it): fix the group "
                     f"names of that variable")
    return sizes
