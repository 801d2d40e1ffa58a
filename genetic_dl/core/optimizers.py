"""Optimizers whose hyperparameters are traced, per-member values.

The optax transformation is rebuilt inside the jitted program from the
member's own hyperparameter scalars (the same effect as
``optax.inject_hyperparams``, without storing the values in the optimizer
state): the optimizer state's structure depends only on the optimizer's name,
so a population can change a member's learning rate, weight decay or momentum
between generations without recompiling.

Any function ``hparams -> optax.GradientTransformation`` works the same way,
with hyperparameter names of the user's choosing, e.g.::

    def clipped_adamw(hp):
        schedule = optax.warmup_cosine_decay_schedule(0.0, 1.0, 5, 200)
        return optax.chain(optax.clip_by_global_norm(hp["clip"]),
                           optax.adamw(lambda step: hp["peak_lr"] * schedule(step)))

A traced value must scale the schedule rather than go inside it: optax 0.2.8's
``warmup_cosine_decay_schedule`` compares ``peak_value`` in Python, which fails
for a traced peak.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Union

import jax
import optax

from .pytree import Params
from ..errors import unknown

HPARAM_NAMES = ("learning_rate", "weight_decay", "momentum", "dropout")


def _sgd(hp: Mapping[str, jax.Array]) -> optax.GradientTransformation:
    return optax.chain(optax.add_decayed_weights(hp["weight_decay"]),
                       optax.sgd(hp["learning_rate"], momentum=hp["momentum"]))


def _adam(hp: Mapping[str, jax.Array]) -> optax.GradientTransformation:
    # Coupled L2 decay (added to the gradient), as torch.optim.Adam's weight_decay.
    return optax.chain(optax.add_decayed_weights(hp["weight_decay"]),
                       optax.adam(hp["learning_rate"], b1=hp["momentum"]))


def _adamw(hp: Mapping[str, jax.Array]) -> optax.GradientTransformation:
    return optax.adamw(hp["learning_rate"], b1=hp["momentum"], weight_decay=hp["weight_decay"])


def _rmsprop(hp: Mapping[str, jax.Array]) -> optax.GradientTransformation:
    return optax.chain(optax.add_decayed_weights(hp["weight_decay"]),
                       optax.rmsprop(hp["learning_rate"], momentum=hp["momentum"]))


OPTIMIZERS: Dict[str, Callable[[Mapping[str, jax.Array]], optax.GradientTransformation]] = {
    "sgd": _sgd, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop}

# momentum is SGD's momentum, Adam's b1 and RMSprop's momentum.
DEFAULT_HPARAMS: Dict[str, Dict[str, float]] = {
    "sgd": {"learning_rate": 0.05, "weight_decay": 0.0, "momentum": 0.9, "dropout": 0.0},
    "adam": {"learning_rate": 1e-3, "weight_decay": 0.0, "momentum": 0.9, "dropout": 0.0},
    "adamw": {"learning_rate": 1e-3, "weight_decay": 1e-4, "momentum": 0.9, "dropout": 0.0},
    "rmsprop": {"learning_rate": 1e-3, "weight_decay": 0.0, "momentum": 0.0, "dropout": 0.0},
}


OptimizerLike = Union[str, Callable[[Mapping[str, jax.Array]], optax.GradientTransformation]]


def make_optimizer(name: OptimizerLike,
                   hparams: Mapping[str, jax.Array]) -> optax.GradientTransformation:
    """Builds optimizer ``name`` from one member's hyperparameter scalars.

    Args:
      name: a key of :data:`OPTIMIZERS` (sgd, adam, adamw, rmsprop), or a
        function ``hparams -> optax.GradientTransformation``.
      hparams: the member's hyperparameters (floats or traced scalars):
        ``learning_rate``, ``weight_decay`` and ``momentum`` for the named ones.

    Returns:
      An ``optax.GradientTransformation``.
    """
    if callable(name):
        return name(hparams)
    if name not in OPTIMIZERS:
        unknown("optimizer", name, OPTIMIZERS)
    return OPTIMIZERS[name](hparams)


def check_optimizer(optimizer: OptimizerLike, hparams: Mapping[str, jax.Array],
                    params: Params) -> None:
    """Traces one init and update (no compile); a missing hyperparameter is a ValueError.

    Args:
      optimizer: as :func:`make_optimizer`.
      hparams: one member's hyperparameters.
      params: one member's params (arrays or shape structs).
    """
    def step(p: Params) -> tuple:
        tx = make_optimizer(optimizer, hparams)
        state = tx.init(p)
        return tx.update(p, state, p)
    try:
        jax.eval_shape(step, params)
    except KeyError as err:
        raise ValueError(f"the optimizer function reads hyperparameter {err} but the "
                         f"population has only {sorted(hparams)}: pass it in "
                         f"hparams={{{err}: value}}") from err
