"""Checkpoints of the weight-GA loop and of searches: one msgpack file each, no pickle.

A checkpoint holds the population (params, collections, optimizer states,
hyperparameters, member keys, ids), the GA's key, the history, the lineage, the
best member and the hall of fame (params, collections and hyperparameters each)
and the run's resolved options. Files are written atomically (temp + fsync +
rename) as ``checkpoints/ckpt_GGGGG.msgpack``, keeping the last two, so a
killed run never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from ..core.learner import Learner
from ..core.models import ModelSpec
from ..core.optimizers import OptimizerLike
from ..core.population import Population, index_members, init_population
from .rundir import write_bytes
from ..weights import LoopState
from ..weights.rules.de import DEState
from ..weights.rules.ga import GAState

KEEP = 2
# The weight-GA checkpoint's layout; a file of another format is refused.
FORMAT = 3
# The arrays of one best or hall-of-fame member, each saved under its own key.
MEMBER_ARRAYS = ("params", "collections", "hparams")


def _path(folder: str, generation: int) -> str:
    return os.path.join(folder, f"ckpt_{generation:05d}.msgpack")


def _write(folder: str, generation: int, tree: Mapping[str, Any]) -> str:
    path = _path(folder, generation)
    write_bytes(path, serialization.msgpack_serialize(tree))
    for old in sorted(glob.glob(os.path.join(folder, "ckpt_*.msgpack")))[:-KEEP]:
        os.unlink(old)
    return path


def save_search(folder: str, rounds: int, evaluations: List[Dict[str, Any]],
                objective_state: Dict[str, Any],
                run_options: Dict[str, Any]) -> str:
    """Writes a search's checkpoint after ``rounds`` rounds, atomically.

    A search is resumed by replaying its evaluations (see ``run_search(replay=...)``),
    so the checkpoint holds them, the trainer's state (best network, archive,
    group counter) and the run's options.

    Args:
      folder: the checkpoints folder.
      rounds: rounds completed.
      evaluations: ``SearchResult.evaluations`` so far.
      objective_state: ``TrainerObjective.state_dict()``.
      run_options: resolved options of the run (checked on resume).
    """
    arrays = objective_state.pop("arrays", {})
    meta = {"round": rounds, "evaluations": evaluations, "objective": objective_state,
            "options": run_options, "format": 1, "kind": "search"}
    return _write(folder, rounds, {"meta": json.dumps(meta), "arrays": arrays})


def load_search(path: str) -> Dict[str, Any]:
    """Reads a search checkpoint: ``{round, evaluations, objective, options}``.

    Raises:
      ValueError: the file is corrupt or is not a search checkpoint.
    """
    try:
        with open(path, "rb") as f:
            tree = serialization.msgpack_restore(f.read())
        meta = json.loads(tree["meta"])
        if meta.get("kind") != "search":
            raise ValueError("not a search checkpoint")
        meta["objective"]["arrays"] = tree["arrays"]
        return meta
    except Exception as err:  # msgpack raises its own exception types for garbage
        raise ValueError(f"checkpoint {path!r} is corrupt ({type(err).__name__}); delete it "
                         f"to resume from the previous checkpoint") from err


def save(folder: str, state: LoopState, run_options: Dict[str, Any]) -> str:
    """Writes ``state`` (and the run's options) atomically; returns the file's path."""
    meta = {"generation": state.generation, "spent": state.spent, "history": state.history,
            "lineage": [list(x) for x in state.lineage],
            "best": {k: v for k, v in state.best.items() if k not in MEMBER_ARRAYS},
            "options": run_options,
            "hall": [{k: v for k, v in h.items() if k not in MEMBER_ARRAYS} for h in state.hall],
            "format": FORMAT}
    tree = {"meta": json.dumps(meta), "key": np.asarray(state.key),
            "population": serialization.to_state_dict(jax.device_get(state.population)),
            "best": _member_arrays(state.best) if state.best.get("params") else {},
            "hall": {str(i): _member_arrays(h) for i, h in enumerate(state.hall)}}
    if isinstance(state.rule_state, GAState):  # the GA's self-adaptive scales
        tree["ga_state"] = {"mutation_scale": np.asarray(state.rule_state.mutation_scale)}
    elif isinstance(state.rule_state, DEState):  # DE's evaluated targets
        targets = state.rule_state
        tree["de_state"] = {
            "population": serialization.to_state_dict(jax.device_get(targets.population)),
            "fitness": np.asarray(targets.fitness),
            "metrics": {k: np.asarray(v) for k, v in targets.metrics.items()}}
    elif state.rule_state is not None:
        raise TypeError(f"no checkpoint format for a rule state of type "
                        f"{type(state.rule_state).__name__}")
    return _write(folder, state.generation, tree)


def _member_arrays(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A best or hall-of-fame record's arrays as a state dict."""
    params, collections = jax.device_get((record["params"], record.get("collections", {})))
    return {"params": serialization.to_state_dict(params),
            "collections": serialization.to_state_dict(collections),
            "hparams": {k: np.asarray(v) for k, v in record.get("hparams", {}).items()}}


def _restored(saved: Mapping[str, Any], template: Population) -> Dict[str, Any]:
    """A record's arrays read back in the structure of ``template``'s member 0."""
    like = index_members((template.params, template.collections), 0)
    arrays = tuple(serialization.from_state_dict(t, saved[k])
                   for t, k in zip(like, ("params", "collections")))
    _check_shapes(arrays, like)
    return {"params": arrays[0], "collections": arrays[1],
            "hparams": {k: np.asarray(v) for k, v in saved["hparams"].items()}}


def latest(folder: str) -> Optional[str]:
    """The newest checkpoint file in ``folder``, or ``None``."""
    files = sorted(glob.glob(os.path.join(folder, "ckpt_*.msgpack")))
    return files[-1] if files else None


def options(path: str) -> Dict[str, Any]:
    """The resolved options of the run that wrote checkpoint ``path``."""
    try:
        with open(path, "rb") as f:
            return json.loads(serialization.msgpack_restore(f.read())["meta"])["options"]
    except Exception as err:  # msgpack raises its own exception types for garbage
        raise ValueError(f"checkpoint {path!r} is corrupt ({type(err).__name__}); delete it "
                         f"to resume from the previous checkpoint") from err


class _OtherFormat(ValueError):
    """A readable checkpoint of another format."""


def load(path: str, template: Population) -> Tuple[LoopState, Dict[str, Any]]:
    """Reads a checkpoint into a :class:`LoopState` shaped like ``template``.

    Args:
      path: the checkpoint file.
      template: a population built with the run's options (gives the structure).

    Returns:
      ``(state, options)``.

    Raises:
      ValueError: the file is corrupt, of another format, or was written by a run of
        another shape.
    """
    try:
        with open(path, "rb") as f:
            tree = serialization.msgpack_restore(f.read())
        meta = json.loads(tree["meta"])
        if meta.get("format") != FORMAT:
            raise _OtherFormat(f"checkpoint {path!r} has format {meta.get('format')}, this "
                               f"version reads format {FORMAT}: resume it with the version that "
                               f"wrote it, or start a new run directory")
        population = serialization.from_state_dict(template, tree["population"])
        best = dict(meta["best"], params=None, collections={}, hparams={})
        if tree["best"]:
            best.update(_restored(tree["best"], template))
        rule_state: Union[GAState, DEState, None] = None
        if "ga_state" in tree:
            rule_state = GAState(jnp.asarray(tree["ga_state"]["mutation_scale"]))
        elif "de_state" in tree:
            rule_state = DEState(
                serialization.from_state_dict(template, tree["de_state"]["population"]),
                jnp.asarray(tree["de_state"]["fitness"]),
                {k: jnp.asarray(v) for k, v in tree["de_state"]["metrics"].items()})
        hall = [dict(h, **_restored(tree["hall"][str(i)], template))
                for i, h in enumerate(meta["hall"])]
        _check_shapes(population, template)
    except _OtherFormat:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {path!r} is corrupt or from a run of another shape "
                         f"({type(err).__name__}: {str(err)[:200]}); delete it to resume from "
                         f"the previous checkpoint, or start a new run directory") from err
    except Exception as err:  # msgpack raises its own exception types for garbage
        raise ValueError(f"checkpoint {path!r} is corrupt ({type(err).__name__}); delete it "
                         f"to resume from the previous checkpoint") from err
    state = LoopState(generation=meta["generation"], population=population,
                      key=jnp.asarray(tree["key"]), spent=meta["spent"],
                      history=meta["history"],
                      lineage=[tuple(x) for x in meta["lineage"]], best=best, rule_state=rule_state,
                      hall=hall)
    return state, meta["options"]


