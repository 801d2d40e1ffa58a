"""The bundled trainer as a search objective: configs of one shape train as one population.

Configs that share a static shape (model family and layer count, activation,
optimizer, batch size) train together as one vmapped population, with
per-member learning rate, weight decay, dropout and layer widths as traced
values (widths by padding and masking, :mod:`genetic_dl.padding`). A group
trains one epoch per call, so one compiled program serves every epoch count;
members leave the group as they reach their own epochs. Group sizes are
rounded up to powers of two (the extra members are discarded) so that sizes
repeat and hit the jit cache. Budget cost is network-epochs.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from .data import Dataset
from .metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, compute_metrics
from .models import (CNNSpec, MLPSpec, ModelSpec, RNNSpec, build_model, count_params,
                     spec_from_dict, spec_to_dict)
from .padding import embed, member_widths, pad_spec, padded_width, rescale_init, shrink, widths_of
from .population import init_population, take
from .search import Config, Objective
from .stream import Stream
from .train import evaluate, predict, split_metrics, train

DEFAULTS = {"learning_rate": 1e-3, "batch_size": 64, "epochs": 10, "dropout": 0.0,
            "weight_decay": 0.0, "optimizer": "adam", "family": "mlp", "layers": 2,
            "activation": "relu", "kernel_size": 3, "rnn_cell": "gru", "rnn_hidden": 64,
            "rnn_layers": 1}


# Shapes trained before the in-memory jit caches are dropped (the disk cache, if on, keeps them).
MAX_CACHED_SHAPES = 128


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
      pad_widths: MLPs (CNNs) of one layer count train in one padded shape with
        per-member unit masks (:mod:`genetic_dl.padding`): one compile serves
        every width. Off: each distinct width compiles its own program.
      lamarckian: a config whose structure (spec and optimizer) was trained
        before starts from the best weights trained for that structure, so a
        child inherits what its ancestors learned (the weight and structure
        searches combined); otherwise every config starts from a fresh init.
      build: ``build(config) -> (learner, optimizer)``: search over your own
        model family (a :class:`~genetic_dl.Learner` and a named optimizer or
        an optimizer function). Configs with equal learners, optimizers and
        batch sizes train as one population; every numeric gene of a config
        is a traced per-member hyperparameter the optimizer function may read
        (a named optimizer reads ``learning_rate`` and ``weight_decay``).
        ``metric`` is then any of the learner's metrics, in its direction.
        Without ``build`` the configs are the zoo's (:func:`config_to_spec`).
    """
    data: Union[Dataset, Stream]
    seed: int = 0
    metric: str = "accuracy"
    composite: Optional[Tuple[float, float, float]] = None
    noise_sigma: float = 0.1
    multi_objective: Optional[str] = None
    max_group: int = 64
    pad_widths: bool = False
    lamarckian: bool = False
    best: Dict[str, Any] = dataclasses.field(default_factory=dict)
    archive: Dict[Any, Any] = dataclasses.field(default_factory=dict)
    _shapes: set = dataclasses.field(default_factory=set, repr=False)
    groups_trained: int = 0
    build: Optional[Callable[[Config], Tuple[Any, Any]]] = None

    def __post_init__(self):
        if isinstance(self.data, Stream) and self.build is None:
            raise ValueError("a Stream trains your own learner: pass build=config -> (learner, "
                             "optimizer); the zoo's configs need an in-memory Dataset")
        if self.build is not None:
            unsupported = [name for name in ("composite", "multi_objective", "pad_widths",
                                             "lamarckian") if getattr(self, name)]
            if unsupported:
                raise ValueError(f"{', '.join(unsupported)} work with the zoo's configs only: "
                                 f"leave them unset with build=")
        elif self.metric not in self._zoo_metrics():
            valid = self._zoo_metrics()
            raise ValueError(f"unknown metric {self.metric!r} for {self.data.task}: choose one "
                             f"of {', '.join(valid)}")
        if self.multi_objective not in (None, "params"):
            raise ValueError(f"unknown multi_objective {self.multi_objective!r}: use 'params'")

    def _zoo_metrics(self) -> Tuple[str, ...]:
        if self.data.is_classification:
            return CLASSIFICATION_METRICS
        return REGRESSION_METRICS

    def cost(self, config: Config) -> float:
        """Network-epochs: the config's epochs."""
        return float(config.get("epochs", DEFAULTS["epochs"]))

    def _group_key(self, config: Config):
        c = dict(DEFAULTS, **config)
        # a Stream's batches are its own: the batch_size gene does not split groups there
        batch = int(min(c["batch_size"], len(self.data.y_train))) \
            if isinstance(self.data, Dataset) else 0
        if self.build is not None:
            learner, optimizer = self.build(config)
            return learner, optimizer, batch
        spec = config_to_spec(config)
        shape = pad_spec(spec, 1) if self.pad_widths else spec
        return shape, c["optimizer"], batch

    def evaluate(self, configs: List[Config]) -> List[Any]:
        """Trains the configs, grouped by shape; returns their fitness in order."""
        out: List[Any] = [None] * len(configs)
        groups: Dict[Any, List[int]] = {}
        for i, c in enumerate(configs):
            groups.setdefault(self._group_key(c), []).append(i)
        self._shapes.update(groups)
        if len(self._shapes) > MAX_CACHED_SHAPES:
            # Every shape keeps compiled programs alive; thousands exhaust the memory maps
            # XLA's CPU code lives in ("LLVM compilation error: Cannot allocate memory").
            jax.clear_caches()
            self._shapes = set(groups)
        for (_, optimizer, batch), members in groups.items():
            for start in range(0, len(members), self.max_group):
                chunk = members[start:start + self.max_group]
                for i, f in zip(chunk, self._train_group(optimizer, batch,
                                                         [configs[i] for i in chunk])):
                    out[i] = f
        return out

    def _init_group(self, optimizer, configs, size):
        """The group's population of ``size`` >= len(configs) members (extras repeat the last)."""
        configs = list(configs) + [configs[-1]] * (size - len(configs))
        if self.build is not None:
            return self._init_built(optimizer, configs, size)
        specs = [config_to_spec(c) for c in configs]
        spec = specs[0]
        padded = self.pad_widths and bool(widths_of(spec))
        if padded:
            spec = pad_spec(spec, padded_width(specs))
        hp = {k: np.array([float(dict(DEFAULTS, **c)[k]) for c in configs], np.float32)
              for k in ("learning_rate", "weight_decay")}
        if spec.dropout > 0:
            hp["dropout"] = np.array([float(c.get("dropout", 0.0)) for c in configs], np.float32)
        if padded:
            hp["widths"] = member_widths(specs)
        key = jax.random.fold_in(jax.random.key(self.seed), self.groups_trained)
        self.groups_trained += 1
        pop = init_population(key, spec, self.data, size, optimizer, hp)
        if "widths" in hp:
            pop = pop.replace(params=rescale_init(spec, pop.params, hp["widths"]))
        if self.lamarckian:
            pop = self._inherit(pop, specs, optimizer)
        return pop, specs

    def _init_built(self, optimizer, configs, size):
        """A group of ``build``'s learner: numeric genes become traced hyperparameters."""
        learner = self.build(configs[0])[0]
        if callable(optimizer):
            names = sorted(k for k, v in configs[0].items() if _numeric(v)
                           and k not in ("epochs", "batch_size"))
            hp = {k: np.array([float(c[k]) for c in configs], np.float32) for k in names}
        else:
            hp = {k: np.array([float(dict(DEFAULTS, **c)[k]) for c in configs], np.float32)
                  for k in ("learning_rate", "weight_decay")}
        key = jax.random.fold_in(jax.random.key(self.seed), self.groups_trained)
        self.groups_trained += 1
        return init_population(key, learner, self._shapes_of_data(), size, optimizer,
                               hp), [None] * size

    def _shapes_of_data(self):
        """What :func:`init_population` needs of the data: the Dataset, or a Stream's
        ``(feature_shape, 0)`` read from its first validation batch."""
        if isinstance(self.data, Dataset):
            return self.data
        first = next(iter(self.data.batches("val")), None)
        if first is None:
            raise ValueError("the Stream's val split yielded no batch: give it at least one")
        return tuple(np.shape(first["x"])[1:]), 0

    def _inherit(self, pop, specs, optimizer):
        """Lamarckian start: a config whose structure was trained before starts from the
        best trained weights of that structure (its fittest ancestor of that shape)."""
        params = pop.params
        for i, s in enumerate(specs):
            saved = self.archive.get((s, optimizer))
            if saved is None:
                continue
            member = jax.tree_util.tree_map(lambda x, i=i: x[i], params)
            start = embed(s, saved["params"], member) if "widths" in pop.hparams \
                else saved["params"]
            params = jax.tree_util.tree_map(lambda x, y, i=i: x.at[i].set(y), params, start)
        return pop.replace(params=params)

    def _train_group(self, optimizer, batch, configs):
        """Trains one group epoch by epoch: one compiled program serves every epoch count,
        and the population shrinks (by powers of two) as members reach their epochs."""
        epochs = np.array([int(dict(DEFAULTS, **c)["epochs"]) for c in configs])
        pop, specs = self._init_group(optimizer, configs, _bucket(len(configs)))
        slots = np.arange(pop.size)  # slot j of pop holds config slots[j] (>= n: padding)
        value = np.full(len(configs), np.nan)
        trained: List[Any] = [None] * len(configs)
        for epoch in range(1, int(epochs.max()) + 1):
            pop, hist = train(pop, self.data, 1, batch_size=batch)
            done = [j for j, c in enumerate(slots) if c < len(configs) and epochs[c] == epoch]
            if done:
                fit = self._fitness(pop, epoch, hist)
                for j in done:
                    value[slots[j]] = fit[j]
                    trained[slots[j]] = j, pop
            live = [j for j, c in enumerate(slots) if c < len(configs) and epochs[c] > epoch]
            if live and _bucket(len(live)) < pop.size:
                keep = live + [live[-1]] * (_bucket(len(live)) - len(live))
                pop, slots = take(pop, np.asarray(keep)), slots[keep]
        self._record(configs, value, trained, specs, optimizer)
        if self.multi_objective == "params":
            return [(float(v), -float(_count(s, self.data))) for v, s in zip(value, specs)]
        return [float(v) for v in value]

    def _fitness(self, pop, epochs, hist) -> np.ndarray:
        """Each member's fitness (NaN: failed) after ``epochs`` epochs."""
        # The training program already scored the validation split after the epoch; reading
        # that saves compiling an evaluation program per shape (a second or more each).
        score = ("accuracy" if self.data.is_classification else "r2") if pop.spec is not None \
            else pop.learner.score
        from_hist = {"loss": "val_loss", score: "val_score"}
        if self.metric in from_hist:
            value = np.asarray(hist[from_hist[self.metric]][:, -1], np.float64)
        else:
            metrics = evaluate(pop, self.data, "val")
            if self.metric not in metrics:
                raise ValueError(f"unknown metric {self.metric!r}: the learner reports "
                                 f"{', '.join(metrics)}")
            value = np.asarray(metrics[self.metric], np.float64)
        value = value if pop.learner.maximize(self.metric) else -value
        value = np.where(np.asarray(pop.failed) | ~np.isfinite(value), np.nan, value)
        if self.composite is not None:
            alpha, beta, gamma = self.composite
            params = np.array([_count(s, self.data) for s in self._member_specs(pop)], np.float64)
            gflop = 6.0 * params * len(self.data.y_train) * epochs / 1e9
            robust = self._noisy_accuracy(pop) if gamma else 0.0
            value = alpha * value - beta * gflop + gamma * robust
        return value

    @staticmethod
    def _member_specs(pop):
        if "widths" not in pop.hparams:
            return [pop.spec] * pop.size
        attr = "hidden" if isinstance(pop.spec, MLPSpec) else "filters"
        return [dataclasses.replace(pop.spec, **{attr: tuple(int(v) for v in w)})
                for w in np.asarray(pop.hparams["widths"])]

    def _record(self, configs, value, trained, specs, optimizer):
        """Keeps the best network (and, when Lamarckian, the best per structure)."""
        for c, (v, where, spec) in enumerate(zip(value, trained, specs)):
            if where is None or not np.isfinite(v):
                continue
            better = v > self.best.get("fitness", -math.inf)
            archive = self.lamarckian and v > self.archive.get(
                (spec, optimizer), {}).get("fitness", -math.inf)
            if not better and not archive:
                continue
            j, pop = where
            params = jax.device_get(pop.member(j))
            if self.build is not None:
                params = {"params": params, "collections": jax.device_get(
                    jax.tree_util.tree_map(lambda x, j=j: x[j], pop.collections))}
            if "widths" in pop.hparams:
                spec, params = shrink(pop.spec, params, np.asarray(pop.hparams["widths"][j]))
            if better:
                self.best = {"fitness": float(v), "config": configs[c], "spec": spec,
                             "params": params}
            if archive:
                self.archive[(spec, optimizer)] = {"fitness": float(v), "params": params}

    def trained(self) -> Dict[str, Any]:
        """The best model trained so far: ``{"fitness", "config", "spec", "params"}``."""
        return dict(self.best)

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resumed search needs from the trainer, as JSON plus ``arrays``."""
        arrays, archive = {}, []
        if self.best:
            arrays["best"] = serialization.to_state_dict(self.best["params"])
        for i, ((spec, optimizer), saved) in enumerate(self.archive.items()):
            archive.append({"spec": spec_to_dict(spec), "optimizer": optimizer,
                            "fitness": saved["fitness"]})
            arrays[f"archive_{i}"] = serialization.to_state_dict(saved["params"])
        best = {k: (spec_to_dict(v) if k == "spec" and v is not None else v)
                for k, v in self.best.items() if k != "params"}
        return {"best": best, "groups_trained": self.groups_trained, "archive": archive,
                "arrays": arrays}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores :meth:`state_dict` output (params come back as plain nested dicts)."""
        arrays = state.get("arrays", {})
        self.groups_trained = int(state["groups_trained"])
        self.best = {}
        if state["best"]:
            spec = state["best"]["spec"]
            self.best = dict(state["best"], spec=spec and spec_from_dict(spec),
                             params=_as_jax(arrays["best"]))
        self.archive = {(spec_from_dict(a["spec"]), a["optimizer"]): {
            "fitness": a["fitness"], "params": _as_jax(arrays[f"archive_{i}"])}
            for i, a in enumerate(state["archive"])}

    def _noisy_accuracy(self, pop) -> np.ndarray:
        x = self.data.model_inputs(self.data.x_val)
        noise = np.random.default_rng(self.seed).normal(0.0, self.noise_sigma, x.shape)
        out = predict(pop, jnp.asarray(x + noise, jnp.float32))
        return np.asarray(jax.vmap(lambda o: compute_metrics(o, self.data.y_val, True)[
            "accuracy"])(out)) if self.data.is_classification else np.zeros(pop.size)

    def test_metrics(self) -> Dict[str, float]:
        """Test metrics of the best network trained so far (for the final report only)."""
        if not self.best:
            return {}
        if self.build is not None:
            learner, optimizer = self.build(self.best["config"])
            hp = self._init_built(optimizer, [self.best["config"]], 1)[0].hparams
            pop = init_population(jax.random.key(0), learner, self._shapes_of_data(), 1,
                                  optimizer, hp)
            saved = self.best["params"]
            pop = pop.replace(
                params=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], saved["params"]),
                collections=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None],
                                                   saved["collections"]))
            return {k: float(v[0]) for k, v in evaluate(pop, self.data, "test").items()}
        model = build_model(self.best["spec"], self.data.feature_shape, self.data.out_dim)
        return split_metrics(model, self.best["params"], self.data, "test")


def _numeric(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _bucket(n: int) -> int:
    """The power of two >= n: group sizes repeat, so compiled programs are reused."""
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def _count(spec, data: Dataset) -> int:
    return _count_params(spec, tuple(data.feature_shape), int(data.out_dim))


@functools.lru_cache(maxsize=1024)
def _count_params(spec, feature_shape, out_dim) -> int:
    """Parameter count of ``spec`` (its true, unpadded widths)."""
    model = build_model(spec, feature_shape, out_dim)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + feature_shape))
    return count_params(shapes)


def _as_jax(tree):
    return jax.tree_util.tree_map(jnp.asarray, tree)
