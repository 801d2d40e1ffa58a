"""The bundled trainer as a search objective: configs of one shape train as one population.

Configs are grouped by shape (:mod:`genetic_dl.search.config_groups`); a group trains
one epoch per call, so one compiled program serves every epoch count, and
members leave the group as they reach their own epochs. Each candidate is
scored on the validation split (:mod:`genetic_dl.search.candidate_fitness`); the best
network, and with Lamarckian inheritance the best per structure, are kept in a
:class:`~genetic_dl.search.trained_archive.TrainedArchive`. Budget cost is
network-epochs; FLOP-epochs (network-epochs weighted by the network's training
FLOPs relative to a reference network's) are measured too. At the rungs of
multi-fidelity search a network is paused (:mod:`genetic_dl.search.paused`) and a
later rung continues it, charged only the epochs it adds.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union, cast

import jax
import jax.numpy as jnp
import numpy as np

from . import candidate_fitness
from .config_groups import (DEFAULTS, Build, built_hparams, bucket, config_flops,
                            config_to_spec, group_by, group_key, zoo_members)
from ..data import Dataset
from ..core.models import ModelSpec, build_model
from ..core.optimizers import OptimizerLike
from ..core.padding import rescale_init, shrink
from ..core.population import Population, concat, index_members, init_population, take
from .objective import Config, Objective
from .paused import Paused, PausedStore
from ..core.stream import Stream
from ..core.train import evaluate, split_metrics, train
from .trained_archive import TrainedArchive
from ..errors import check_choice


# Shapes trained before the in-memory jit caches are dropped (the disk cache, if on, keeps them).
MAX_CACHED_SHAPES = 128


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
        per-member unit masks (:mod:`genetic_dl.core.padding`): one compile serves
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
      flop_reference: the config whose network's training FLOPs per example a
        FLOP-epoch is (default: the zoo's default, an MLP of two 64-unit layers).
        With ``build`` FLOPs come from XLA's cost analysis of the forward pass,
        and FLOP-epochs are measured only when a reference is given.
      kept: the networks kept so far (best, Lamarckian archive).
      paused: networks paused between rungs (at most ``paused.limit``, 128
        by default), continued by a later rung of the same candidate.
      groups_trained: populations initialised so far (each gets its own key).
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
    kept: TrainedArchive = dataclasses.field(default_factory=TrainedArchive)
    _shapes: Set[Tuple[Any, ...]] = dataclasses.field(default_factory=set, repr=False)
    groups_trained: int = 0
    build: Optional[Build] = None
    flop_reference: Optional[Config] = None
    paused: PausedStore = dataclasses.field(default_factory=PausedStore)
    _flops: Dict[Any, float] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.build is not None:
            unsupported = [name for name in ("composite", "multi_objective", "pad_widths",
                                             "lamarckian") if getattr(self, name)]
            if unsupported:
                raise ValueError(f"{', '.join(unsupported)} work with the zoo's configs only: "
                                 f"leave them unset with build=")
        else:
            data = candidate_fitness.zoo_data(self.data)  # a Stream trains a build's learner only
            check_choice(f"metric for {data.task}", self.metric,
                         candidate_fitness.zoo_metrics(data))
        check_choice("multi_objective", self.multi_objective, (None, "params"))

    @property
    def best(self) -> Dict[str, Any]:
        """The best network so far: ``{"fitness", "config", "spec", "params"}``."""
        return dict(self.kept.best)

    @property
    def archive(self) -> Dict[Any, Any]:
        """The Lamarckian archive: ``{(spec, optimizer): {"fitness", "params"}}``."""
        return dict(self.kept.structures)

    def cost(self, config: Config) -> float:
        """Network-epochs: the config's epochs, less those of the paused network that
        training it continues."""
        epochs = _epochs(config)
        start = self.paused.start(config, epochs)
        return float(epochs - (start.epochs if start is not None else 0))

    def costs(self, config: Config) -> Dict[str, float]:
        """``network_epochs`` (:meth:`cost`) and ``flop_epochs``: network-epochs times
        the network's training FLOPs per example over ``flop_reference``'s."""
        epochs = self.cost(config)
        if self.build is not None and self.flop_reference is None:
            return {"network_epochs": epochs}
        reference = self._network_flops(self.flop_reference or {})
        return {"network_epochs": epochs,
                "flop_epochs": epochs * self._network_flops(config) / reference}

    def _network_flops(self, config: Config) -> float:
        """Training FLOPs per example of ``config``'s network (cached by its shape)."""
        shape = config_to_spec(config) if self.build is None else self.build(config)
        if shape not in self._flops:
            self._flops[shape] = config_flops(config, self.data, self.build)
        return self._flops[shape]

    def at_epochs(self, config: Config, epochs: int) -> Config:
        """``config`` with ``epochs`` epochs."""
        return dict(config, epochs=int(epochs))

    def evaluate(self, configs: List[Config]) -> List[Any]:
        """Trains the configs, grouped by shape; returns their fitness in order."""
        return self._evaluate(configs, pause=False)

    def evaluate_rung(self, configs: List[Config]) -> List[Any]:
        """As :meth:`evaluate`, pausing each network to be continued by a later rung."""
        return self._evaluate(configs, pause=True)

    def _evaluate(self, configs: List[Config], pause: bool) -> List[Any]:
        """Trains the configs (fresh ones grouped by shape, continued ones by the shape
        they paused in); returns their fitness in order."""
        out: List[Any] = [None] * len(configs)
        starts = [self.paused.start(c, _epochs(c)) for c in configs]
        groups = group_by(range(len(configs)), lambda i: self._group(configs[i], starts[i]))
        self._shapes.update(groups)
        if len(self._shapes) > MAX_CACHED_SHAPES:
            # Every shape keeps compiled programs alive; thousands exhaust the memory maps
            # XLA's CPU code lives in ("LLVM compilation error: Cannot allocate memory").
            jax.clear_caches()
            self._shapes = set(groups)
        for (_, optimizer, batch, start), members in groups.items():
            for first in range(0, len(members), self.max_group):
                chunk = members[first:first + self.max_group]
                group = [configs[i] for i in chunk]
                specs: Sequence[Optional[ModelSpec]]
                if start:
                    pop = _stacked([cast(Paused, starts[i]).member for i in chunk])
                    specs = [config_to_spec(c) if self.build is None else None for c in group]
                else:
                    pop, specs = self._init_group(optimizer, group, bucket(len(group)))
                for i, f in zip(chunk, self._train_group(pop, specs, optimizer, batch, group,
                                                         start, pause)):
                    out[i] = f
        return out

    def _group(self, config: Config, start: Optional[Paused]) -> Tuple[Any, ...]:
        """What configs that train as one population share: the group key and the epochs
        they start from (a continued network's group is the one it paused in)."""
        if start is None:
            return (*group_key(config, self.data, pad_widths=self.pad_widths, build=self.build),
                    0)
        member = start.member
        return member.learner, member.optimizer, start.batch, start.epochs

    def _next_key(self) -> jax.Array:
        """A fresh key for the next group's initialisation."""
        key = jax.random.fold_in(jax.random.key(self.seed), self.groups_trained)
        self.groups_trained += 1
        return key

    def _init_group(self, optimizer: OptimizerLike, configs: Sequence[Config],
                    size: int) -> Tuple[Population, Sequence[Optional[ModelSpec]]]:
        """The group's population of ``size`` >= len(configs) members (extras repeat the
        last) and each member's zoo spec (``None`` with ``build``)."""
        configs = list(configs) + [configs[-1]] * (size - len(configs))
        if self.build is not None:
            learner = self.build(configs[0])[0]
            return init_population(self._next_key(), learner, self.data, size, optimizer,
                                   built_hparams(configs, optimizer)), [None] * size
        spec, specs, hp = zoo_members(configs, self.pad_widths,
                                      candidate_fitness.zoo_data(self.data).slot_classes)
        pop = init_population(self._next_key(), spec, self.data, size, optimizer, hp)
        if "widths" in hp:
            pop = dataclasses.replace(pop, params=rescale_init(spec, pop.params, hp["widths"]))
        if self.lamarckian:
            pop = self.kept.inherit(pop, specs, optimizer)
        return pop, specs

    def _train_group(self, pop: Population, specs: Sequence[Optional[ModelSpec]],
                     optimizer: OptimizerLike, batch: int, configs: List[Config], start: int,
                     pause: bool) -> List[Any]:
        """Trains one group epoch by epoch from ``start`` epochs: one compiled program
        serves every epoch count, and the population shrinks (by powers of two) as
        members reach their epochs; with ``pause`` each trained network is paused."""
        epochs = np.array([_epochs(c) for c in configs])
        slots = np.arange(pop.size)  # slot j of pop holds config slots[j] (>= n: padding)
        value = np.full(len(configs), np.nan)
        trained: List[Optional[Tuple[int, Population]]] = [None] * len(configs)
        for epoch in range(start + 1, int(epochs.max()) + 1):
            pop, hist = train(pop, self.data, 1, batch_size=batch)
            done = [j for j, c in enumerate(slots) if c < len(configs) and epochs[c] == epoch]
            if done:
                fit = self._fitness(pop, epoch, hist)
                for j in done:
                    value[slots[j]] = fit[j]
                    trained[slots[j]] = j, pop
            live = [j for j, c in enumerate(slots) if c < len(configs) and epochs[c] > epoch]
            if live and bucket(len(live)) < pop.size:
                keep = live + [live[-1]] * (bucket(len(live)) - len(live))
                pop, slots = take(pop, np.asarray(keep)), slots[keep]
        self._keep(configs, value, trained, specs, optimizer)
        if pause:
            self.paused = self.paused.add(_pause(configs, value, trained, epochs, batch))
        if self.multi_objective == "params":
            data = candidate_fitness.zoo_data(self.data)  # the zoo's configs: every spec is set
            return [(float(v), -float(candidate_fitness.param_count(cast(ModelSpec, s), data)))
                    for v, s in zip(value, specs)]
        return [float(v) for v in value]

    def _fitness(self, pop: Population, epochs: int, hist: Mapping[str, Any]) -> np.ndarray:
        """Each member's fitness (NaN: failed) after ``epochs`` epochs."""
        value = candidate_fitness.validation_fitness(pop, self.data, self.metric, hist)
        if self.composite is not None:
            value = candidate_fitness.composite_fitness(
                value, pop, candidate_fitness.zoo_data(self.data), epochs, self.composite,
                self.noise_sigma, self.seed)
        return value

    def _keep(self, configs: Sequence[Config], value: np.ndarray,
              trained: Sequence[Optional[Tuple[int, Population]]],
              specs: Sequence[Optional[ModelSpec]], optimizer: OptimizerLike) -> None:
        """Offers each trained config to the archive; params leave the device only
        when the archive takes them."""
        for c, (v, where, spec) in enumerate(zip(value, trained, specs)):
            if where is None or not np.isfinite(v):
                continue
            as_best, as_structure = self.kept.wants(v, (spec, optimizer), self.lamarckian)
            if not as_best and not as_structure:
                continue
            j, pop = where
            params = jax.device_get(pop.member(j))
            if self.build is not None:
                params = {"params": params, "collections": jax.device_get(
                    index_members(pop.collections, j))}
            if "widths" in pop.hparams and pop.spec is not None:  # a zoo spec's padding
                spec, params = shrink(pop.spec, params,
                                      [int(w) for w in np.asarray(pop.hparams["widths"][j])])
            self.kept = self.kept.add(v, configs[c], (spec, optimizer), params,
                                      as_best=as_best, as_structure=as_structure)

    def trained(self) -> Dict[str, Any]:
        """The best model trained so far: ``{"fitness", "config", "spec", "params"}``."""
        return self.best

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resumed search needs from the trainer, as JSON plus ``arrays``."""
        kept = self.kept.state_dict()
        paused, arrays = self.paused.state_dict()
        return {"best": kept["best"], "groups_trained": self.groups_trained,
                "archive": kept["archive"], "paused": paused,
                "arrays": {**kept["arrays"], **arrays}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores :meth:`state_dict` output (params come back as plain nested dicts)."""
        self.groups_trained = int(state["groups_trained"])
        self.kept = TrainedArchive.from_state_dict(state)
        self.paused = PausedStore.from_state_dict(self.paused.limit, state.get("paused", []),
                                                  state.get("arrays", {}), self._template)

    def _template(self, config: Config, spec: Optional[ModelSpec]) -> Population:
        """A population of one in the shape a network of ``config`` trained in (``spec``:
        the zoo spec of its group, padded or not)."""
        if self.build is not None:
            learner, optimizer = self.build(config)
            return init_population(jax.random.key(0), learner, self.data, 1, optimizer,
                                   built_hparams([config], optimizer))
        hp = zoo_members([config], self.pad_widths)[2]
        return init_population(jax.random.key(0), cast(ModelSpec, spec), self.data, 1,
                               str(dict(DEFAULTS, **config)["optimizer"]), hp)

    def test_metrics(self) -> Dict[str, float]:
        """Test metrics of the best network trained so far (for the final report only)."""
        best = self.kept.best
        if not best:
            return {}
        if self.build is not None:
            learner, optimizer = self.build(best["config"])
            pop = init_population(jax.random.key(0), learner, self.data, 1, optimizer,
                                  built_hparams([best["config"]], optimizer))
            saved = best["params"]
            pop = dataclasses.replace(
                pop,
                params=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], saved["params"]),
                collections=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None],
                                                   saved["collections"]))
            return {k: float(v[0]) for k, v in evaluate(pop, self.data, "test").items()}
        data = candidate_fitness.zoo_data(self.data)
        model = build_model(best["spec"], data.feature_shape, data.out_dim)
        return split_metrics(model, best["params"], data, "test")


