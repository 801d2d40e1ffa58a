"""Operators on populations of unit genomes ``(n, D)`` for the outer GA.

Pure functions with explicit keys. Selection reuses :mod:`genetic_dl.operators.selection`.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .space import Choice, Space

# A per-gene bound: a scalar or a ``(D,)`` array.
Bound = Union[float, jax.Array]


def init_random(key: jax.Array, n: int, dim: int) -> jax.Array:
    """``n`` genomes uniform in the unit hypercube."""
    return jax.random.uniform(key, (n, dim))


def init_lhs(key: jax.Array, n: int, dim: int) -> jax.Array:
    """Latin hypercube: each gene's ``n`` values fall one per stratum of width 1/n (McKay, 1979)."""
    k_perm, k_jit = jax.random.split(key)
    strata = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(k_perm, dim)).T
    return (strata + jax.random.uniform(k_jit, (n, dim))) / n


INITS: Dict[str, Callable[[jax.Array, int, int], jax.Array]] = {"random": init_random,
                                                                "lhs": init_lhs}


def one_point(key: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Genes before a random cut from ``a``, the rest from ``b``."""
    cut = jax.random.randint(key, (), 1, max(2, a.shape[0]))
    return jnp.where(jnp.arange(a.shape[0]) < cut, a, b)


def two_point(key: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Genes between two random cuts from ``b``."""
    cuts = jnp.sort(jax.random.randint(key, (2,), 0, a.shape[0] + 1))
    idx = jnp.arange(a.shape[0])
    return jnp.where((idx >= cuts[0]) & (idx < cuts[1]), b, a)


def uniform(key: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Each gene from either parent with probability 1/2."""
    return jnp.where(jax.random.bernoulli(key, 0.5, a.shape), b, a)


# ``crossover(key, a, b) -> child`` of two genomes.
CROSSOVERS: Dict[str, Callable[[jax.Array, jax.Array, jax.Array], jax.Array]] = {
    "one_point": one_point, "two_point": two_point, "uniform": uniform}


def reflect(u: jax.Array, lo: Bound = 0.0, hi: Bound = 1.0) -> jax.Array:
    """Folds values back into ``[lo, hi]`` (mirror at the bounds)."""
    width = hi - lo
    x = jnp.mod(u - lo, 2 * width)
    return lo + jnp.where(x > width, 2 * width - x, x)


def mutate(key: jax.Array, genomes: jax.Array, rate: Union[float, jax.Array],
           sigma: float = 0.15, lo: Bound = 0.0, hi: Bound = 1.0) -> jax.Array:
    """Gaussian mutation in the unit (= gene's own, log for log genes) scale.

    Args:
      key: PRNG key.
      genomes: ``(n, D)`` unit genomes.
      rate: per-gene mutation probability (literature: 1-5 %; may be traced).
      sigma: step size in unit coordinates.
      lo, hi: per-gene bounds (scalars or ``(D,)``, e.g. after refinement).

    Returns:
      Mutated genomes, within bounds.
    """
    k_hit, k_noise = jax.random.split(key)
    hit = jax.random.bernoulli(k_hit, rate, genomes.shape)
    step = sigma * jax.random.normal(k_noise, genomes.shape)
    return jnp.where(hit, reflect(genomes + step, lo, hi), genomes)


def structural_mutation(key: jax.Array, genomes: jax.Array, space: Space,
                        rate: float = 0.1) -> jax.Array:
    """Add or remove a layer, change a width, or change the activation.

    With probability ``rate`` per genome, one structural move: the ``layers``
    gene moves one bin up or down, a width gene is resampled around its value,
    or the ``activation`` gene is resampled. Genes missing from ``space`` are
    skipped.

    Args:
      key: PRNG key.
      genomes: ``(n, D)`` unit genomes.
      space: the space (static).
      rate: probability of a structural move per genome.

    Returns:
      Mutated genomes.
    """
    names = space.names
    moves: List[Callable[[jax.Array, jax.Array], jax.Array]] = []
    if "layers" in names:
        i_layers = space.index("layers")
        gene = space.gene("layers")
        bins: float  # the number of layer counts (a float for a Float gene with a step)
        if isinstance(gene, Choice):
            bins = len(gene.options)
        elif gene.step is not None:
            bins = (gene.hi - gene.lo) // gene.step + 1
        else:  # a continuous gene has no layer counts to step between
            raise ValueError("gene 'layers' needs a step: an Int, a Choice or a Float with step")

        def add_or_remove_layer(k: jax.Array, g: jax.Array) -> jax.Array:
            step = jnp.where(jax.random.bernoulli(k), 1.0, -1.0) / bins
            return g.at[i_layers].set(jnp.clip(g[i_layers] + step, 0.0, 0.999))
        moves.append(add_or_remove_layer)
    widths = jnp.array([space.index(n) for n in names if n.startswith("width_")], jnp.int32)
    if widths.size:
        def change_width(k: jax.Array, g: jax.Array) -> jax.Array:
            j = widths[jax.random.randint(k, (), 0, widths.size)]
            return g.at[j].set(reflect(g[j] + 0.2 * jax.random.normal(jax.random.fold_in(k, 1))))
        moves.append(change_width)
    if "activation" in names and isinstance(space.gene("activation"), Choice):
        i_act = space.index("activation")

        def change_activation(k: jax.Array, g: jax.Array) -> jax.Array:
            return g.at[i_act].set(jax.random.uniform(k))
        moves.append(change_activation)
    if not moves:
        return genomes

    def one(k: jax.Array, g: jax.Array) -> jax.Array:
        k_do, k_which, k_move = jax.random.split(k, 3)
        moved = jax.lax.switch(jax.random.randint(k_which, (), 0, len(moves)), moves, k_move, g)
        return jnp.where(jax.random.bernoulli(k_do, rate), moved, g)
    return jax.vmap(one)(jax.random.split(key, genomes.shape[0]), genomes)


def refine_bounds(top: ArrayLike, space: Space, epsilon: float = 0.0,
                  min_width: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """Search-space refinement: each numeric gene narrows to ``[min+eps, max-eps]`` of ``top``.

    Categorical genes keep ``[0, 1]``. A range is widened symmetrically (within
    ``[0, 1]``) to at least ``min_width`` in unit coordinates, so the search
    never collapses.

    Args:
      top: ``(k, D)`` genomes of the top individuals.
      space: the space.
      epsilon: margin, in unit coordinates (negative widens).
      min_width: the narrowest range allowed.

    Returns:
      ``(lo, hi)``, each ``(D,)``.
    """
    top = np.asarray(top)
    lo = np.clip(top.min(0) + epsilon, 0.0, 1.0)
    hi = np.clip(top.max(0) - epsilon, 0.0, 1.0)
    centre = (lo + hi) / 2
    width = np.maximum(hi - lo, min_width)
    lo = np.clip(centre - width / 2, 0.0, 1.0 - width)
    hi = lo + width
    numeric = np.array([not isinstance(g, Choice) for _, g in space.genes])
    return np.where(numeric, lo, 0.0), np.where(numeric, hi, 1.0)


def dominates(f: ArrayLike, g: ArrayLike) -> bool:
    """Whether objective vector ``f`` Pareto-dominates ``g`` (all maximised)."""
    f, g = np.asarray(f), np.asarray(g)
    return bool(np.all(f >= g) and np.any(f > g))


def non_dominated_sort(objectives: ArrayLike) -> np.ndarray:
    """Front index of every point (0 = Pareto front), maximising; NaN rows last.

    The fast non-dominated sort of NSGA-II (Deb et al., 2002).
    """
    f = np.asarray(objectives, np.float64)
    f = np.where(np.isfinite(f), f, -np.inf)
    n = len(f)
    ge = np.all(f[:, None, :] >= f[None, :, :], -1)
    gt = np.any(f[:, None, :] > f[None, :, :], -1)
    dom = ge & gt  # dom[i, j]: i dominates j
    count = dom.sum(0)
    fronts = np.full(n, -1)
    level, current = 0, np.flatnonzero(count == 0)
    while current.size:
        fronts[current] = level
        count = count - dom[current].sum(0)
        count[fronts >= 0] = -1
        current = np.flatnonzero(count == 0)
        level += 1
    return fronts


def crowding_distance(objectives: ArrayLike) -> np.ndarray:
    """NSGA-II crowding distance within one front (boundary points infinite)."""
    f = np.asarray(objectives, np.float64)
    n, m = f.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(f[:, j])
        span = f[order[-1], j] - f[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (f[order[2:], j] - f[order[:-2], j]) / span
    return dist


def nsga2_rank(objectives: ArrayLike) -> np.ndarray:
    """A scalar fitness that orders by (front, crowding): higher is better."""
    f = np.asarray(objectives, np.float64)
    fronts = non_dominated_sort(f)
    score = np.zeros(len(f))
    for level in np.unique(fronts):
        idx = np.flatnonzero(fronts == level)
        crowd = crowding_distance(f[idx])
        finite = np.where(np.isfinite(crowd), crowd, 1e6)
        score[idx] = -level + 0.5 * finite / (1.0 + finite)  # within-front order in (0, 0.5)
    return score


def pareto_front(objectives: ArrayLike) -> np.ndarray:
    """Indices of the non-dominated points."""
    return np.flatnonzero(non_dominated_sort(objectives) == 0)


def grid_axes(space: Space, resolution: int) -> List[np.ndarray]:
    """Per-gene unit coordinates of a full grid (every category, ``resolution`` numeric values)."""
    return [np.asarray(g.grid(resolution)) for _, g in space.genes]
