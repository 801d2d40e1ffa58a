"""One structure morphism per member of a stacked population, as one compiled program.

Each child of a generation draws its own change (keep, widen, narrow or deepen,
:mod:`genetic_dl.operators.morphisms`), its layer and its new width; the codes
are traced arrays, so every generation of a padded population reuses one
program, and so does training the children.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp

from ..core.models import ModelSpec
from ..core.padding import widths_of
from ..core.population import Population
from ..core.pytree import Params, PyTree
from ..errors import fail
from .morphisms import Child, deepen, narrow, widen
from .unit_scores import activation_scores

KEEP, WIDEN, NARROW, DEEPEN = 0, 1, 2, 3


def _keep(params: Params, opt_state: PyTree, widths: jax.Array, depth: jax.Array) -> Child:
    return Child(params, opt_state, widths, depth)


@functools.partial(jax.jit, static_argnames=("spec", "noise"))
def morph(key: jax.Array, spec: ModelSpec, params: Params, opt_state: PyTree,
          widths: jax.Array, depth: Optional[jax.Array], op: jax.Array, layer: jax.Array,
          new_width: jax.Array, noise: float = 0.0,
          scores: Optional[Dict[int, jax.Array]] = None) -> Child:
    """One morphism per member of a stacked population, as one compiled program.

    Args:
      key: PRNG key.
      spec: the padded spec (an MLP or CNN).
      params: stacked params, leading axis P.
      opt_state: stacked optax states, or ``None``.
      widths: ``(P, layers)`` true widths.
      depth: ``(P,)`` active blocks, or ``None`` (a spec without blocks).
      op: ``(P,)`` int: :data:`KEEP`, :data:`WIDEN`, :data:`NARROW` or :data:`DEEPEN`.
      layer: ``(P,)`` int, the layer to widen or narrow.
      new_width: ``(P,)`` int, its new width.
      noise: as :func:`~genetic_dl.operators.morphisms.widen`.
      scores: ``{group index: (P, W)}`` unit scores for narrowing, or ``None``
        (weights), as :func:`~genetic_dl.operators.morphisms.narrow`.

    Returns:
      The stacked :class:`~genetic_dl.operators.morphisms.Child` (``depth``
      ``None`` when given ``None``).
    """
    size = jnp.shape(op)[0]
    blocks = getattr(spec, "blocks", 0)
    depths = jnp.zeros(size, jnp.float32) if depth is None else depth

    def one(k: jax.Array, p: Params, s: PyTree, w: jax.Array, d: jax.Array, o: jax.Array,
            lay: jax.Array, n: jax.Array, sc: Dict[int, jax.Array]) -> Child:
        branches = [
            lambda: _keep(p, s, w, d),
            lambda: widen(k, spec, p, w, lay, n, s, d, noise),
            lambda: narrow(spec, p, w, lay, n, s, d, sc),
            (lambda: deepen(k, spec, p, w, d, s)) if blocks else (lambda: _keep(p, s, w, d)),
        ]
        return jax.lax.switch(jnp.clip(o, 0, DEEPEN), branches)
    out = jax.vmap(one)(jax.random.split(key, size), params, opt_state, jnp.asarray(widths),
                        depths, jnp.asarray(op), jnp.asarray(layer), jnp.asarray(new_width),
                        scores or {})
    return out if depth is not None else out._replace(depth=None)


def morph_population(key: jax.Array, population: Population, op: Any, layer: Any,
                     new_width: Any, noise: float = 0.0,
                     batch: Optional[jax.Array] = None) -> Population:
    """:func:`morph` of a padded zoo population: params, optimizer states, ``widths``
    and ``depth`` hyperparameters (added at full size when missing, which changes the
    hyperparameters' structure, so the next training call compiles once).

    Args:
      key: PRNG key.
      population: a population of a padded MLP or CNN spec.
      op, layer, new_width: ``(P,)`` per-member choices, as :func:`morph`.
      noise: as :func:`~genetic_dl.operators.morphisms.widen`.
      batch: inputs to score units on for narrowing
        (:func:`~genetic_dl.operators.unit_scores.activation_scores`); ``None``:
        by their weights.

    Returns:
      The population of children (same ids, keys and fitness bookkeeping).
    """
    spec = population.spec
    if spec is None or not widths_of(spec):
        fail("structure morphisms need a population of a zoo MLP or CNN spec")
    size, blocks = population.size, getattr(spec, "blocks", 0)
    hp = dict(population.hparams)
    widths = hp.get("widths", jnp.tile(jnp.asarray(widths_of(spec), jnp.float32), (size, 1)))
    depth = hp.get("depth", jnp.full((size,), float(blocks))) if blocks else None
    scores = None
    if batch is not None:
        scores = jax.vmap(functools.partial(activation_scores, population.model), (0, None, 0, 0))(
            population.params, jnp.asarray(batch), widths, depth)
    child = morph(key, spec, population.params, population.opt_state, widths, depth,
                  jnp.asarray(op), jnp.asarray(layer), jnp.asarray(new_width), noise, scores)
    hp["widths"] = child.widths
    if depth is not None:
        hp["depth"] = child.depth
    return dataclasses.replace(population, params=child.params, opt_state=child.opt_state,
                               hparams=hp)
