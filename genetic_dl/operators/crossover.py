"""Crossover of two members' weight pytrees: ``op(key, a, b, **kw) -> child``.

Each operator acts on one pair of params pytrees (no population axis); the GA
step vmaps it over all pairs. Every child weight comes from parent ``a`` or
``b`` (or their declared blend, for ``arithmetic``). ``per_neuron`` takes the
model's permutation spec (:mod:`genetic_dl.operators.permutation`); aligned crossover
(weight matching, then one of these) is the GA's: it matches units across the
population (:mod:`genetic_dl.operators.matching`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import check_choice, fail
from . import permutation

Params = Any


def coin_mask(key: jax.Array, shape: Tuple[int, ...]) -> jax.Array:
    """Fair coin flips from packed random bits: 32 flips per 32-bit draw."""
    n = int(np.prod(shape))
    words = jax.random.bits(key, (-(-n // 32),), jnp.uint32)
    flips = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return flips.reshape(-1)[:n].reshape(shape).astype(bool)


def uniform(key: jax.Array, a: Params, b: Params, p: float = 0.5) -> Params:
    """Each weight from ``b`` with probability ``p``, else from ``a`` (Syswerda, 1989)."""
    leaves, tree = jax.tree_util.tree_flatten(a)
    keys = jax.random.split(key, len(leaves))

    def mask(k: jax.Array, shape: Tuple[int, ...]) -> jax.Array:
        return coin_mask(k, shape) if p == 0.5 else jax.random.bernoulli(k, p, shape)
    out = [jnp.where(mask(k, x.shape), y, x)
           for k, x, y in zip(keys, leaves, jax.tree_util.tree_leaves(b))]
    return jax.tree_util.tree_unflatten(tree, out)


def _positions(tree: Params) -> Tuple[List[jax.Array], int]:
    """Each weight's index in the flattened genome (leaf order, row-major)."""
    out, offset = [], 0
    for x in jax.tree_util.tree_leaves(tree):
        out.append(offset + jnp.arange(x.size).reshape(x.shape))
        offset += x.size
    return out, offset


def _segment(a: Params, b: Params, lo: Any, hi: Any) -> Params:
    pos, _ = _positions(a)
    leaves, tree = jax.tree_util.tree_flatten(a)
    out = [jnp.where((q >= lo) & (q < hi), y, x)
           for q, x, y in zip(pos, leaves, jax.tree_util.tree_leaves(b))]
    return jax.tree_util.tree_unflatten(tree, out)


def one_point(key: jax.Array, a: Params, b: Params) -> Params:
    """Genome before a random cut from ``a``, after it from ``b``."""
    _, n = _positions(a)
    return _segment(a, b, jax.random.randint(key, (), 1, n), n)


def two_point(key: jax.Array, a: Params, b: Params) -> Params:
    """The genome between two random cuts from ``b``, the rest from ``a``."""
    _, n = _positions(a)
    cuts = jnp.sort(jax.random.randint(key, (2,), 0, n + 1))
    return _segment(a, b, cuts[0], cuts[1])


def arithmetic(key: jax.Array, a: Params, b: Params, alpha: float = 0.5,
               random: bool = False) -> Params:
    """Blend ``alpha * a + (1 - alpha) * b``; ``random`` draws alpha ~ U(0, 1) per child."""
    w = jax.random.uniform(key) if random else alpha
    return jax.tree_util.tree_map(lambda x, y: w * x + (1 - w) * y, a, b)


def _module_paths(tree: Params) -> List[str]:
    return [jax.tree_util.keystr(path[:-1]) for path, _ in
            jax.tree_util.tree_flatten_with_path(tree)[0]]


def per_layer(key: jax.Array, a: Params, b: Params) -> Params:
    """Each layer (a module's kernel and bias together) whole from one parent."""
    modules = _module_paths(a)
    names = sorted(set(modules))
    coins = jax.random.bernoulli(key, 0.5, (len(names),))
    leaves, tree = jax.tree_util.tree_flatten(a)
    out = [jnp.where(coins[names.index(m)], y, x)
           for m, x, y in zip(modules, leaves, jax.tree_util.tree_leaves(b))]
    return jax.tree_util.tree_unflatten(tree, out)


per_neuron = permutation.per_neuron


OPERATORS: Dict[str, Callable] = {
    "uniform": uniform, "one_point": one_point, "two_point": two_point,
    "arithmetic": arithmetic, "per_layer": per_layer, "per_neuron": per_neuron}

# Aligned crossover matches units across the population before crossing with one of
# OPERATORS: the GA step runs it (genetic_dl.weights.rules.ga), not a pair function.
CROSSOVERS: Tuple[str, ...] = tuple(OPERATORS) + ("aligned",)


def get(name: str, **kwargs: Any) -> Callable:
    """Crossover operator ``name`` with its options bound (``per_neuron`` also takes
    ``spec=``)."""
    if name == "aligned":
        fail("aligned crossover matches units across the population: choose it with "
             "WeightGAConfig(crossover='aligned'), or cross genetic_dl.matching.align(a, b, "
             "spec)'s result with another crossover")
    check_choice("crossover", name, OPERATORS)
    return functools.partial(OPERATORS[name], **kwargs)
