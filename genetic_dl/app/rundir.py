"""The run directory: atomic files other tools read, and the saved best model.

Layout (a contract): ``result.json`` (written last: its presence means the run
finished), ``config.toml`` (the resolved options; ``--config DIR/config.toml``
repeats the run), ``history.csv``, ``evaluations.csv``, ``best_model/`` and
plots. Every file is written to a temporary file, fsynced and renamed.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from numpy.typing import ArrayLike

from ..data import Dataset
from ..core.caption_metrics import slot_logits
from ..core.models import CaptionSpec, ModelSpec, build_model, spec_from_dict, spec_to_dict
from ..core.pytree import Params
from ..core.tables import to_pandas

try:
    import tomllib  # Python >= 3.11
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` atomically: temp file in the same folder, fsync, rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def write_json(path: str, obj: Any) -> None:
    """Atomic JSON; NaN/inf become ``null`` so that any JSON reader accepts it."""
    write_bytes(path, json.dumps(_clean(obj), indent=1).encode())


def write_csv(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Atomic CSV with the union of the rows' keys as columns (first-seen order)."""
    rows = list(rows)
    columns: List[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (json.dumps(_clean(v)) if isinstance(v, (list, dict, tuple)) else v)
                         for k, v in r.items()})
    write_bytes(path, buf.getvalue().encode())


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def dump_toml(options: Mapping[str, Any]) -> str:
    """A flat TOML document of ``options`` (``None`` values are left out)."""
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in options.items() if v is not None)


def load_toml(path: str) -> Dict[str, Any]:
    """Reads a TOML config; ``ValueError`` with the file and the problem otherwise."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as err:
        raise ValueError(f"config file {path!r} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {path!r} is not valid TOML: {err}") from err


def save_model(folder: str, spec: ModelSpec, params: Params, data: Dataset,
               extra: Optional[Mapping[str, Any]] = None) -> None:
    """Saves a model as ``spec.json`` + ``params.msgpack`` (flax serialization, no pickle)."""
    meta = {"model": spec_to_dict(spec), "feature_shape": list(data.feature_shape),
            "out_dim": data.out_dim, "task": data.task, "dataset": data.name,
            "feature_mean": None if data.feature_mean is None else data.feature_mean.tolist(),
            "feature_std": None if data.feature_std is None else data.feature_std.tolist(),
            **(extra or {})}
    write_bytes(os.path.join(folder, "params.msgpack"),
                serialization.to_bytes(jax.device_get(params)))
    write_json(os.path.join(folder, "spec.json"), meta)


class LoadedModel:
    """A saved network: ``predict(x)`` on raw features (standardised as in training)."""

    def __init__(self, meta: Dict[str, Any], params: Params):
        self.meta = meta
        self.spec = spec_from_dict(meta["model"])
        self.model = build_model(self.spec, tuple(meta["feature_shape"]), meta["out_dim"])
        self.params = params
        self._mean = None if meta.get("feature_mean") is None else np.asarray(
            meta["feature_mean"], np.float32)
        self._std = None if meta.get("feature_std") is None else np.asarray(
            meta["feature_std"], np.float32)

    def outputs(self, x: ArrayLike) -> np.ndarray:
        """Logits (classification) or predictions (regression) for raw features ``x``."""
        x = np.asarray(x, np.float32)
        if x.shape[1:] != tuple(self.meta["feature_shape"]):
            raise ValueError(f"features of shape {x.shape[1:]} do not fit a model trained on "
                             f"{tuple(self.meta['feature_shape'])}")
        if self._mean is not None and self._std is not None:
            x = (x - self._mean) / self._std
        return np.asarray(self.model.apply(self.params, x))

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Class indices (classification; a caption model's ``(n, slots)``) or predicted
        values (regression)."""
        out = self.outputs(x)
        if isinstance(self.spec, CaptionSpec):
            return np.asarray(slot_logits(jnp.asarray(out), self.spec.slot_classes)).argmax(-1)
        return out.argmax(-1) if self.meta["task"] == "classification" else out

    def predict_proba(self, x: ArrayLike) -> np.ndarray:
        """Class probabilities (classification only; a caption model's ``(n, slots,
        classes)``, zero beyond each slot's vocabulary)."""
        out = self.outputs(x)
        if isinstance(self.spec, CaptionSpec):
            logits = slot_logits(jnp.asarray(out), self.spec.slot_classes)
            return np.asarray(jax.nn.softmax(logits, -1))
        return np.asarray(jax.nn.softmax(out, -1))


def load_model(run_dir: str) -> LoadedModel:
    """Loads ``run_dir/best_model`` (or a ``best_model`` folder itself)."""
    folder = os.path.join(run_dir, "best_model")
    if not os.path.isdir(folder):
        folder = run_dir
    try:
        with open(os.path.join(folder, "spec.json"), encoding="utf-8") as f:
            meta = json.load(f)
        spec = spec_from_dict(meta["model"])
        model = build_model(spec, tuple(meta["feature_shape"]), meta["out_dim"])
        template = model.init(jax.random.key(0), np.zeros((1, *meta["feature_shape"]), np.float32))
        with open(os.path.join(folder, "params.msgpack"), "rb") as f:
            params = serialization.from_bytes(template, f.read())
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise ValueError(f"no loadable model in {run_dir!r} ({err}): point at a finished run "
                         f"directory with best_model/") from err
    return LoadedModel(meta, params)


records_to_pandas = to_pandas  # the import path it had
