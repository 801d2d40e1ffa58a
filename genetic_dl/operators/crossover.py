"""Crossover of two members' weight pytrees: ``op(key, a, b, **kw) -> child``.

Each operator acts on one pair of params pytrees (no population axis); the GA
step vmaps it over all pairs. Every child weight comes from parent ``a`` or
``b`` (or their declared blend, for ``arithmetic``).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import permutation
from .matching import align, incoming_index, unit_chain
from .permutation import PermutationSpec

Params = Any


def coin_mask(key, shape) -> jax.Array:
    """Fair coin flips from packed random bits: 32 flips per 32-bit draw."""
    n = int(np.prod(shape))
    words = jax.random.bits(key, (-(-n // 32),), jnp.uint32)
    flips = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return flips.reshape(-1)[:n].reshape(shape).astype(bool)


def uniform(key, a: Params, b: Params, p: float = 0.5) -> Params:
    """Each weight from ``b`` with probability ``p``, else from ``a`` (Syswerda, 1989)."""
    leaves, tree = jax.tree_util.tree_flatten(a)
    keys = jax.random.split(key, len(leaves))

    def mask(k, shape):
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


def _segment(a, b, lo, hi):
    pos, _ = _positions(a)
    leaves, tree = jax.tree_util.tree_flatten(a)
    out = [jnp.where((q >= lo) & (q < hi), y, x)
           for q, x, y in zip(pos, leaves, jax.tree_util.tree_leaves(b))]
    return jax.tree_util.tree_unflatten(tree, out)


def one_point(key, a: Params, b: Params) -> Params:
    """Genome before a random cut from ``a``, after it from ``b``."""
    _, n = _positions(a)
    return _segment(a, b, jax.random.randint(key, (), 1, n), n)


def two_point(key, a: Params, b: Params) -> Params:
    """The genome between two random cuts from ``b``, the rest from ``a``."""
    _, n = _positions(a)
    cuts = jnp.sort(jax.random.randint(key, (2,), 0, n + 1))
    return _segment(a, b, cuts[0], cuts[1])


def arithmetic(key, a: Params, b: Params, alpha: float = 0.5, random: bool = False) -> Params:
    """Blend ``alpha * a + (1 - alpha) * b``; ``random`` draws alpha ~ U(0, 1) per child."""
    alpha = jax.random.uniform(key) if random else alpha
    return jax.tree_util.tree_map(lambda x, y: alpha * x + (1 - alpha) * y, a, b)


def _module_paths(tree: Params) -> List[str]:
    return [jax.tree_util.keystr(path[:-1]) for path, _ in
            jax.tree_util.tree_flatten_with_path(tree)[0]]


def per_layer(key, a: Params, b: Params) -> Params:
    """Each layer (a module's kernel and bias together) whole from one parent."""
    modules = _module_paths(a)
    names = sorted(set(modules))
    coins = jax.random.bernoulli(key, 0.5, (len(names),))
    leaves, tree = jax.tree_util.tree_flatten(a)
    out = [jnp.where(coins[names.index(m)], y, x)
           for m, x, y in zip(modules, leaves, jax.tree_util.tree_leaves(b))]
    return jax.tree_util.tree_unflatten(tree, out)


def _mix_units(a: Params, b: Params, masks: List[jax.Array]) -> Params:
    """Child whose hidden unit j of layer l comes from ``b`` where ``masks[l][j]``.

    A unit's incoming weights and bias always move together. A weight joining two
    hidden units from different parents follows the downstream unit; the output
    layer's rows follow the last hidden layer's units, so its units stay whole.
    """
    chain = unit_chain(a)
    pa, pb = a["params"], b["params"]
    out = {}
    for l, name in enumerate(chain):
        ka, kb = pa[name]["kernel"], pb[name]["kernel"]
        if l < len(masks):  # hidden layer: output units (last axis) and bias
            m = masks[l]
            kernel = jnp.where(m, kb, ka)
            bias = jnp.where(m, pb[name]["bias"], pa[name]["bias"])
        else:  # output layer: rows follow the last hidden layer's units
            m = masks[-1][incoming_index(ka, masks[-1].shape[0])]
            kernel, bias = jnp.where(m[:, None], kb, ka), pa[name]["bias"]
        out[name] = {"kernel": kernel, "bias": bias}
    return {"params": out}


def per_neuron(key, a: Params, b: Params, spec: Optional[PermutationSpec] = None) -> Params:
    """Each hidden unit or channel (incoming weights, bias, outgoing weights) from one parent.

    Keeping units whole follows Montana & Davis (1989), "Training feedforward
    neural networks using genetic algorithms" (node crossover). Without
    ``spec``, ``a`` and ``b`` are params of a chain of ``Conv_i``/``Dense_i``
    layers; with one, any variables (norm statistics follow their units: see
    :func:`genetic_dl.permutation.per_neuron`).
    """
    if spec is not None:
        return permutation.per_neuron(key, a, b, spec)
    chain = unit_chain(a)
    keys = jax.random.split(key, max(1, len(chain) - 1))
    masks = [jax.random.bernoulli(k, 0.5, (a["params"][n]["kernel"].shape[-1],))
             for k, n in zip(keys, chain[:-1])]
    return _mix_units(a, b, masks)


def aligned(key, a: Params, b: Params, base: str = "uniform",
            passes: Optional[int] = None, matcher: str = "greedy",
            spec: Optional[PermutationSpec] = None) -> Params:
    """Align ``b``'s units to ``a`` (Git Re-Basin), then cross with ``base``.

    With ``spec``, ``a`` and ``b`` are any variables matched by
    :func:`genetic_dl.permutation.align` (greedy assignments only).
    """
    if base == "aligned" or base not in CROSSOVERS:
        raise ValueError(f"aligned crossover needs a base crossover among "
                         f"{', '.join(n for n in CROSSOVERS if n != 'aligned')}, got {base!r}")
    if spec is None:
        return CROSSOVERS[base](key, a, align(a, b, passes, matcher))
    if matcher != "greedy":
        raise ValueError("aligned crossover with a permutation spec matches with greedy "
                         "assignments: use matcher='greedy'")
    b = permutation.align(a, b, spec, passes)
    if base == "per_neuron":
        return permutation.per_neuron(key, a, b, spec)
    return CROSSOVERS[base](key, a, b)


CROSSOVERS: Dict[str, Callable] = {
    "uniform": uniform, "one_point": one_point, "two_point": two_point,
    "arithmetic": arithmetic, "per_layer": per_layer, "per_neuron": per_neuron,
    "aligned": aligned}


def get(name: str, **kwargs) -> Callable:
    """Crossover operator ``name`` with its options bound."""
    if name not in CROSSOVERS:
        raise ValueError(f"unknown crossover {name!r}: choose one of {', '.join(CROSSOVERS)}")
    return functools.partial(CROSSOVERS[name], **kwargs)
