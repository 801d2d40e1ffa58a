"""The caption family through the command line: evolve-weights and search on captioned
moving digits, result.json's caption metrics and example captions, the report's image."""
import json

import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.core.caption_metrics import CAPTION_METRICS
from genetic_dl.data.synthetic import render_captions

DATA = "captioned_moving_digits:count=48,frames=3,size=16"
TINY = ("--population", "2", "--epochs", "1", "--batch-size", "8", "--quiet")


def _in_process(capsys, monkeypatch, *args):
    """The CLI's ``main`` in this process: ``(code, stdout, stderr)``."""
    from genetic_dl.app import cli  # pylint: disable=import-outside-toplevel
    monkeypatch.setenv("GENETIC_DL_CACHE", "off")  # leave this process's JAX config alone
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_evolve_weights_caption_end_to_end(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    code, _, err = _in_process(capsys, monkeypatch, "evolve-weights", "--dataset", DATA,
                               "--model", "caption", "--hidden", "4", "--generations", "1",
                               *TINY, "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["fitness"] == "val_slot_accuracy"  # the default fitness of captions
    val, test = result["best"]["val"], result["best"]["test"]
    assert list(test)[:len(CAPTION_METRICS)] == list(CAPTION_METRICS)
    assert {f"accuracy_{s}" for s in range(8)} | {f"f1_{s}" for s in range(8)} <= set(test)
    assert 0 <= test["exact_match"] <= test["slot_accuracy"] <= 1
    assert result["history"][0]["best"] == pytest.approx(val["slot_accuracy"], abs=1e-6)
    assert np.isclose(val["slot_accuracy"], np.mean([val[f"accuracy_{s}"] for s in range(8)]))
    # the first test videos' captions: the true ones are the data's, the predicted ones the
    # saved model's
    data = gdl.load_dataset(DATA)
    captions = result["captions"]
    assert [c["true"] for c in captions] == render_captions(data.y_test[:4])
    model = gdl.load_model(str(out))
    predicted = model.predict(data.x_test[:4])
    assert predicted.shape == (4, 8)
    assert [c["predicted"] for c in captions] == render_captions(predicted)
    assert [c["exact_match"] for c in captions] == list((predicted == data.y_test[:4]).all(1))
    assert np.allclose(model.predict_proba(data.x_test[:4]).sum(-1), 1, atol=1e-5)
    assert (out / "captions.png").stat().st_size > 0
    code, _, err = _in_process(capsys, monkeypatch, "report", str(out), "--latex")
    assert code == 0, err
    assert "{captions.png}" in (out / "report.tex").read_text()
    report = (out / "report.md").read_text()
    assert "## Example captions" in report and "![captions.png](captions.png)" in report
    assert f"| 0 | {captions[0]['true']} | {captions[0]['predicted']} |" in report


def test_search_caption_family(tmp_path, capsys, monkeypatch):
    out = tmp_path / "search"
    code, _, err = _in_process(capsys, monkeypatch, "search", "--dataset", DATA, "--families",
                               "caption", "--budget", "2", "--epochs", "1", "--population", "2",
                               "--space", "optimizer=adam; layers=1; width=4; rnn_hidden=16; "
                               "batch_size=16; rnn_cell=gru; kernel_size=3; activation=relu",
                               "--quiet", "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["fitness"] == "val_slot_accuracy"
    assert result["best"]["config"]["family"] == "caption" and "f1" in result["best"]["test"]
    assert len(result["captions"]) == 4 and (out / "captions.png").exists()


@pytest.mark.parametrize("args,message", [
    (("search", "--dataset", DATA), "search it with --families caption"),
    (("search", "--dataset", "iris", "--families", "mlp,caption"),
     "--families caption searches a dataset with caption slots"),
    (("evolve-weights", "--dataset", "iris", "--model", "caption"),
     "one label per example: use --model frames"),
])
def test_caption_families_and_data_must_match(args, message, capsys, monkeypatch):
    code, _, err = _in_process(capsys, monkeypatch, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