def _check_shapes(arrays: Any, template: Any) -> None:
    for a, b in zip(jax.tree_util.tree_leaves(arrays), jax.tree_util.tree_leaves(template)):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"array of shape {np.shape(a)} where the run expects {np.shape(b)}")


def save_population(path: str, population: Population) -> str:
    """Writes every array of ``population`` to one msgpack file, atomically.

    Params, mutable collections, optimizer states, hyperparameters, member keys,
    ids and failure flags; :func:`load_population` reads it back for the same
    learner (and optimizer).

    Returns:
      ``path``.
    """
    optimizer = population.optimizer if isinstance(population.optimizer, str) else None
    meta = {"size": population.size, "feature_shape": list(population.feature_shape),
            "out_dim": population.out_dim, "optimizer": optimizer,
            "feature_dtype": population.feature_dtype}
    tree = {"meta": json.dumps(meta),
            "population": serialization.to_state_dict(jax.device_get(population))}
    write_bytes(path, serialization.msgpack_serialize(tree))
    return path


def load_population(path: str, learner: Union[Learner, ModelSpec],
                    optimizer: Optional[OptimizerLike] = None) -> Population:
    """Reads a :func:`save_population` file into a population of ``learner``.

    Args:
      path: the file.
      learner: the :class:`~genetic_dl.Learner` (or zoo spec) the population
        was built with.
      optimizer: the optimizer it was built with; a named optimizer is read
        from the file, an optimizer function must be passed again.

    Raises:
      ValueError: the file is corrupt, was written for another model or
        optimizer, or needs ``optimizer=``.
    """
    try:
        with open(path, "rb") as f:
            tree = serialization.msgpack_restore(f.read())
        meta = json.loads(tree["meta"])
        saved = tree["population"]
    except Exception as err:  # msgpack raises its own exception types for garbage
        raise ValueError(f"population file {path!r} is unreadable ({type(err).__name__}): "
                         f"write it again with save_population") from err
    optimizer = optimizer or meta["optimizer"]
    if optimizer is None:
        raise ValueError(f"the population in {path!r} was trained with an optimizer function: "
                         f"pass the same one, load_population(path, learner, optimizer=fn)")
    try:
        hp = {k: np.asarray(v) for k, v in saved["hparams"].items()}
        template = init_population(jax.random.key(0), learner,
                                   (tuple(meta["feature_shape"]), meta["out_dim"],
                                    meta.get("feature_dtype", "float32")),
                                   meta["size"], optimizer, hp)
        population = serialization.from_state_dict(template, saved)
        _check_shapes(population, template)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"population file {path!r} does not fit this learner and optimizer "
                         f"({type(err).__name__}: {str(err)[:200]}): load it with the ones it "
                         f"was trained with") from err
    return population
