"""One trained network in one file: :func:`save_model` and :func:`load_model`.

The file is msgpack (``flax.serialization``, no pickle), written atomically: the
member's params, every collection its learner keeps (e.g. ``batch_stats``), its
hyperparameters, and, for a zoo model, its spec. A zoo model loads on its own; a
user's model loads with the :class:`~genetic_dl.Learner` it was trained with,
whose variables must have the saved shapes.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, traverse_util

from ..core.learner import Learner, zoo_learner
from ..core.member import Member
from ..core.models import spec_from_dict, spec_to_dict
from ..errors import fail
from ..weights import WeightGAResult
from . import rundir

KIND = "genetic_dl.member"
FORMAT = 1


def save_model(path: str, model: Union[WeightGAResult, Member]) -> str:
    """Writes one network to ``path`` (one msgpack file), atomically.

    Args:
      path: the file to write (e.g. ``"best.msgpack"``).
      model: a :class:`~genetic_dl.WeightGAResult` (its best member is saved) or a
        :class:`~genetic_dl.Member` (``result.best_member``,
        ``gdl.population_member(pop, i)``).

    Returns:
      ``path``.
    """
    member = model.best_member if isinstance(model, WeightGAResult) else model
    if not isinstance(member, Member):
        fail(f"save_model saves a WeightGAResult or a Member, got {type(model).__name__}: "
             f"take one member with gdl.population_member(population, i)")
    if member.params is None:
        fail("the result has no best member (no member had a finite fitness): nothing to save")
    if os.path.isdir(path):
        fail(f"{path!r} is a folder: give save_model a file path, e.g. {path}/model.msgpack")
    spec = member.learner.spec if member.learner is not None else None
    meta = {"kind": KIND, "format": FORMAT, "feature_shape": list(member.feature_shape),
            "out_dim": int(member.out_dim), "feature_dtype": member.feature_dtype,
            "spec": None if spec is None else spec_to_dict(spec)}
    tree = {"meta": json.dumps(meta),
            "params": serialization.to_state_dict(jax.device_get(member.params)),
            "collections": serialization.to_state_dict(jax.device_get(member.collections)),
            "hparams": {k: np.asarray(v) for k, v in member.hparams.items()}}
    rundir.write_bytes(path, serialization.msgpack_serialize(tree))
    return path


def load_model(path: str,
               learner: Optional[Learner] = None) -> Union[Member, rundir.LoadedModel]:
    """Reads a network saved by :func:`save_model`, or a run directory's best model.

    Args:
      path: a :func:`save_model` file, or a CLI run directory (or its ``best_model``
        folder).
      learner: the :class:`~genetic_dl.Learner` a user's model was trained with;
        omitted for a zoo model, which is rebuilt from its saved spec.

    Returns:
      A :class:`~genetic_dl.Member` with its learner (``predict(x)``,
      ``evaluate(data, split)``); for a run directory, its
      :class:`~genetic_dl.app.rundir.LoadedModel`.

    Raises:
      ValueError: the file is unreadable, a user's model is loaded without
        ``learner=``, or the learner's variables differ from the saved ones.
    """
    if os.path.isdir(path):
        if learner is not None:
            fail(f"{path!r} is a run directory, whose model is a zoo model: load it without "
                 f"learner=")
        return rundir.load_model(path)
    meta, tree = _read(path)
    feature_shape, out_dim = tuple(meta["feature_shape"]), int(meta["out_dim"])
    dtype = str(meta.get("feature_dtype", "float32"))
    if learner is None:
        if meta["spec"] is None:
            fail(f"{path!r} holds a user's model: pass the learner it was trained with, "
                 f"gdl.load_model(path, learner=learner)")
        learner = zoo_learner(spec_from_dict(meta["spec"]), feature_shape, out_dim)
    params, collections = _fitted(path, tree, learner, feature_shape, dtype)
    return Member(params=params, collections=collections,
                  hparams={k: np.asarray(v) for k, v in tree["hparams"].items()},
                  learner=learner, feature_shape=feature_shape, out_dim=out_dim,
                  feature_dtype=dtype)


def _read(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(meta, arrays)`` of a :func:`save_model` file."""
    if not os.path.exists(path):
        fail(f"no model file {path!r}: give the path save_model wrote")
    meta: Any = None
    tree: Any = {}
    try:
        with open(path, "rb") as f:
            tree = serialization.msgpack_restore(f.read())
        meta = json.loads(tree["meta"])
    except Exception:  # pylint: disable=broad-except  # msgpack has its own types for garbage
        pass  # refused below, in one line
    if not isinstance(meta, dict) or meta.get("kind") != KIND \
            or not {"params", "collections", "hparams"} <= set(tree):
        fail(f"{path!r} is not a model file written by gdl.save_model (or is corrupt): write "
             f"it with gdl.save_model(path, result)")
    if meta.get("format") != FORMAT:
        fail(f"{path!r} has model format {meta.get('format')}, this version reads format "
             f"{FORMAT}: save the model again with this version")
    return meta, tree


def _fitted(path: str, tree: Dict[str, Any], learner: Learner,
            feature_shape: Tuple[int, ...], dtype: str) -> Tuple[Any, Any]:
    """The saved ``(params, collections)`` in the structure of ``learner``'s variables;
    a one-line error naming the first variable that differs."""
    params, collections = jax.eval_shape(learner.init, jax.random.key(0),
                                         jnp.zeros((1,) + feature_shape, dtype))
    want = {**_shapes(params), **_shapes(collections)}
    have = {**_shapes(tree["params"]), **_shapes(tree["collections"])}
    for name in sorted(set(want) | set(have)):
        if want.get(name) != have.get(name):
            fail(f"the learner does not fit the model in {path!r}: variable {name} is "
                 f"{_about(have.get(name))} in the file but {_about(want.get(name))} in the "
                 f"learner: pass the learner the model was trained with")
    return (serialization.from_state_dict(params, tree["params"]),
            serialization.from_state_dict(collections, tree["collections"]))


def _shapes(variables: Any) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """``{"params/Dense_0/kernel": (shape, dtype name)}`` of a variables tree."""
    flat = traverse_util.flatten_dict(serialization.to_state_dict(variables), sep="/")
    return {k: (tuple(np.shape(v)), str(np.dtype(v.dtype))) for k, v in flat.items()}


def _about(found: Optional[Tuple[Tuple[int, ...], str]]) -> str:
    return "absent" if found is None else f"{found[1]}{list(found[0])}"
