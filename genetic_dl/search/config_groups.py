"""Search configs as model specs, and their grouping into populations that train as one.

Configs that share a static shape (model family and layer count, activation,
optimizer, batch size) train together as one vmapped population, with
per-member learning rate, weight decay, dropout and layer widths as traced
values (widths by padding and masking, :mod:`genetic_dl.core.padding`). Group sizes
are rounded up to powers of two so that sizes repeat and hit the jit cache.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple, TypeVar, Union

import jax
import numpy as np

from ..data import Dataset
from ..core.flops import TRAINING_PASSES, traced_flops, training_flops
from ..core.learner import Learner
from ..core.models import CaptionSpec, CNNSpec, MLPSpec, ModelSpec, RNNSpec
from ..core.optimizers import OptimizerLike
from ..core.padding import member_widths, pad_spec, padded_width, widths_of
from ..core.population import index_members, init_population
from ..core.stream import Stream
from ..errors import unknown

Config = Dict[str, Any]
# ``build(config) -> (learner, optimizer)``: a user's model family (see TrainerObjective).
Build = Callable[[Config], Tuple[Learner, OptimizerLike]]
# What configs that train as one population share: (shape, optimizer, batch size).
GroupKey = Tuple[Union[ModelSpec, Learner], OptimizerLike, int]
Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")

DEFAULTS = {"learning_rate": 1e-3, "batch_size": 64, "epochs": 10, "dropout": 0.0,
            "weight_decay": 0.0, "optimizer": "adam", "family": "mlp", "layers": 2,
            "activation": "relu", "kernel_size": 3, "rnn_cell": "gru", "rnn_hidden": 64,
            "rnn_layers": 1}


def config_to_spec(config: Config, slot_classes: Tuple[int, ...] = ()) -> ModelSpec:
    """The model spec of a search config (missing genes take :data:`DEFAULTS`).

    The caption family (a frames CNN of ``layers`` conv layers of ``width_i``
    filters, ``kernel_size``, an ``rnn_cell`` of ``rnn_hidden`` units, one head
    per slot) predicts the dataset's ``slot_classes``.
    """
    c = dict(DEFAULTS, **config)
    dropout = 0.1 if c["dropout"] > 0.005 else 0.0  # dropout layers present; rate is per member
    layers = int(c["layers"])
    widths = tuple(int(c.get(f"width_{i}", 64)) for i in range(layers))
    if c["family"] == "mlp":
        return MLPSpec(widths, c["activation"], dropout)
    if c["family"] == "cnn":
        return CNNSpec(tuple(min(w, 64) for w in widths), int(c["kernel_size"]), "max", (64,),
                       c["activation"], dropout)
    if c["family"] == "rnn":
        return RNNSpec(c["rnn_cell"], int(c["rnn_hidden"]), int(c["rnn_layers"]), dropout)
    if c["family"] == "caption":
        return CaptionSpec(tuple(min(w, 64) for w in widths), int(c["kernel_size"]),
                           cell=c["rnn_cell"], hidden=int(c["rnn_hidden"]),
                           activation=c["activation"], dropout=dropout,
                           slot_classes=slot_classes)
    unknown("model family", c["family"], ("mlp", "cnn", "rnn", "caption"))


def group_key(config: Config, data: Union[Dataset, Stream], *, pad_widths: bool = False,
              build: Optional[Build] = None) -> GroupKey:
    """What must be equal for configs to train as one population:
    ``(shape, optimizer, batch size)``; the shape is the zoo spec (padded to one
    width with ``pad_widths``) or ``build(config)``'s learner. A Stream's
    batches are its own, so its batch size is 0 for every config."""
    c = dict(DEFAULTS, **config)
    batch = int(min(c["batch_size"], len(data.y_train))) if isinstance(data, Dataset) else 0
    if build is not None:
        learner, optimizer = build(config)
        return learner, optimizer, batch
    spec = config_to_spec(config, data.slot_classes if isinstance(data, Dataset) else ())
    return (pad_spec(spec, 1) if pad_widths else spec), c["optimizer"], batch


def group_by(items: Sequence[Item], key: Callable[[Item], Key]) -> Dict[Key, List[int]]:
    """Indices of ``items`` grouped by ``key(item)``, groups in first-seen order."""
    groups: Dict[Key, List[int]] = {}
    for i, c in enumerate(items):
        groups.setdefault(key(c), []).append(i)
    return groups


def bucket(n: int) -> int:
    """The power of two >= n: group sizes repeat, so compiled programs are reused."""
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def zoo_members(configs: Sequence[Config], pad_widths: bool, slot_classes: Tuple[int, ...] = ()
                ) -> Tuple[ModelSpec, List[ModelSpec], Dict[str, Union[np.ndarray, jax.Array]]]:
    """The zoo group's shared spec, each member's spec and the per-member
    hyperparameters (learning rate, weight decay; dropout and unit widths when
    the spec has them); ``slot_classes``: the dataset's, for the caption family."""
    specs = [config_to_spec(c, slot_classes) for c in configs]
    spec = specs[0]
    padded = pad_widths and bool(widths_of(spec))
    if padded:
        spec = pad_spec(spec, padded_width(specs))
    hp: Dict[str, Union[np.ndarray, jax.Array]] = {
        k: np.array([float(dict(DEFAULTS, **c)[k]) for c in configs], np.float32)
        for k in ("learning_rate", "weight_decay")}
    if spec.dropout > 0:
        hp["dropout"] = np.array([float(c.get("dropout", 0.0)) for c in configs], np.float32)
    if padded:
        hp["widths"] = member_widths(specs)
    return spec, specs, hp


def built_hparams(configs: Sequence[Config], optimizer: OptimizerLike) -> Dict[str, np.ndarray]:
    """Per-member hyperparameters of a ``build`` group: every numeric gene but
    epochs and batch size for an optimizer function; learning rate and weight
    decay for a named optimizer."""
    if callable(optimizer):
        names = sorted(k for k, v in configs[0].items() if _numeric(v)
                       and k not in ("epochs", "batch_size"))
        return {k: np.array([float(c[k]) for c in configs], np.float32) for k in names}
    return {k: np.array([float(dict(DEFAULTS, **c)[k]) for c in configs], np.float32)
            for k in ("learning_rate", "weight_decay")}


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def config_flops(config: Config, data: Union[Dataset, Stream],
                 build: Optional[Build] = None) -> float:
    """Training FLOPs per example of ``config``'s network: counted analytically for a
    zoo config (:func:`~genetic_dl.core.flops.training_flops`), by XLA's cost analysis
    of one example's forward pass (times three) for a ``build``'s learner."""
    if build is None:
        if not isinstance(data, Dataset):
            raise ValueError("a zoo config's FLOPs need an in-memory Dataset (its shapes)")
        return float(training_flops(config_to_spec(config), data.feature_shape, data.out_dim))
    learner, optimizer = build(config)
    pop = init_population(jax.random.key(0), learner, data, 1, optimizer,
                          built_hparams([config], optimizer))
    one = index_members(pop, 0)
    x = jax.ShapeDtypeStruct((1,) + tuple(pop.feature_shape), np.dtype(pop.feature_dtype))
    return TRAINING_PASSES * traced_flops(
        lambda p, c, h, xs: learner.apply_eval(p, c, xs, h), one.params, one.collections,
        one.hparams, x)
