"""Parent selection: pure functions ``op(key, fitness, n, **kw) -> (n,) indices``.

Fitness is maximised; NaN/inf marks a failed member, which is ranked last and
given zero selection probability whenever any member succeeded.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np


def clean_fitness(fitness: jax.Array) -> jax.Array:
    """Fitness with NaN/inf replaced by -inf, so failed members sort last."""
    fitness = jnp.asarray(fitness, jnp.float32)
    return jnp.where(jnp.isfinite(fitness), fitness, -jnp.inf)


def rank_order(fitness: jax.Array) -> jax.Array:
    """Indices from best to worst; failed members last, ties by index."""
    return jnp.argsort(-clean_fitness(fitness), stable=True)


def elites(fitness: jax.Array, count: int) -> jax.Array:
    """Indices of the ``count`` fittest members (elitism)."""
    return rank_order(fitness)[:count]


def _ok(fitness: jax.Array) -> jax.Array:
    ok = jnp.isfinite(fitness)
    return jnp.where(jnp.any(ok), ok, jnp.ones_like(ok))  # all failed: choose among all


def _sample(key: jax.Array, probs: jax.Array, n: int) -> jax.Array:
    return jax.random.choice(key, probs.shape[0], (n,), replace=True, p=probs)


def truncation(key: jax.Array, fitness: jax.Array, n: int, fraction: float = 0.5) -> jax.Array:
    """Uniform choice among the top ``fraction`` of the population."""
    size = fitness.shape[0]
    top = max(1, int(round(fraction * size)))
    return rank_order(fitness)[jax.random.randint(key, (n,), 0, top)]


def tournament(key: jax.Array, fitness: jax.Array, n: int, k: int = 3) -> jax.Array:
    """Best of ``k`` members drawn uniformly with replacement (Goldberg & Deb, 1991).

    Entrants are drawn among the members that did not fail.
    """
    ok = _ok(fitness)
    entrants = jax.random.choice(key, fitness.shape[0], (n, k), p=ok / jnp.sum(ok))
    scores = clean_fitness(fitness)[entrants]
    return entrants[jnp.arange(n), jnp.argmax(scores, axis=1)]


def roulette_probabilities(fitness: jax.Array) -> jax.Array:
    """Fitness-proportional probabilities after shifting the worst success to 0.

    A small floor keeps the worst successful member selectable; failed members get 0.
    """
    f = clean_fitness(fitness)
    ok = _ok(fitness)
    f_ok = jnp.where(ok, f, jnp.inf)
    lo, hi = jnp.min(f_ok), jnp.max(jnp.where(ok, f, -jnp.inf))
    spread = jnp.where(jnp.isfinite(hi - lo) & (hi > lo), hi - lo, 1.0)
    w = jnp.where(ok, (jnp.where(ok, f, 0.0) - jnp.where(jnp.isfinite(lo), lo, 0.0)) / spread
                  + 1e-3, 0.0)
    return w / jnp.sum(w)


def roulette(key: jax.Array, fitness: jax.Array, n: int) -> jax.Array:
    """Fitness-proportional (roulette-wheel) selection (Holland, 1975)."""
    return _sample(key, roulette_probabilities(fitness), n)


def rank_probabilities(fitness: jax.Array, pressure: float = 2.0) -> jax.Array:
    """Linear ranking: best gets ``pressure/P``, worst ``(2-pressure)/P`` (Baker, 1985)."""
    size = fitness.shape[0]
    ranks = jnp.empty(size, jnp.float32).at[rank_order(fitness)].set(
        jnp.arange(size, dtype=jnp.float32))
    if size == 1:
        return jnp.ones(1)
    w = pressure - 2 * (pressure - 1) * ranks / (size - 1)
    w = jnp.where(_ok(fitness), w, 0.0)
    return w / jnp.sum(w)


def rank(key: jax.Array, fitness: jax.Array, n: int, pressure: float = 2.0) -> jax.Array:
    """Linear-rank selection with selective ``pressure`` in [1, 2]."""
    return _sample(key, rank_probabilities(fitness, pressure), n)


def sus(key: jax.Array, fitness: jax.Array, n: int) -> jax.Array:
    """Stochastic universal sampling: n equally spaced pointers, one spin (Baker, 1987)."""
    cum = jnp.cumsum(roulette_probabilities(fitness))
    pointers = (jax.random.uniform(key) + jnp.arange(n)) / n
    idx = jnp.searchsorted(cum, pointers, side="right")
    return jnp.minimum(idx, fitness.shape[0] - 1)


def boltzmann_probabilities(fitness: jax.Array, beta: Any) -> jax.Array:
    """``p_i ∝ exp(beta * f_i)``; failed members get 0."""
    f = clean_fitness(fitness)
    ok = _ok(fitness)
    logits = jnp.where(ok, beta * (jnp.where(ok, f, 0.0) - jnp.max(jnp.where(ok, f, -jnp.inf))),
                       -jnp.inf)
    return jax.nn.softmax(logits)


def boltzmann(key: jax.Array, fitness: jax.Array, n: int, beta: Any = 1.0) -> jax.Array:
    """Boltzmann selection ``p_i ∝ exp(beta f_i)`` (de la Maza & Tidor, 1993).

    ``beta`` may be traced; the loops raise it per generation with
    :func:`beta_schedule` so that pressure grows as the search converges.
    It multiplies fitness in its own units: a member 1/beta below the best is
    e times less likely, so choose beta for your fitness' scale (accuracy in
    [0, 1]: tens; a loss in the hundreds: below 0.1).
    """
    return _sample(key, boltzmann_probabilities(fitness, beta), n)


def beta_schedule(beta0: Any, growth: float, generation: Any) -> jax.Array:
    """``beta(t) = beta0 * growth**t``: rising selection pressure."""
    return beta0 * jnp.power(growth, generation)


SELECTIONS: Dict[str, Callable] = {
    "truncation": truncation, "tournament": tournament, "roulette": roulette, "rank": rank,
    "sus": sus, "boltzmann": boltzmann}


def scheduled(name: str, options: Mapping[str, Any], growth: float, generation: Any) -> Callable:
    """Selection operator ``name`` with ``options`` bound and, for ``"boltzmann"``, its
    ``beta`` grown to ``generation``'s value by :func:`beta_schedule`."""
    options = dict(options)
    if name == "boltzmann":
        options["beta"] = beta_schedule(options.get("beta", 1.0), growth, generation)
    return get(name, **options)


def survives(trial: Any, target: Any) -> np.ndarray:
    """Differential evolution's greedy replacement (Storn & Price, 1997): whether each
    trial replaces its target, i.e. is not worse (a failed trial never replaces a
    member that succeeded). Compared on the host in float64.

    Args:
      trial, target: ``(P,)`` fitness of the trials and of their targets.

    Returns:
      ``(P,)`` bool.
    """
    def clean(f: Any) -> np.ndarray:
        f = np.asarray(f, np.float64)
        return np.where(np.isfinite(f), f, -np.inf)
    return clean(trial) >= clean(target)


def get(name: str, **kwargs: Any) -> Callable:
    """Selection operator ``name`` with its options bound."""
    if name not in SELECTIONS:
        raise ValueError(f"unknown selection {name!r}: choose one of {', '.join(SELECTIONS)}")
    return functools.partial(SELECTIONS[name], **kwargs)
