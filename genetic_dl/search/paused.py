"""Networks paused between the rungs of multi-fidelity search, to be continued.

A network that trained for a rung's epochs is kept as its member of the
population it trained in (params, optimizer state, PRNG key, hyperparameters,
on the host), keyed by its candidate: its config without ``epochs``. A later
rung of the same candidate continues from it, so promotion never retrains from
scratch. The store is an immutable value holding at most ``limit`` networks,
the least recently trained dropped first (a dropped one, if promoted, trains
from scratch and is charged for it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
from flax import serialization

from ..core.models import ModelSpec, spec_from_dict, spec_to_dict
from ..core.population import Population
from .objective import Config
from .space import ConfigKey, config_key


def candidate_key(config: Mapping[str, Any]) -> ConfigKey:
    """The identity of a config's network, whatever its epochs."""
    return config_key({k: v for k, v in config.items() if k != "epochs"})


@dataclasses.dataclass(frozen=True)
class Paused:
    """One network stopped after ``epochs`` epochs.

    Attributes:
      epochs: epochs it trained.
      member: a population of one (host arrays): the network and its training state.
      batch: the minibatch size it trained with.
      config: its config (for checkpoints: what rebuilds its population's shape).
    """
    epochs: int
    member: Population
    batch: int
    config: Config


@dataclasses.dataclass(frozen=True)
class PausedStore:
    """Paused networks by candidate, least recently trained first.

    Attributes:
      limit: most networks held.
      held: ``{candidate key: Paused}`` in training order.
    """
    limit: int = 128
    held: Mapping[ConfigKey, Paused] = dataclasses.field(default_factory=dict)

    def start(self, config: Mapping[str, Any], epochs: int) -> Optional[Paused]:
        """The paused network that training ``config`` to ``epochs`` continues, if any
        (one that trained fewer epochs)."""
        paused = self.held.get(candidate_key(config))
        return paused if paused is not None and paused.epochs < epochs else None

    def add(self, networks: Sequence[Paused]) -> "PausedStore":
        """The store with ``networks`` held (replacing their candidates' older ones)."""
        held = dict(self.held)
        for paused in networks:
            key = candidate_key(paused.config)
            held.pop(key, None)
            held[key] = paused
        keep = list(held)[max(0, len(held) - self.limit):]
        return dataclasses.replace(self, held={k: held[k] for k in keep})

    def state_dict(self) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        """JSON entries and their arrays (``paused_i``), for checkpoints."""
        entries, arrays = [], {}
        for i, paused in enumerate(self.held.values()):
            spec = paused.member.spec
            entries.append({"epochs": paused.epochs, "batch": paused.batch,
                            "config": paused.config,
                            "spec": spec_to_dict(spec) if spec is not None else None})
            arrays[f"paused_{i}"] = serialization.to_state_dict(paused.member)
        return entries, arrays

    @staticmethod
    def from_state_dict(limit: int, entries: Sequence[Mapping[str, Any]],
                        arrays: Mapping[str, Any],
                        template: Callable[[Config, Optional[ModelSpec]], Population]
                        ) -> "PausedStore":
        """The store :meth:`state_dict` wrote; ``template(config, spec)`` builds a
        population of one in the shape a network of ``config`` paused in (``spec``: the
        zoo spec it trained in, ``None`` for a ``build``'s learner)."""
        networks = []
        for i, entry in enumerate(entries):
            spec = spec_from_dict(entry["spec"]) if entry["spec"] is not None else None
            member = serialization.from_state_dict(template(dict(entry["config"]), spec),
                                                   arrays[f"paused_{i}"])
            networks.append(Paused(int(entry["epochs"]), jax.tree_util.tree_map(
                np.asarray, member), int(entry["batch"]), dict(entry["config"])))
        return PausedStore(limit).add(networks)
