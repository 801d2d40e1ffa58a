"""The bundled trainer as a search objective: configs of one shape train as one population.

Configs that share a static shape (model spec, optimizer, batch size, epochs)
train together as one vmapped population, with per-member learning rate,
weight decay and dropout as traced values. Different epoch counts form
different groups. Budget cost is network-epochs.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from .data import Dataset
from .metrics import compute_metrics
from .models import CNNSpec, MLPSpec, ModelSpec, RNNSpec, build_model, count_params
from .population import init_population
from .search import Config, Objective
from .train import evaluate, split_metrics, train

DEFAULTS = {"learning_rate": 1e-3, "batch_size": 64, "epochs": 10, "dropout": 0.0,
            "weight_decay": 0.0, "optimizer": "adam", "family": "mlp", "layers": 2,
            "activation": "relu", "kernel_size": 3, "rnn_cell": "gru", "rnn_hidden": 64,
            "rnn_layers": 1}


def config_to_spec(config: Config) -> ModelSpec:
    """The model spec of a search config (missing genes take :data:`DEFAULTS`)."""
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
    raise ValueError(f"unknown model family {c['family']!r}: use mlp, cnn or rnn")


@dataclasses.dataclass
class TrainerObjective(Objective):
    """Trains each config on ``data`` and scores it on the validation split.

    Attributes:
      data: the dataset (test is never touched here).
      seed: seed of the members' initialisation and shuffling.
      metric: validation metric maximised (``loss``/``mse`` are negated).
      composite: ``(alpha, beta, gamma)`` for fitness ``alpha A - beta T + gamma R``
        where A is the metric, T the training cost in GFLOP (6 x params x
        examples x epochs: deterministic, unlike wall time) and R the accuracy
        under gaussian input noise of std ``noise_sigma``.
      noise_sigma: input noise of the robustness term R.
      multi_objective: ``"params"`` returns ``(metric, -parameter count)``.
      max_group: most members trained at once (memory bound).
    """
    data: Dataset
    seed: int = 0
    metric: str = "accuracy"
    composite: Optional[Tuple[float, float, float]] = None
    noise_sigma: float = 0.1
    multi_objective: Optional[str] = None
    max_group: int = 64
    best: Dict[str, Any] = dataclasses.field(default_factory=dict)
    groups_trained: int = 0

    def __post_init__(self):
        if self.multi_objective not in (None, "params"):
            raise ValueError(f"unknown multi_objective {self.multi_objective!r}: use 'params'")

    def cost(self, config: Config) -> float:
        """Network-epochs: the config's epochs."""
        return float(config.get("epochs", DEFAULTS["epochs"]))

    def _group_key(self, config: Config):
        c = dict(DEFAULTS, **config)
        batch = int(min(c["batch_size"], len(self.data.y_train)))
        return config_to_spec(config), c["optimizer"], batch, int(c["epochs"])

    def evaluate(self, configs: List[Config]) -> List[Any]:
        """Trains the configs, grouped by shape; returns their fitness in order."""
        out: List[Any] = [None] * len(configs)
        groups: Dict[Any, List[int]] = {}
        for i, c in enumerate(configs):
            groups.setdefault(self._group_key(c), []).append(i)
        for (spec, optimizer, batch, epochs), members in groups.items():
            for start in range(0, len(members), self.max_group):
                chunk = members[start:start + self.max_group]
                for i, f in zip(chunk, self._train_group(spec, optimizer, batch, epochs,
                                                         [configs[i] for i in chunk])):
                    out[i] = f
        return out

    def _train_group(self, spec, optimizer, batch, epochs, configs):
        hp = {k: np.array([float(dict(DEFAULTS, **c)[k]) for c in configs], np.float32)
              for k in ("learning_rate", "weight_decay")}
        if spec.dropout > 0:
            hp["dropout"] = np.array([float(c.get("dropout", 0.0)) for c in configs], np.float32)
        key = jax.random.fold_in(jax.random.key(self.seed), self.groups_trained)
        self.groups_trained += 1
        pop = init_population(key, spec, self.data, len(configs), optimizer, hp)
        pop, _ = train(pop, self.data, epochs, batch_size=batch)
        metrics = evaluate(pop, self.data, "val")
        value = np.asarray(metrics[self.metric], np.float64)
        value = -value if self.metric in ("loss", "mse", "mae") else value
        value = np.where(np.asarray(pop.failed) | ~np.isfinite(value), np.nan, value)
        params = count_params(pop.member(0))
        if self.composite is not None:
            alpha, beta, gamma = self.composite
            gflop = 6.0 * params * len(self.data.y_train) * epochs / 1e9
            robust = self._noisy_accuracy(pop) if gamma else 0.0
            value = alpha * value - beta * gflop + gamma * robust
        best_i = int(np.nanargmax(value)) if np.isfinite(value).any() else -1
        if best_i >= 0 and value[best_i] > self.best.get("fitness", -math.inf):
            self.best = {"fitness": float(value[best_i]), "config": configs[best_i],
                         "spec": spec, "params": jax.device_get(pop.member(best_i))}
        if self.multi_objective == "params":
            return [(float(v), -float(params)) for v in value]
        return [float(v) for v in value]

    def _noisy_accuracy(self, pop) -> np.ndarray:
        x = self.data.x_val
        noise = np.random.default_rng(self.seed).normal(0.0, self.noise_sigma, x.shape)
        model = pop.model
        out = jax.vmap(lambda p: model.apply(p, jnp.asarray(x + noise, jnp.float32)))(pop.params)
        return np.asarray(jax.vmap(lambda o: compute_metrics(o, self.data.y_val, True)[
            "accuracy"])(out)) if self.data.is_classification else np.zeros(pop.size)

    def test_metrics(self) -> Dict[str, float]:
        """Test metrics of the best network trained so far (for the final report only)."""
        if not self.best:
            return {}
        model = build_model(self.best["spec"], self.data.feature_shape, self.data.out_dim)
        return split_metrics(model, self.best["params"], self.data, "test")