def _epochs(config: Config) -> int:
    """The epochs ``config`` trains (the default's when it has no ``epochs`` gene)."""
    return int(dict(DEFAULTS, **config)["epochs"])


def _stacked(members: Sequence[Population]) -> Population:
    """Paused populations of one as one population on the device, its size a power of two
    (extra slots repeat the last member)."""
    members = list(members) + [members[-1]] * (bucket(len(members)) - len(members))
    return concat(*members)


def _pause(configs: Sequence[Config], value: np.ndarray,
           trained: Sequence[Optional[Tuple[int, Population]]], epochs: np.ndarray,
           batch: int) -> List[Paused]:
    """Each trained network that did not fail, as a :class:`Paused` on the host: one
    transfer per population it trained in."""
    rows: Dict[int, List[int]] = {}
    pops: Dict[int, Population] = {}
    for c, where in enumerate(trained):
        if where is not None and np.isfinite(value[c]):
            rows.setdefault(id(where[1]), []).append(c)
            pops[id(where[1])] = where[1]
    out = []
    for key, members in rows.items():
        slots = [cast(Tuple[int, Population], trained[c])[0] for c in members]
        host = jax.device_get(take(pops[key], np.asarray(slots)))
        for k, c in enumerate(members):
            one = jax.tree_util.tree_map(lambda x, k=k: x[k:k + 1], host)
            out.append(Paused(int(epochs[c]), one, batch, dict(configs[c])))
    return out
