"""REPAIR for norm-free networks: averaged weights given their endpoints' unit statistics.

Jordan et al. 2023, "REPAIR: REnormalizing Permuted Activations for Interpolation
Repair": the average of two networks' weights shrinks the spread of each hidden
unit's pre-activations ("variance collapse"), which is most of the loss barrier
between them. REPAIR rescales each unit of the averaged network so that, on a batch,
its pre-activations have the mean and standard deviation interpolated from the
endpoints' own. For a layer ``y = x W + b`` (``nn.Dense``, ``nn.Conv``, the zoo's
patch convolution) that is exact and costs nothing at inference:
``W[..., j] *= s_j`` and ``b_j = s_j b_j + t_j``. Layers are repaired in the order
the model calls them, each measured after the ones before it were repaired. A
BatchNorm model does not need this: its normalisation already rescales, and its
running statistics are recomputed instead
(:func:`~genetic_dl.core.statistics.recompute_statistics`).

The repaired layers are the modules with a ``kernel`` and a ``bias`` whose output's
last axis is the kernel's last (one entry per unit); the last such layer called
(the output layer, whose outputs are logits, not a hidden unit's input) is left as
averaged.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import traverse_util
from numpy.typing import ArrayLike

from ..core.learner import Learner, NnxLearner
from ..core.pytree import Params, PyTree
from ..errors import check

# Pre-activation spreads below this are treated as constant units: left unscaled.
MIN_STD = 1e-6
Path = Tuple[str, ...]


def _layers(learner: Learner, params: Params, collections: PyTree, x: jax.Array,
            hp: Dict[str, jax.Array]) -> Tuple[List[Path], Dict[Path, jax.Array]]:
    """The repairable layers' module paths in call order (the output layer left out),
    and every module's output."""
    check(not isinstance(learner, NnxLearner), "REPAIR reads a linen module's intermediate "
          "outputs; an nnx learner has none: average it without repair")
    _, state = learner._call(  # pylint: disable=protected-access
        {**params, **collections}, x, hp, learner.eval_kwargs, capture_intermediates=True,
        mutable=["intermediates"])
    outputs = {path[:-1]: value[0] if isinstance(value, tuple) else value
               for path, value in traverse_util.flatten_dict(state["intermediates"]).items()
               if path[-1] == "__call__"}
    flat = traverse_util.flatten_dict(params["params"])
    layers = [path for path, out in outputs.items()
              if path + ("kernel",) in flat and path + ("bias",) in flat
              and isinstance(out, jax.Array) and out.ndim >= 1
              and out.shape[-1] == flat[path + ("kernel",)].shape[-1]]
    return layers[:-1], outputs


def _moments(out: jax.Array) -> Tuple[jax.Array, jax.Array]:
    axes = tuple(range(out.ndim - 1))
    return jnp.mean(out, axes), jnp.std(out, axes)


def unit_statistics(learner: Learner, params: Params, collections: PyTree, x: jax.Array,
                    hp: Optional[Dict[str, jax.Array]] = None
                    ) -> Dict[Path, Tuple[jax.Array, jax.Array]]:
    """Each repairable layer's per-unit pre-activation mean and standard deviation on ``x``.

    Args:
      learner: the population's learner (a linen module).
      params: one network's params (``{"params": ...}``, no member axis).
      collections: its other variables.
      x: a batch of model inputs.
      hp: its traced hyperparameters (the zoo's widths), if any.

    Returns:
      ``{module path: (mean, std)}``, each ``(units,)``, in call order.
    """
    layers, outputs = _layers(learner, params, collections, x, hp or {})
    return {path: _moments(outputs[path]) for path in layers}


