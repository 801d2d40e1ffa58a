"""Search spaces of hyperparameters and structure, encoded in the unit hypercube.

A genome is a float vector ``u`` in ``[0, 1]^D``, one coordinate per gene.
``Float``/``Int`` genes map ``u`` linearly (or log-linearly) onto their range,
``Choice`` genes split ``[0, 1)`` into equal bins. Every operator (GA, DE,
Latin hypercube, grid) therefore works on plain vectors, and a gaussian step
in ``u`` is a step in the gene's own scale (log scale for log genes).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import check as _check
from ..errors import fail as _fail


@dataclasses.dataclass(frozen=True)
class Float:
    """A real gene in ``[lo, hi]``, log-uniform when ``log``; on the grid
    ``lo, lo + step, ...`` (at most ``hi``) when ``step`` is set."""
    lo: float
    hi: float
    log: bool = False
    step: Optional[float] = None

    def __post_init__(self) -> None:
        _check(math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi,
               f"Float needs finite lo < hi, got lo={self.lo}, hi={self.hi}")
        _check(not self.log or self.lo > 0,
               f"a log-scale gene needs lo > 0, got lo={self.lo}: use log=False or a positive lo")
        _check(self.step is None or (self.step > 0 and not self.log),
               f"a Float step must be positive and needs log=False, got step={self.step}")

    def _values(self, step: float) -> int:
        """Grid values ``lo, lo + step, ...`` up to ``hi``."""
        return int(math.floor((self.hi - self.lo) / step + 1e-9)) + 1

    def decode(self, u: float) -> float:
        """Value of unit coordinate ``u`` (with ``step``: equal bins, one per grid value)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.step is not None:
            n = self._values(self.step)
            return float(self.lo + min(n - 1, math.floor(u * n)) * self.step)
        if self.log:
            return float(math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo))))
        return float(self.lo + u * (self.hi - self.lo))

    def encode(self, value: float) -> float:
        """Unit coordinate of ``value`` (inverse of :meth:`decode`; a bin centre with step)."""
        if self.step is not None:
            return (round((value - self.lo) / self.step) + 0.5) / self._values(self.step)
        if self.log:
            return (math.log(value) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        return (value - self.lo) / (self.hi - self.lo)

    def grid(self, n: int) -> List[float]:
        """``n`` evenly spaced unit coordinates."""
        return list(np.linspace(0.0, 1.0, n)) if n > 1 else [0.5]


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer gene in ``[lo, hi]`` (inclusive), log-spaced when ``log``; with
    ``step`` only ``lo, lo + step, ...`` (at most ``hi``)."""
    lo: int
    hi: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        _check(int(self.lo) == self.lo and int(self.hi) == self.hi and int(self.lo) < int(self.hi),
               f"Int needs integers lo < hi, got lo={self.lo}, hi={self.hi}")
        _check(not self.log or self.lo > 0,
               f"a log-scale gene needs lo > 0, got lo={self.lo}: use log=False or a positive lo")
        _check(1 <= self.step == int(self.step) and (self.step == 1 or not self.log),
               f"an Int step must be a positive integer and needs log=False, got {self.step}")

    def decode(self, u: float) -> int:
        """Value of unit coordinate ``u``: bins of equal width (in log space for log)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            lo, hi = math.log(self.lo), math.log(self.hi + 1)
            return int(min(self.hi, math.floor(math.exp(lo + u * (hi - lo)))))
        n = (self.hi - self.lo) // self.step + 1
        return int(self.lo + min(n - 1, math.floor(u * n)) * self.step)

    def encode(self, value: int) -> float:
        """The centre of ``value``'s bin."""
        if self.log:
            lo, hi = math.log(self.lo), math.log(self.hi + 1)
            return ((math.log(value) + math.log(value + 1)) / 2 - lo) / (hi - lo)
        return ((value - self.lo) // self.step + 0.5) / ((self.hi - self.lo) // self.step + 1)

    def grid(self, n: int) -> List[float]:
        """At most ``n`` distinct values' unit coordinates."""
        values = sorted({self.decode(u) for u in np.linspace(0.0, 1.0, n)})
        return [self.encode(v) for v in values]


@dataclasses.dataclass(frozen=True)
class Choice:
    """A categorical gene."""
    options: Tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        _check(len(self.options) > 0, "Choice needs at least one option")

    def decode(self, u: float) -> Any:
        """Option of unit coordinate ``u`` (equal bins)."""
        n = len(self.options)
        return self.options[min(n - 1, int(math.floor(min(max(float(u), 0.0), 1.0) * n)))]

    def encode(self, value: Any) -> float:
        """The centre of ``value``'s bin."""
        _check(value in self.options, f"{value!r} is not one of {self.options}")
        return (self.options.index(value) + 0.5) / len(self.options)

    def grid(self, n: int) -> List[float]:  # pylint: disable=unused-argument
        """Every option (a grid never skips a category)."""
        return [self.encode(v) for v in self.options]


Gene = Union[Float, Int, Choice]
# A config's identity: its ``(name, repr(value))`` pairs, names sorted.
ConfigKey = Tuple[Tuple[str, str], ...]


def config_key(config: Mapping[str, Any]) -> ConfigKey:
    """Hashable identity of a config (its values by ``repr``, names sorted)."""
    return tuple(sorted((k, repr(v)) for k, v in config.items()))


@dataclasses.dataclass(frozen=True)
class Space:
    """An ordered set of named genes with optional activity conditions.

    Attributes:
      genes: ``((name, gene), ...)`` in genome order.
      conditions: ``((name, predicate), ...)``: gene ``name`` is active only
        when ``predicate(config)`` holds for the decoded config (e.g. a layer's
        width only up to the layer count). Inactive genes are left out of the
        decoded config and are ignored by the cache.
    """
    genes: Tuple[Tuple[str, Gene], ...]
    conditions: Tuple[Tuple[str, Callable[[Dict[str, Any]], bool]], ...] = ()

    def __post_init__(self) -> None:
        names = [n for n, _ in self.genes]
        _check(len(names) > 0, "a search space needs at least one gene")
        _check(len(set(names)) == len(names), f"gene names must be unique, got {names}")
        unknown = {n for n, _ in self.conditions} - set(names)
        _check(not unknown, f"conditions name unknown genes {sorted(unknown)}")

    @property
    def names(self) -> Tuple[str, ...]:
        """Gene names in genome order."""
        return tuple(n for n, _ in self.genes)

    @property
    def dim(self) -> int:
        """Genome length D."""
        return len(self.genes)

    def decode(self, u: Sequence[float]) -> Dict[str, Any]:
        """The config of unit genome ``u`` (inactive genes dropped)."""
        genome = np.asarray(u, np.float64)
        _check(genome.shape == (self.dim,), f"a genome of this space has {self.dim} genes, "
               f"got shape {genome.shape}")
        full = {n: g.decode(x) for (n, g), x in zip(self.genes, genome)}
        inactive = {name for name, active in self.conditions if not active(full)}
        return {k: v for k, v in full.items() if k not in inactive}

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """A unit genome of ``config`` (missing genes at 0.5)."""
        return np.array([g.encode(config[n]) if n in config else 0.5 for n, g in self.genes])

    def key(self, u: Sequence[float]) -> ConfigKey:
        """Hashable identity of the decoded config (the evaluation cache's key)."""
        return config_key(self.decode(u))

    def coordinates(self, genomes: Any) -> np.ndarray:
        """``(n, D)`` coordinates of the decoded configs of ``(n, D)`` unit genomes, for
        :meth:`separation`: a continuous gene's unit coordinate, a discrete gene's
        (``Int``, ``Choice``, ``Float`` with step) bin centre, NaN where a gene is inactive."""
        rows = np.reshape(np.asarray(genomes, np.float64), (-1, self.dim))
        out = np.full(rows.shape, np.nan)
        for r, u in enumerate(rows):
            config = self.decode(u.tolist())
            for j, (name, gene) in enumerate(self.genes):
                if name in config:
                    out[r, j] = gene.encode(config[name]) if self.discrete[j] else min(
                        max(float(u[j]), 0.0), 1.0)
        return out

    @property
    def discrete(self) -> np.ndarray:
        """``(D,)`` whether each gene takes a finite set of values."""
        return np.array([not isinstance(g, Float) or g.step is not None for _, g in self.genes])

    def separation(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``(m, n)`` distances between configs given by their :meth:`coordinates`: the
        largest per-gene difference, a continuous gene's in unit coordinates (its range,
        log scale for a log gene), and 1 for a discrete gene whose value differs or a
        gene active in one config only (L-infinity; 0 for the same config)."""
        x, y = np.asarray(a)[:, None, :], np.asarray(b)[None, :, :]
        gap = np.abs(x - y)
        gap = np.where(self.discrete & (gap > 0), 1.0, gap)
        gap = np.where(np.isnan(x) != np.isnan(y), 1.0, np.nan_to_num(gap))
        return np.max(gap, axis=-1, initial=0.0)

    def index(self, name: str) -> int:
        """Position of gene ``name`` in the genome."""
        return self.names.index(name)

    def gene(self, name: str) -> Gene:
        """Gene ``name``."""
        return dict(self.genes)[name]

    def restrict(self, values: Mapping[str, Sequence[Any]]) -> "Space":
        """The same space with some genes narrowed, e.g. to search fewer shapes.

        A ``Choice`` gene keeps the listed options (numbers may be new values: any
        width, batch size or epoch count). An ``Int``/``Float`` gene takes two values
        as its new ``[lo, hi]`` (its log scale kept), or one value to fix it. A name
        that is not a gene but prefixes genes ``name_0, name_1, ...`` (``width``)
        narrows all of them. Values may be strings, as from a command line.

        Args:
          values: ``{gene name: values}``.

        Returns:
          A new :class:`Space` with the same gene order and conditions.

        Raises:
          ValueError: an unknown gene, or values that do not fit the gene.
        """
        genes = dict(self.genes)
        for name, vals in values.items():
            targets = [name] if name in genes else [n for n in self.names
                                                    if n.rsplit("_", 1)[0] == name
                                                    and n.rsplit("_", 1)[-1].isdigit()]
            _check(bool(targets), f"unknown gene {name!r}: the space's genes are "
                   f"{', '.join(self.names)}")
            vals = list(vals) if isinstance(vals, (list, tuple)) else [vals]
            _check(len(vals) > 0, f"gene {name!r} needs at least one value")
            for target in targets:
                genes[target] = _narrowed(name, genes[target], vals)
        return Space(tuple((n, genes[n]) for n in self.names), self.conditions)


def _as_number(name: str, value: Any, kind: Callable[[float], float]) -> float:
    """``value`` as ``kind`` (``int`` or ``float``); a ValueError naming the gene if it
    is not one."""
    number: Optional[float]
    try:
        number = kind(float(value)) if kind is int else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or (kind is int and float(value) != number):
        _fail(f"gene {name!r}: {value!r} is not {'an integer' if kind is int else 'a number'}")
    return number


def _narrowed(name: str, gene: Gene, vals: Sequence[Any]) -> Gene:
    """``gene`` narrowed to ``vals`` (see :meth:`Space.restrict`)."""
    if isinstance(gene, Choice):
        kinds = {type(o) for o in gene.options}
        if kinds <= {int}:
            options = [_as_number(name, v, int) for v in vals]
            _check(all(o > 0 for o in options), f"gene {name!r} needs positive values, "
                   f"got {list(vals)}")
        elif kinds <= {int, float}:
            options = [_as_number(name, v, float) for v in vals]
        else:
            by_text = {str(o): o for o in gene.options}
            unknown = [v for v in vals if str(v) not in by_text]
            _check(not unknown, f"gene {name!r}: {unknown} not among "
                   f"{', '.join(map(str, gene.options))}")
            options = [by_text[str(v)] for v in vals]
        return Choice(tuple(dict.fromkeys(options)))
    kind = int if isinstance(gene, Int) else float
    numbers = [_as_number(name, v, kind) for v in vals]
    _check(len(numbers) <= 2, f"gene {name!r} takes one value or two bounds, got {list(vals)}")
    lo, hi = min(numbers), max(numbers)
    _check(not gene.log or lo > 0, f"gene {name!r} is log-scale: it needs positive values")
    if lo == hi:
        return Choice((lo,))
    if isinstance(gene, Int):  # its bounds were read as integers: int() only tells mypy
        return dataclasses.replace(gene, lo=int(lo), hi=int(hi))
    return dataclasses.replace(gene, lo=lo, hi=hi)


def space(genes: Mapping[str, Gene],
          conditions: Optional[Mapping[str, Callable[[Dict[str, Any]], bool]]] = None) -> Space:
    """Builds a :class:`Space` from ``{name: gene}`` in a few lines.

    Example::

        s = space({"lr": Float(1e-4, 1e-1, log=True), "layers": Int(1, 3),
                   "act": Choice(["relu", "tanh"])})
    """
    return Space(tuple(genes.items()), tuple((conditions or {}).items()))


MAX_LAYERS = 4


def _layer_active(i: int) -> Callable[[Dict[str, Any]], bool]:
    def active(config: Dict[str, Any]) -> bool:
        return config["family"] in ("mlp", "cnn", "caption") and config["layers"] > i
    return active


def _not_rnn(config: Dict[str, Any]) -> bool:
    return config["family"] != "rnn"


def _family(*names: str) -> Callable[[Dict[str, Any]], bool]:
    def active(config: Dict[str, Any]) -> bool:
        return config["family"] in names
    return active


# the model families default_space searches; caption: a dataset's caption slots (--families)
SEARCH_FAMILIES = ("mlp", "cnn", "rnn", "caption")
DEFAULT_FAMILIES = ("mlp", "cnn", "rnn")


def default_space(families: Sequence[str] = DEFAULT_FAMILIES,
                  epochs: Sequence[int] = (5, 10, 20, 40),
                  narrow: Optional[Mapping[str, Sequence[Any]]] = None) -> Space:
    """The space the seed documents name: training hyperparameters and structure.

    Genes: learning_rate, batch_size, epochs, dropout, weight_decay, optimizer,
    family, layers, width_0..3 (MLP widths / CNN filters, active up to the layer
    count), activation, kernel_size (CNN), rnn_cell, rnn_hidden, rnn_layers (RNN).
    The caption family (videos with caption slots) reads layers, width_i (its
    frames CNN), activation, kernel_size, rnn_cell and rnn_hidden.

    Args:
      families: model families the ``family`` gene chooses from.
      epochs: choices of the ``epochs`` gene.
      narrow: genes to narrow (:meth:`Space.restrict`), e.g.
        ``{"optimizer": ["adam"], "width": [16, 32], "layers": [1, 2]}``: fewer
        distinct shapes compile fewer training programs.
    """
    genes: Dict[str, Gene] = {
        "learning_rate": Float(1e-4, 3e-2, log=True),
        "batch_size": Choice((32, 64, 128)),
        # Few distinct epoch counts and widths: each distinct shape compiles once (jit cache).
        "epochs": Choice(tuple(int(e) for e in epochs)),
        "dropout": Float(0.0, 0.5),
        "weight_decay": Float(1e-6, 1e-2, log=True),
        "optimizer": Choice(("adam", "adamw", "sgd", "rmsprop")),
        "family": Choice(tuple(families)),
        "layers": Int(1, MAX_LAYERS),
    }
    for i in range(MAX_LAYERS):
        genes[f"width_{i}"] = Choice((16, 32, 64, 128, 256))
    genes.update({"activation": Choice(("relu", "gelu", "tanh", "swish")),
                  "kernel_size": Choice((3, 5, 7)),
                  "rnn_cell": Choice(("gru", "lstm", "simple")),
                  "rnn_hidden": Choice((16, 32, 64, 128)),
                  "rnn_layers": Int(1, 2)})
    conditions = {f"width_{i}": _layer_active(i) for i in range(MAX_LAYERS)}
    conditions.update({"layers": _not_rnn, "activation": _not_rnn})
    conditions.update({"kernel_size": _family("cnn", "caption"),
                       "rnn_cell": _family("rnn", "caption"),
                       "rnn_hidden": _family("rnn", "caption"), "rnn_layers": _family("rnn")})
    result = space(genes, conditions).restrict(narrow or {})
    layers = result.gene("layers")
    most = max(layers.options) if isinstance(layers, Choice) else layers.hi
    _check(most <= MAX_LAYERS, f"gene 'layers' goes up to {MAX_LAYERS} in this space, got {most}")
    return result
