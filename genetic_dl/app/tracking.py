"""Experiment tracking: TensorBoard, MLflow and Weights & Biases loggers for both loops.

A tracker is a callback of :func:`genetic_dl.evolve_weights` (``cb(generation,
population, record)``) and of :func:`genetic_dl.run_search` (``cb(round, record)``):
it writes each generation's best / mean / std fitness (and diversity, budget, best so
far where the record has them) and never stops the run. ``finish(best)`` writes the
best member's hyperparameters and the fitness plot, then closes the run. Each backend
is an optional extra (``pip install "genetic-dl[tracking]"``) and writes local files
only: TensorBoard event files, an MLflow file store (``mlflow ui --backend-store-uri
DIR``), a W&B offline run (``wandb sync`` uploads it later).

Example::

    tb = gdl.tracking.TensorBoard("runs/tb")
    res = gdl.evolve_weights(key, pop, data, generations=10, epochs=2, callbacks=[tb])
    tb.finish(res.best_hparams)
"""
from __future__ import annotations

import importlib
import math
import os
from typing import Any, Dict, List, Mapping, Optional

from ..errors import unknown

SCALARS = ("best", "mean", "std", "diversity", "best_so_far", "budget_used", "network_epochs")
TRACKERS = ("tensorboard", "mlflow", "wandb")


def _need(module: str, extra: str = "tracking") -> Any:
    """Imports an optional backend (each takes seconds), or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ValueError(f"this tracker needs {module.split('.')[0]}: "
                         f"pip install 'genetic-dl[{extra}]'") from err


def scalars(record: Mapping[str, Any]) -> Dict[str, float]:
    """The finite numbers of a round's record that trackers write."""
    out = {}
    for key in SCALARS:
        value = record.get(key)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def flat_params(config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """A config as ``{name: number or text}`` (nested dicts joined with ``/``)."""
    out: Dict[str, Any] = {}
    for key, value in (config or {}).items():
        if isinstance(value, Mapping):
            out.update({f"{key}/{k}": v for k, v in flat_params(value).items()})
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
        else:
            out[key] = str(value)
    return out


def fitness_figure(history: List[Dict[str, float]]) -> Any:
    """Best and mean ± std fitness per generation (a matplotlib figure)."""
    plt = _need("matplotlib.pyplot", "plots")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    steps = [h["step"] for h in history]
    mean = [h.get("mean", math.nan) for h in history]
    ax.plot(steps, [h.get("best", math.nan) for h in history], marker="o", label="best")
    ax.errorbar(steps, mean, yerr=[h.get("std", 0.0) for h in history], marker=".", capsize=2,
                label="mean ± std")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (validation)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


class Tracker:
    """Base class: collects the rounds; backends implement ``_scalars``, ``_final``."""

    def __init__(self) -> None:
        self.history: List[Dict[str, float]] = []

    def __call__(self, step: int, *args: Any) -> bool:
        values = scalars(args[-1])
        self.history.append({"step": int(step), **values})
        self._scalars(int(step), values)
        return False  # a logger never stops the run

    def finish(self, best: Optional[Mapping[str, Any]] = None) -> None:
        """Writes the best member's hyperparameters and the fitness plot; closes the run."""
        fig = fitness_figure(self.history) if self.history else None
        try:
            self._final(flat_params(best), fig)
        finally:
            if fig is not None:
                _need("matplotlib.pyplot", "plots").close(fig)

    def _scalars(self, step: int, values: Dict[str, float]) -> None:
        raise NotImplementedError

    def _final(self, params: Dict[str, Any], fig: Any) -> None:
        raise NotImplementedError


class TensorBoard(Tracker):
    """TensorBoard event files under ``logdir`` (``tensorboard --logdir DIR``)."""

    def __init__(self, logdir: str) -> None:
        super().__init__()
        self.logdir = logdir
        self._writer = _need("tensorboardX").SummaryWriter(logdir)

    def _scalars(self, step: int, values: Dict[str, float]) -> None:
        for key, value in values.items():
            self._writer.add_scalar(f"fitness/{key}", value, step)
        self._writer.flush()

    def _final(self, params: Dict[str, Any], fig: Any) -> None:
        if params:
            rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
            self._writer.add_text("best/hyperparameters", "| name | value |\n|---|---|\n" + rows)
            for key, value in params.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"best/{key}", float(value), 0)
        if fig is not None:
            self._writer.add_figure("fitness", fig, close=False)
        self._writer.close()


class MLflow(Tracker):
    """One MLflow run in a local store under ``directory``: the SQLite database
    ``DIRECTORY/mlflow.db`` that MLflow 3 recommends over its file store
    (``mlflow ui --backend-store-uri sqlite:///DIRECTORY/mlflow.db``), artifacts in
    ``DIRECTORY/artifacts``. MLflow's global state (active run, tracking URI) is untouched.
    """

    def __init__(self, directory: str, experiment: str = "genetic_dl",
                 run_name: Optional[str] = None) -> None:
        super().__init__()
        tracking = _need("mlflow.tracking")
        directory = os.path.abspath(directory)
        os.makedirs(directory, exist_ok=True)
        self.uri = "sqlite:///" + os.path.join(directory, "mlflow.db")
        self._client = tracking.MlflowClient(tracking_uri=self.uri)
        found = self._client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else self._client.create_experiment(
            experiment, artifact_location="file:" + os.path.join(directory, "artifacts"))
        self.run_id = self._client.create_run(exp_id, run_name=run_name).info.run_id

    def _scalars(self, step: int, values: Dict[str, float]) -> None:
        for key, value in values.items():
            self._client.log_metric(self.run_id, key, value, step=step)

    def _final(self, params: Dict[str, Any], fig: Any) -> None:
        for key, value in params.items():
            self._client.log_param(self.run_id, f"best.{key}", value)
        if fig is not None:
            self._client.log_figure(self.run_id, fig, "fitness.png")
        self._client.set_terminated(self.run_id)


class WandB(Tracker):
    """A Weights & Biases run, offline by default, under ``DIRECTORY/wandb``
    (``wandb sync DIRECTORY/wandb/offline-run-*`` uploads it)."""

    def __init__(self, directory: str, project: str = "genetic_dl", name: Optional[str] = None,
                 mode: str = "offline") -> None:
        super().__init__()
        self._wandb = _need("wandb")
        os.makedirs(directory, exist_ok=True)
        self._run = self._wandb.init(dir=directory, project=project, name=name, mode=mode,
                                     reinit="create_new",
                                     settings=self._wandb.Settings(quiet=True, silent=True))
        self.directory = self._run.dir

    def _scalars(self, step: int, values: Dict[str, float]) -> None:
        self._run.log(values, step=step)

    def _final(self, params: Dict[str, Any], fig: Any) -> None:
        if params:
            self._run.config.update({f"best.{k}": v for k, v in params.items()})
        if fig is not None:
            self._run.log({"fitness_plot": self._wandb.Image(fig)})
        self._run.finish()


def make(name: str, directory: str) -> Tracker:
    """A tracker by name (``"tensorboard"``, ``"mlflow"``, ``"wandb"``) writing under
    ``directory`` (a run directory: ``tensorboard/``, ``mlruns/``, ``wandb/``)."""
    if name == "tensorboard":
        return TensorBoard(os.path.join(directory, "tensorboard"))
    if name == "mlflow":
        return MLflow(os.path.join(directory, "mlruns"))
    if name == "wandb":
        return WandB(directory)  # W&B adds its own wandb/ folder
    unknown("tracker", name, TRACKERS)
