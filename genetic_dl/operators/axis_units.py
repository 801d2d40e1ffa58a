"""Union-find over array axes: which axes carry the same hidden unit.

Each axis of each array in a traced computation is a node; joining two nodes
says their entries are the same units in the same order. An axis may be cut
into segments (a concatenation or a slice along it), each a node of its own,
and a component may be fixed: its units may not be permuted, for a reason
kept to tell the user. :mod:`genetic_dl.operators.spec_derivation` builds a
permutation spec from the components.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


class AxisUnits:
    """Union-find over array axes, with segments (a unit axis cut into parts) and
    fixed components (units that may not move)."""

    def __init__(self) -> None:
        self.parent: List[int] = []
        self.size: List[int] = []
        self.fixed: Dict[int, str] = {}
        self.parts: Dict[int, List[int]] = {}

    def new(self, size: int, reason: Optional[str] = None) -> int:
        """A fresh axis node of ``size`` entries (fixed when ``reason``)."""
        node = len(self.parent)
        self.parent.append(node)
        self.size.append(int(size))
        if reason:
            self.fixed[node] = reason
        return node

    def find(self, node: int) -> int:
        """The component's root."""
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def fix(self, node: int, reason: str) -> None:
        """Marks ``node``'s units as not permutable."""
        self.fixed.setdefault(self.find(node), reason)

    def union(self, a: int, b: int) -> None:
        """Joins two axes: they carry the same unit index."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb or 1 in (self.size[a], self.size[b]) and self.size[a] != self.size[b]:
            return  # a size-1 axis broadcast against units is no unit of its own
        self.parent[rb] = ra
        if rb in self.fixed:
            self.fixed.setdefault(ra, self.fixed.pop(rb))
        pa, pb = self.parts.pop(ra, None), self.parts.pop(rb, None)
        if pa is None or pb is None:
            if pa or pb:
                self.parts[ra] = pa or pb or []
            return
        self.parts[ra] = pa
        if sum(self.size[p] for p in pa) != sum(self.size[p] for p in pb):
            self.fix(ra, "segments of different sizes meet")
            return
        for lo, hi in _intervals(self._cuts(pa) | self._cuts(pb)):
            self.union(self._span(pa, lo, hi), self._span(pb, lo, hi))

    def _cuts(self, parts: Sequence[int]) -> set:
        offsets = np.cumsum([0] + [self.size[p] for p in parts])
        return set(int(o) for o in offsets)

    def piece(self, node: int, lo: int, hi: int) -> int:
        """The node of entries ``[lo, hi)`` of ``node``'s axis (segmenting it)."""
        if lo == 0 and hi == self.size[node]:
            return node
        root = self.find(node)
        if root not in self.parts:
            cuts = sorted({0, lo, hi, self.size[node]})
            self.parts[root] = [self.new(b - a) for a, b in zip(cuts, cuts[1:])]
        parts = self.parts[root]
        if sum(self.size[p] for p in parts) != self.size[node]:
            self.fix(root, "a slice of an axis that holds copies of its units")
            return self.new(hi - lo, "a slice of an axis that holds copies of its units")
        return self._span(parts, lo, hi)

    def _span(self, parts: Sequence[int], lo: int, hi: int) -> int:
        inside, offset = [], 0
        for p in parts:
            a, b = max(lo, offset), min(hi, offset + self.size[p])
            if a < b:
                inside.append((p, a - offset, b - offset))
            offset += self.size[p]
        if len(inside) == 1:
            return self.piece(*inside[0])
        node = self.new(hi - lo)
        self.parts[node] = [self.piece(*x) for x in inside]
        return node

    def fresh(self, shape: Sequence[int], reason: Optional[str] = None) -> Tuple[int, ...]:
        """New nodes for an array of ``shape``."""
        return tuple(self.new(n, reason) for n in shape)

    def joined(self, nodes: Sequence[int]) -> int:
        """A new axis made of ``nodes``' axes one after another (a concatenation)."""
        node = self.new(sum(self.size[n] for n in nodes))
        self.parts[node] = list(nodes)
        return node

    def leaves(self, node: int) -> List[Tuple[int, int]]:
        """``(root, size)`` of each segment of ``node``'s axis, in order."""
        root = self.find(node)
        if root not in self.parts:
            return [(root, self.size[node])]
        return [leaf for p in self.parts[root] for leaf in self.leaves(p)]


def _intervals(cuts: set) -> List[Tuple[int, int]]:
    points = sorted(cuts)
    return list(zip(points, points[1:]))
