"""Trackers write what their tools read back: TensorBoard events, an MLflow store, a
W&B offline run; the CLI's --log writes them under the run directory."""
import glob
import json
import struct
import time

import numpy as np
import pytest

from genetic_dl.app import tracking
from genetic_dl.app.cli import main

RECORDS = [{"best": 0.5 + 0.1 * i, "mean": 0.3 + 0.1 * i, "std": 0.05, "diversity": 1.0 - i / 10,
            "network_epochs": 10 * (i + 1), "best_config": {"lr": 0.1}, "elapsed": 0.1}
           for i in range(3)]
BEST = {"learning_rate": 0.01, "optimizer": "adam", "model": {"family": "mlp", "hidden": (16,)}}


def _tensorboard(directory):
    from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
    acc = event_accumulator.EventAccumulator(directory, size_guidance={"images": 0,
                                                                       "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    text = b"".join(e.tensor_proto.string_val[0] for tag in acc.Tags()["tensors"]
                    for e in acc.Tensors(tag)).decode()
    return scalars, acc.Tags()["images"], text


def _mlflow(directory):
    from mlflow.tracking import MlflowClient  # pylint: disable=import-outside-toplevel
    client = MlflowClient(tracking_uri=f"sqlite:///{directory}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("genetic_dl").experiment_id])
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
               for k in run.data.metrics}
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    return history, run.data.params, artifacts, run.info.status


def _wandb_records(path):
    """The protobuf records of a W&B offline run file (LevelDB log format after a 7-byte
    header), parsed with W&B's own record schema."""
    from wandb.proto import wandb_internal_pb2  # pylint: disable=import-outside-toplevel
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:4] == b":W&B"
    out, pos, pending, block = [], 7, b"", 32768
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = struct.unpack("<HB", raw[pos + 4:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            out.append(rec)
            pending = b""
    return out


def _wandb(directory, wait=30.0):
    (path,) = glob.glob(f"{directory}/wandb/offline-run-*/*.wandb")
    # W&B's service process writes the file; under load its last records can land just
    # after finish() returns, so read until the run's exit record is in it
    deadline = time.monotonic() + wait
    records = _wandb_records(path)
    while not any(r.WhichOneof("record_type") == "exit" for r in records) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
        records = _wandb_records(path)
    history, config = [], {}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in rec.history.item})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
    images = glob.glob(f"{directory}/wandb/offline-run-*/files/media/images/fitness_plot*.png")
    return history, config, images


@pytest.mark.parametrize("name", tracking.TRACKERS)
def test_each_tracker_writes_what_its_tool_reads_back(name, tmp_path):
    tracker = tracking.make(name, str(tmp_path))
    for i, rec in enumerate(RECORDS):
        assert tracker(i, None, rec) is False  # weight GA's signature; never stops the run
    tracker.finish(BEST)
    want_best = [(i, r["best"]) for i, r in enumerate(RECORDS)]
    if name == "tensorboard":
        scalars, images, text = _tensorboard(str(tmp_path / "tensorboard"))
        got = scalars["fitness/best"]
        assert [s for s, _ in got] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want_best], rtol=1e-6)
        assert "fitness/diversity" in scalars and scalars["best/learning_rate"][0][1] == \
            pytest.approx(0.01)
        assert images == ["fitness"] and "model/hidden" in text and "adam" in text
    elif name == "mlflow":
        history, params, artifacts, status = _mlflow(str(tmp_path / "mlruns"))
        assert history["best"] == [(s, pytest.approx(v)) for s, v in want_best]
        assert set(history) >= {"mean", "std", "diversity", "network_epochs"}
        assert params["best.learning_rate"] == "0.01" and params["best.optimizer"] == "adam"
        assert params["best.model/family"] == "mlp"
        assert artifacts == ["fitness.png"] and status == "FINISHED"
    else:
        history, config, images = _wandb(str(tmp_path))
        steps = [h for h in history if "best" in h]
        assert [(h["_step"], h["best"]) for h in steps] == [(s, pytest.approx(v))
                                                            for s, v in want_best], history
        assert config["best.learning_rate"] == 0.01 and config["best.optimizer"] == "adam"
        assert len(images) == 1


def test_search_records_are_tracked_with_the_search_signature(tmp_path):
    tracker = tracking.TensorBoard(str(tmp_path))
    for i, rec in enumerate(RECORDS):
        tracker(i, {**rec, "best_so_far": rec["best"], "budget_used": 5.0 * i})
    tracker.finish({"lr": 0.1})
    scalars, _, _ = _tensorboard(str(tmp_path))
    assert [v for _, v in scalars["fitness/budget_used"]] == [0.0, 5.0, 10.0]


def test_cli_log_writes_trackers_under_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["evolve-weights", "--dataset", "iris", "--population", "4", "--generations",
                 "3", "--epochs", "1", "--quiet", "--out", str(out), "--log",
                 "tensorboard,mlflow"])
    assert code == 0, capsys.readouterr().err
    scalars, images, _ = _tensorboard(str(out / "tensorboard"))
    with open(out / "result.json", encoding="utf-8") as f:
        history = json.load(f)["history"]
    np.testing.assert_allclose([v for _, v in scalars["fitness/best"]],
                               [h["best"] for h in history], rtol=1e-6)
    assert images == ["fitness"]
    mlflow_history, params, _, _ = _mlflow(str(out / "mlruns"))
    assert len(mlflow_history["best"]) == 3 and params["best.optimizer"] == "adam"


@pytest.mark.parametrize("argv,message", [
    (["--log", "tensorbord", "--out", "OUT"], "unknown tracker(s) tensorbord"),
    (["--log", "mlflow"], "add --out DIR"),
])
def test_cli_log_mistakes_are_one_clear_line(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / "run") if a == "OUT" else a for a in argv]
    code = main(["evolve-weights", "--dataset", "iris", "--population", "2", "--generations",
                 "1", "--epochs", "1", "--quiet", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
