"""The networks a search keeps: the best one, and the Lamarckian archive.

With Lamarckian inheritance a config whose structure (spec and optimizer) was
trained before starts from the best weights trained for that structure, so a
child inherits what its ancestors learned and the weight and structure
searches combine (Lamarck's inheritance of acquired traits, as in the
Lamarckian evolution of neural networks of Ku, Mak & Siu, 2000). The archive is
an immutable value: adding a network returns a new archive.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import serialization

from ..core.models import ModelSpec, spec_from_dict, spec_to_dict
from ..core.optimizers import OptimizerLike
from ..core.padding import embed
from ..core.population import Population

# A network's structure: its zoo spec (``None`` for a ``build``'s learner) and optimizer.
Structure = Tuple[Optional[ModelSpec], OptimizerLike]


@dataclasses.dataclass(frozen=True)
class TrainedArchive:
    """Best network so far and, per structure, the best weights trained for it.

    Attributes:
      best: ``{"fitness", "config", "spec", "params"}`` of the fittest network
        (``{}`` before any finished).
      structures: ``{(spec, optimizer): {"fitness", "params"}}``.
    """
    best: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    structures: Mapping[Structure, Mapping[str, Any]] = dataclasses.field(
        default_factory=dict)

    def wants(self, fitness: float, structure: Structure,
              lamarckian: bool) -> Tuple[bool, bool]:
        """Whether a network of ``fitness`` would be the new best, and the new
        best of its ``structure`` (only when ``lamarckian``)."""
        better = fitness > self.best.get("fitness", -math.inf)
        archive = lamarckian and fitness > self.structures.get(structure, {}).get(
            "fitness", -math.inf)
        return better, archive

    def add(self, fitness: float, config: Mapping[str, Any], structure: Structure, params: Any,
            *, as_best: bool, as_structure: bool) -> "TrainedArchive":
        """A new archive holding the network as the best and/or its structure's best;
        ``structure`` is ``(spec, optimizer)``."""
        best, structures = self.best, self.structures
        if as_best:
            best = {"fitness": float(fitness), "config": config, "spec": structure[0],
                    "params": params}
        if as_structure:
            structures = {**structures, structure: {"fitness": float(fitness), "params": params}}
        return TrainedArchive(best, structures)

    def inherit(self, population: Population, specs: Sequence[ModelSpec],
                optimizer: OptimizerLike) -> Population:
        """``population`` with each member whose structure is archived starting from
        that structure's best weights (embedded in the padded shape when widths
        are per member)."""
        params = population.params
        for i, spec in enumerate(specs):
            saved = self.structures.get((spec, optimizer))
            if saved is None:
                continue
            member = jax.tree_util.tree_map(lambda x, i=i: x[i], params)
            start = embed(spec, saved["params"], member) if "widths" in population.hparams \
                else saved["params"]
            params = jax.tree_util.tree_map(lambda x, y, i=i: x.at[i].set(y), params, start)
        return dataclasses.replace(population, params=params)

    def state_dict(self) -> Dict[str, Any]:
        """JSON (``best``, ``archive``) plus ``arrays`` of params, for checkpoints."""
        arrays: Dict[str, Any] = {}
        archive: List[Dict[str, Any]] = []
        if self.best:
            arrays["best"] = serialization.to_state_dict(self.best["params"])
        for i, ((spec, optimizer), saved) in enumerate(self.structures.items()):
            archive.append({"spec": spec_to_dict(spec) if spec is not None else None,
                            "optimizer": optimizer, "fitness": saved["fitness"]})
            arrays[f"archive_{i}"] = serialization.to_state_dict(saved["params"])
        best = {k: (spec_to_dict(v) if k == "spec" and v is not None else v)
                for k, v in self.best.items() if k != "params"}
        return {"best": best, "archive": archive, "arrays": arrays}

    @staticmethod
    def from_state_dict(state: Mapping[str, Any]) -> "TrainedArchive":
        """The archive :meth:`state_dict` wrote (params come back as plain nested dicts)."""
        arrays = state.get("arrays", {})
        best: Dict[str, Any] = {}
        if state["best"]:
            spec = state["best"]["spec"]
            best = dict(state["best"], spec=spec and spec_from_dict(spec),
                        params=_as_jax(arrays["best"]))
        structures: Dict[Structure, Mapping[str, Any]] = {
            (a["spec"] and spec_from_dict(a["spec"]), a["optimizer"]): {
                "fitness": a["fitness"], "params": _as_jax(arrays[f"archive_{i}"])}
            for i, a in enumerate(state["archive"])}
        return TrainedArchive(best, structures)


def _as_jax(tree: Any) -> Any:
    return jax.tree_util.tree_map(jnp.asarray, tree)