def repair(learner: Learner, endpoints: Params, weights: ArrayLike, averaged: Params,
           collections: PyTree, x: jax.Array,
           hp: Optional[Dict[str, jax.Array]] = None) -> Params:
    """REPAIR (Jordan et al. 2023) of an average of ``endpoints``.

    Args:
      learner: the population's learner (a linen module, norm-free).
      endpoints: the averaged members' params, stacked (leading axis P).
      weights: ``(P,)`` their weights in the average (normalised here); the target
        statistics of every unit are the same mix of the endpoints' statistics.
      averaged: the averaged network's params (no member axis).
      collections: the network's other variables (shared by the endpoints).
      x: a batch of model inputs (training data: selection never sees test).
      hp: traced hyperparameters of the network, if any.

    Returns:
      ``averaged`` with every repairable layer's kernel and bias rescaled so that its
      units' pre-activation mean and spread on ``x`` are the endpoints' mix.
    """
    hp = hp or {}
    w = jnp.asarray(weights, jnp.float32)
    w = w / jnp.sum(w)
    stats = jax.vmap(lambda p: unit_statistics(learner, p, collections, x, hp))(endpoints)
    target = {path: (jnp.tensordot(w, mean, 1), jnp.tensordot(w, std, 1))
              for path, (mean, std) in stats.items()}
    return _rescaled(learner, target, averaged, collections, x, hp)


def _rescaled(learner: Learner, target: Dict[Path, Tuple[jax.Array, jax.Array]],
              averaged: Params, collections: PyTree, x: jax.Array,
              hp: Dict[str, jax.Array]) -> Params:
    """``averaged`` with each layer of ``target`` rescaled to its ``(mean, std)`` per
    unit, in call order, each measured after the earlier ones were rescaled."""
    flat = dict(traverse_util.flatten_dict(averaged["params"]))
    for path, (mean_t, std_t) in target.items():  # call order: each after the earlier ones
        layers, outputs = _layers(learner, {"params": traverse_util.unflatten_dict(flat)},
                                  collections, x, hp)
        mean, std = _moments(outputs[path]) if path in layers else (mean_t, std_t)
        scale = jnp.where(std > MIN_STD, std_t / jnp.maximum(std, MIN_STD), 1.0)
        shift = mean_t - scale * mean
        kernel, bias = flat[path + ("kernel",)], flat[path + ("bias",)]
        flat[path + ("kernel",)] = (kernel * scale).astype(kernel.dtype)
        flat[path + ("bias",)] = (bias * scale + shift).astype(bias.dtype)
    return {**averaged, "params": traverse_util.unflatten_dict(flat)}


def repair_mixed(learner: Learner, endpoints: Params, mixing: jax.Array, mixed: Params,
                 x: jax.Array, hp: Optional[Dict[str, jax.Array]] = None) -> Params:
    """REPAIR of a whole population after an averaging recombination (PAPA's pull, PAPA-2).

    Member ``i`` of ``mixed`` is ``sum_j mixing[i, j]`` member ``j`` of ``endpoints``;
    its units are rescaled to the same mix of the endpoints' unit statistics, all
    members at once. A member whose row is the identity (it took no part) is returned
    as it is.

    Args:
      learner: the population's learner (a linen module, norm-free: no collections).
      endpoints: the members' params before the recombination, stacked (leading axis P).
      mixing: ``(P, P)`` weights (:func:`~genetic_dl.operators.recombination.mixing`).
      mixed: the members' params after it, stacked.
      x: a batch of model inputs (training data: selection never sees test).
      hp: the members' traced hyperparameters, stacked, if any.

    Returns:
      ``mixed``, repaired.
    """
    hp = hp or {}
    w = jnp.asarray(mixing, jnp.float32)
    stats = jax.vmap(lambda p, h: unit_statistics(learner, p, {}, x, h))(endpoints, hp)

    def mix(v: jax.Array) -> jax.Array:  # a failed member (weight 0) may have NaN statistics
        return w @ jnp.where(jnp.isfinite(v), v, 0.0)
    targets = {path: (mix(mean), mix(std)) for path, (mean, std) in stats.items()}
    repaired = jax.vmap(lambda t, p, h: _rescaled(learner, t, p, {}, x, h))(targets, mixed, hp)
    moved = jnp.diagonal(w) < 1
    return jax.tree_util.tree_map(
        lambda r, m: jnp.where(moved.reshape((-1,) + (1,) * (m.ndim - 1)), r, m),
        repaired, mixed)
