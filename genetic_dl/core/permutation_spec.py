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
An axis may also be cut into segments, each a group or a count of entries
that stay in place: the rows of a layer reading ``concatenate([a, b, x])``
are ``("P1", "P2", 3)`` (``a``'s units, ``b``'s, then three input features).
Variables the spec does not name are never permuted.
"""
from __future__ import annotations

import dataclasses
import textwrap
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import jax
import numpy as np

from ..errors import check, fail

Segment = Union[str, int]
Entry = Union[None, str, Tuple[Segment, ...]]
Axes = Tuple[Entry, ...]


def _natural(name: str) -> Tuple[str, int, str]:
    """Sort key putting ``P2`` before ``P10``."""
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    return head, int(tail) if tail else -1, name


@dataclasses.dataclass(frozen=True)
class PermutationSpec:
    """The permutation group of each axis of each named variable (hashable).

    Attributes:
      axes: ``((path, (entry, ...)), ...)``, one entry per axis of each
        variable: ``None``, a group name, or a tuple of segments.
      notes: ``((path[axis], why), ...)``: variable axes a derivation left in
        place, and why (not part of equality).
    """
    axes: Tuple[Tuple[str, Axes], ...]
    notes: Tuple[Tuple[str, str], ...] = dataclasses.field(default=(), compare=False)

    @classmethod
    def of(cls, spec: Union["PermutationSpec", Mapping[Any, Any]],
           notes: Optional[Mapping[str, str]] = None) -> "PermutationSpec":
        """A spec from a mapping ``{path: (entry, ...)}``; a path is a
        ``"/"``-joined string or a tuple of keys, an entry ``None``, a group
        name or a tuple of segments (group names and counts of fixed entries)."""
        if isinstance(spec, PermutationSpec):
            return spec
        check(isinstance(spec, Mapping),
              f"permutation_spec must map variable paths to one group name (or None) per "
              f"axis, got {type(spec).__name__}")
        out = []
        for path, axes in spec.items():
            key = "/".join(map(str, path)) if isinstance(path, tuple) else str(path)
            axes = (axes,) if isinstance(axes, str) or axes is None else tuple(axes)
            check(all(_valid_entry(a) for a in axes),
                  f"permutation_spec[{key!r}] must give per axis None, a group name or a "
                  f"tuple of segments (group names and counts of fixed entries), got {axes!r}")
            out.append((key, tuple(tuple(a) if isinstance(a, list) else a for a in axes)))
        return cls(tuple(sorted(out)), tuple(sorted(dict(notes or {}).items())))

    def as_dict(self) -> Dict[str, Axes]:
        """``{path: axes}``."""
        return dict(self.axes)

    @property
    def groups(self) -> Tuple[str, ...]:
        """The permutation groups, sorted by name (natural order: P2 before P10)."""
        names = {g for _, axes in self.axes for a in axes for g in segments_of(a)
                 if isinstance(g, str)}
        return tuple(sorted(names, key=_natural))

    def occurrences(self, group: str) -> List[Tuple[str, int]]:
        """``(path, axis)`` of every axis ``group`` permutes (whole or a segment)."""
        return [(path, i) for path, axes in self.axes for i, a in enumerate(axes)
                if group in segments_of(a)]

    def describe(self, variables: Any = None) -> str:
        """The spec as Python source to edit and pass as ``permutation_spec=``.

        Args:
          variables: one member's variables, to state each group's unit count.

        Returns:
          A dict literal, one line per variable, its groups and notes as comments.
        """
        sizes = group_sizes(self, variables) if variables is not None else {}
        lines = ["{"]
        for g in self.groups:
            units = f": {sizes[g]} units" if g in sizes else ""
            ties = ", ".join(f"{p}[{i}]" for p, i in self.occurrences(g))
            lines += textwrap.wrap(f"{g}{units}, tying {ties}", 96, initial_indent="    # ",
                                   subsequent_indent="    #   ", break_on_hyphens=False)
        for where, why in self.notes:
            lines.append(f"    # not permuted: {where}: {why}")
        lines += [f"    {path!r}: {axes!r}," for path, axes in self.axes]
        return "\n".join(lines + ["}"])


def _valid_entry(entry: Any) -> bool:
    if entry is None or isinstance(entry, str):
        return True
    return (isinstance(entry, (tuple, list)) and len(entry) > 0
            and all(isinstance(s, str) or (isinstance(s, int) and s > 0) for s in entry))


def segments_of(entry: Entry) -> Tuple[Segment, ...]:
    """An axis entry's segments: ``()`` for ``None``, ``(group,)`` for a group."""
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def segment_offsets(entry: Entry, sizes: Mapping[str, int]) -> List[Tuple[Segment, int, int]]:
    """``(segment, start, stop)`` of each segment of a segmented axis entry."""
    out, offset = [], 0
    for seg in segments_of(entry):
        n = sizes[seg] if isinstance(seg, str) else seg
        out.append((seg, offset, offset + n))
        offset += n
    return out


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
            if isinstance(a, str):
                sizes[a] = min(sizes.get(a, n), n)
    for path, axes in spec.axes:
        for a, n in zip(axes, np.shape(leaves[path])):
            if isinstance(a, tuple):
                _segment_sizes(path, a, n, sizes)
            elif a is not None and n % sizes[a]:
                fail(f"permutation_spec[{path!r}]: an axis of size {n} cannot hold group {a!r} "
                     f"of {sizes[a]} units (nor a whole number of copies of it): fix the group "
                     f"names of that variable")
    return sizes


def _segment_sizes(path: str, entry: Tuple[Segment, ...], n: int, sizes: Dict[str, int]) -> None:
    """Checks a segmented axis of ``n`` entries; a group seen only here takes the rest."""
    unknown = {s for s in entry if isinstance(s, str) and s not in sizes}
    known = sum(sizes[s] if isinstance(s, str) else s for s in entry if s not in unknown)
    if len(unknown) == 1:
        (g,) = unknown
        count = sum(s == g for s in entry)
        if (n - known) > 0 and (n - known) % count == 0:
            sizes[g] = (n - known) // count
            known = n
    if len(unknown) > 1 or known != n:
        groups = {g: sizes.get(g) for g in entry if isinstance(g, str)}
        fail(f"permutation_spec[{path!r}]: segments {entry!r} do not add up to the axis' "
             f"{n} entries (group sizes {groups}): fix the segments of that variable")
