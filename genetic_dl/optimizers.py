"""Optimizers whose hyperparameters are traced, per-member values.

The optax transformation is rebuilt inside the jitted program from the
member's own hyperparameter scalars (the same effect as
``optax.inject_hyperparams``, without storing the values in the optimizer
state): the optimizer state's structure depends only on the optimizer's name,
so a population can change a member's learning rate, weight decay or momentum
between generations without recompiling.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping

import jax
import optax

HPARAM_NAMES = ("learning_rate", "weight_decay", "momentum", "dropout")


def _sgd(hp):
    return optax.chain(optax.add_decayed_weights(hp["weight_decay"]),
                       optax.sgd(hp["learning_rate"], momentum=hp["momentum"]))


def _adam(hp):
    # Coupled L2 decay (added to the gradient), as torch.optim.Adam's weight_decay.
    return optax.chain(optax.add_decayed_weights(hp["weight_decay"]),
                       optax.adam(hp["learning_rate"], b1=hp["momentum"]))


def _adamw(hp):
    return optax.adamw(hp["learning_rate"], b1=hp["momentum"], weight_decay=hp["weight_decay"])


def _rmsprop(hp):
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


def make_optimizer(name: str, hparams: Mapping[str, jax.Array]) -> optax.GradientTransformation:
    """Builds optimizer ``name`` from one member's hyperparameter scalars.

    Args:
      name: a key of :data:`OPTIMIZERS` (sgd, adam, adamw, rmsprop).
      hparams: ``learning_rate``, ``weight_decay`` and ``momentum`` (floats or
        traced scalars).

    Returns:
      An ``optax.GradientTransformation``.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](hparams)
