"""The command line, driven in a subprocess as a user would."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT


def _cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "genetic_dl", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600, check=False)


def _in_process(capsys, monkeypatch, *args):
    """The CLI's ``main`` in this process (no interpreter start-up): ``(code, stdout, stderr)``."""
    from genetic_dl.app import cli  # pylint: disable=import-outside-toplevel
    monkeypatch.setenv("GENETIC_DL_CACHE", "off")  # leave this process's JAX config alone
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_console_script_runs_the_clis_main():
    """pyproject's ``genetic-dl`` script, the README's command, names the CLI's main."""
    import importlib  # pylint: disable=import-outside-toplevel
    try:
        import tomllib  # pylint: disable=import-outside-toplevel
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # pylint: disable=import-outside-toplevel
    from genetic_dl.app import cli  # pylint: disable=import-outside-toplevel
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        target = tomllib.load(handle)["project"]["scripts"]["genetic-dl"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is cli.main, target


def test_evolve_weights_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = _cli("evolve-weights", "--dataset", "iris", "--population", "4", "--generations",
                "2", "--epochs", "2", "--batch-size", "16", "--hidden", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    # the table names what it maximises (the negated validation loss) and that time adds up
    line = next(x for x in proc.stdout.splitlines() if x.startswith("gen   1"))
    assert line.startswith("gen   1  -val_loss: best -") and " elapsed " in line, line
    result = json.loads((out / "result.json").read_text())
    assert result["dataset"] == "iris" and len(result["history"]) == 2
    assert result["fitness"] == "-val_loss"
    assert result["budget_used"] == 16
    assert result["lowering"] == "xla"  # the zoo MLP has no convolutions to lower
    assert list(result["best"]["test"]) == ["loss", "accuracy", "precision", "recall", "f1", "auc"]
    assert result["best"]["val"]["accuracy"] > 0.5


def test_user_npz_regression(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    y = x @ np.array([1.0, -2.0, 0.5])
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    proc = _cli("evolve-weights", "--dataset", str(path), "--population", "2", "--generations",
                "1", "--epochs", "3", "--batch-size", "16", "--hidden", "8", "--quiet",
                "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert list(result["best"]["test"]) == ["loss", "mse", "mae", "r2"]


def test_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.npz"
    x = np.ones((10, 2))
    x[3, 1] = np.nan
    np.savez(bad, x_train=x, y_train=np.arange(10) % 2, x_test=x, y_test=np.arange(10) % 2)
    proc = _cli("evolve-weights", "--dataset", "imagenet")  # once as a user sees it
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    for args in (["evolve-weights", "--dataset", str(bad)],
                 ["evolve-weights", "--population", "0"],
                 ["evolve-weights", "--crossover", "nope"],
                 ["evolve-weights", "--hidden", "a,b"],
                 ["frobnicate"]):
        code, _, err = _in_process(capsys, monkeypatch, *args)
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), err


def test_a_generation_in_which_every_member_diverges_exits_2_with_its_cause(
        tmp_path, capsys, monkeypatch):
    code, _, err = _in_process(capsys, monkeypatch, "evolve-weights", "--dataset", "iris",
                               "--population", "3", "--generations", "2", "--epochs", "1",
                               "--hidden", "8", "--batch-size", "16", "--optimizer", "sgd",
                               "--lr", "1e9", "--quiet", "--out", str(tmp_path / "run"))
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: generation 0: every member failed (3 of 3 diverged in training"), err
    assert "lower the learning rates" in lines[0]
    assert not (tmp_path / "run" / "result.json").exists()


def test_datasets_lists_the_bundled_ones():
    proc = _cli("datasets")
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()] == [
        "digits", "iris", "mnist1d", "friedman", "binary", "moving_digits",
        "captioned_moving_digits"]


# a narrow space: few shapes, so few training programs to compile (CI time)
NARROW = "optimizer=adam; layers=1; width=8,16; activation=relu; batch_size=32"


def test_search_report_load_model_and_config_round_trip(tmp_path):
    out = tmp_path / "search"
    proc = _cli("search", "--dataset", "iris", "--budget", "30", "--population", "4",
                "--families", "mlp", "--epochs", "3", "--seed", "1", "--out", str(out),
                "--space", NARROW, "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["budget_used"] <= 30 and result["best"]["config"]["family"] == "mlp"
    assert all(c["config"]["optimizer"] == "adam" and c["config"]["layers"] == 1
               and c["config"]["width_0"] in (8, 16)  # --space narrowed the space
               for c in result["hall_of_fame"])
    for name in ("history.csv", "evaluations.csv", "config.toml", "best_model/spec.json",
                 "best_model/params.msgpack", "fitness.png"):
        assert (out / name).exists(), name
    rows = (out / "evaluations.csv").read_text().splitlines()
    assert rows[0].startswith(
        "round,budget_used,fitness,cost,id,parent_a,parent_b") and len(rows) > 1
    # the saved model, given raw features, scores the test accuracy the run reported
    import genetic_dl  # pylint: disable=import-outside-toplevel
    model = genetic_dl.load_model(str(out))
    data = genetic_dl.load_dataset("iris", seed=1)
    raw = data.x_test * data.feature_std + data.feature_mean
    accuracy = float((model.predict(raw) == data.y_test).mean())
    assert accuracy == pytest.approx(result["best"]["test"]["accuracy"], abs=1e-6)
    assert result["best"]["test"]["accuracy"] > 0.6
    # repeating the run from its config.toml gives the same numbers
    again = tmp_path / "again"
    proc = _cli("search", "--config", str(out / "config.toml"), "--out", str(again), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((again / "result.json").read_text())["best"] == result["best"]
    proc = _cli("report", str(out), "--latex")
    assert proc.returncode == 0, proc.stderr
    report = (out / "report.md").read_text()
    assert "Best configuration" in report and "fitness.png" in report
    assert "| generation | best val_accuracy | mean |" in report
    assert (out / "report.tex").read_text().startswith("\\documentclass")


def test_bad_configs_exit_2(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "bad.toml"
    for text, expected in (("populaton = 3\n", "unknown option"),
                           ("population = \"many\"\n", "population"),
                           ("crossover = \"sexual\"\n", "choose one of"),
                           ("this is not toml", "not valid TOML"),
                           ("crossover = \"aligned\"\nmatch_every = 2\n", "match_to='best'"),
                           ("crossover = \"aligned\"\nmatch_passes = -1\n", "passes"),
                           ("space = \"widht=8\"\n", "unknown gene 'widht'"),
                           ("space = \"width\"\n", "not gene=value")):
        cfg.write_text(text)
        command = "search" if text.startswith("space") else "evolve-weights"
        code, _, err = _in_process(capsys, monkeypatch, command, "--config", str(cfg))
        assert code == 2 and expected in err, (text, err)
        assert len(err.strip().splitlines()) == 1
    code, _, err = _in_process(capsys, monkeypatch, "report", str(tmp_path))
    assert code == 2 and "no result.json" in err


def test_matching_flags_set_the_aligned_options():
    from genetic_dl.app import cli  # pylint: disable=import-outside-toplevel
    from genetic_dl.weights import WeightGAConfig  # pylint: disable=import-outside-toplevel
    for flags, want in (([], ("parent", 1, 2)),
                        (["--match-to", "best", "--match-every", "5"], ("best", 5, 2)),
                        (["--match-passes", "0", "--matcher", "exact"], ("best", 1, None)),
                        (["--match-passes", "3"], ("parent", 1, 3))):
        args = cli.parse(["evolve-weights", "--crossover", "aligned"] + flags)
        cfg = WeightGAConfig(crossover="aligned",
                             alignment=cli._alignment(args))  # pylint: disable=protected-access
        assert (cfg.match_to, cfg.match_every, cfg.match_passes) == want, flags


RUN = ["evolve-weights", "--dataset", "iris", "--population", "4", "--generations", "8",
       "--epochs", "3", "--batch-size", "16", "--hidden", "16", "--quiet"]


def _numbers(path):
    result = json.loads(path.read_text())
    result.pop("command")  # differs by --resume
    return result


def test_sigkill_then_resume_gives_the_same_result(tmp_path):
    full = _cli(*RUN, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed = tmp_path / "killed"
    _kill_at(RUN, killed, 3)
    resumed = _cli(*RUN, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _numbers(killed / "result.json") == _numbers(tmp_path / "full" / "result.json")
    # a mismatched or corrupt checkpoint is refused with one line
    other = _cli(*[a if a != "8" else "9" for a in RUN], "--out", str(killed), "--resume")
    assert other.returncode == 2 and "other options (generations)" in other.stderr
    for ckpt in (killed / "checkpoints").iterdir():
        ckpt.write_bytes(b"\x00garbage")
    corrupt = _cli(*RUN, "--out", str(killed), "--resume")
    assert corrupt.returncode == 2 and "corrupt" in corrupt.stderr
    assert len(corrupt.stderr.strip().splitlines()) == 1


SEARCH = ["search", "--dataset", "iris", "--budget", "40", "--population", "4",
          "--families", "mlp", "--epochs", "2,3", "--seed", "2", "--space", NARROW, "--quiet"]


def _checkpoints(out):
    """The numbers of the checkpoints in ``out`` (the run keeps only its latest few)."""
    folder = out / "checkpoints"
    names = [p.name for p in folder.glob("ckpt_*.msgpack")] if folder.is_dir() else []
    return [int(n[len("ckpt_"):-len(".msgpack")]) for n in names]


def _kill_at(args, out, first):
    """Runs the CLI and SIGKILLs it once a checkpoint numbered ``first`` or later exists
    (polling for one exact file could miss it: older checkpoints are deleted)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "genetic_dl", *args, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while (max(_checkpoints(out), default=-1) < first and time.time() < deadline
           and proc.poll() is None):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(_checkpoints(out), default=-1) >= first  # a checkpoint to resume from
    assert not (out / "result.json").exists()  # killed mid-way


def test_search_sigkill_then_resume_gives_the_same_result(tmp_path):
    # TPE's and the other methods' replay determinism is tested in-process in test_search.py
    args = SEARCH + ["--method", "ga", "--lamarckian"]
    full = _cli(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed = tmp_path / "killed"
    _kill_at(args, killed, 2)
    resumed = _cli(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = _numbers(tmp_path / "full" / "result.json")
    assert _numbers(killed / "result.json") == expected
    assert len(expected["history"]) > 2 and expected["hall_of_fame"][0]["fitness"] == max(
        h["best"] for h in expected["history"])
    # a weight-GA run cannot resume from a search's checkpoint
    wrong = _cli(*RUN, "--out", str(killed), "--resume")
    assert wrong.returncode == 2 and "other options" in wrong.stderr


def test_a_search_in_rungs_resumes_after_sigkill_and_reports_both_costs(tmp_path):
    args = SEARCH + ["--method", "ga", "--min-epochs", "1", "--eta", "2"]
    full = _cli(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed = tmp_path / "killed"
    _kill_at(args, killed, 2)  # a generation trains 3 rungs: most checkpoints fall inside one
    resumed = _cli(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = _numbers(tmp_path / "full" / "result.json")
    assert _numbers(killed / "result.json") == expected
    costs = expected["costs"]
    assert costs["network_epochs"] == expected["budget_used"] <= 40
    assert 0 < costs["flop_epochs"] < costs["network_epochs"]  # smaller than the 64x64 MLP
    with open(tmp_path / "full" / "evaluations.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["rung_epochs"] for r in rows} >= {"1", "2"}
    assert sum(float(r["network_epochs"]) for r in rows) == costs["network_epochs"]
    bad = _cli(*SEARCH, "--method", "random", "--min-epochs", "1")
    assert bad.returncode == 2 and "--method ga" in bad.stderr


def test_multi_objective_search_writes_a_pareto_front(tmp_path, capsys, monkeypatch):
    out = tmp_path / "mo"
    code, _, err = _in_process(capsys, monkeypatch, "search", "--dataset", "iris", "--budget",
                               "24", "--population", "4", "--families", "mlp", "--epochs", "2,3",
                               "--objectives", "metric,params", "--space",
                               NARROW.replace("layers=1", "layers=1,2"), "--out",
                               str(out), "--quiet")
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    front = {(p["metric"], -p["params"]) for p in result["pareto"]}
    # the front is exactly the evaluated points that no other evaluated point dominates
    with open(out / "evaluations.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    points = {(float(r["fitness"]), -float(r["params"])) for r in rows
              if np.isfinite(float(r["fitness"]))}
    assert len(points) > len(front) >= 1
    assert front == {a for a in points if not any(
        b[0] >= a[0] and b[1] >= a[1] and b != a for b in points)}
    assert (out / "pareto.png").exists()
    proc = _cli("report", str(out))
    assert "pareto.png" in (out / "report.md").read_text()
    assert "Best candidate of each generation" in (out / "report.md").read_text()
    bad = _cli("search", "--method", "de", "--objectives", "metric,params", "--dataset", "iris")
    assert bad.returncode == 2 and "NSGA-II" in bad.stderr


def test_search_on_a_regression_npz_runs_with_default_flags(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = (x @ rng.normal(size=5) + 0.1 * rng.normal(size=120)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    proc = _cli("search", "--dataset", str(tmp_path / "reg.npz"), "--budget", "6", "--epochs",
                "1", "--population", "2", "--families", "mlp", "--quiet", "--out",
                str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert "r2" in result["best"]["val"]
    assert 'metric = "r2"' in (tmp_path / "run" / "config.toml").read_text()


def test_evolve_weights_rnn_cell_choice(tmp_path):
    proc = _cli("evolve-weights", "--dataset", "digits", "--model", "rnn", "--cell", "lstm",
                "--hidden", "8,2", "--population", "2", "--generations", "1", "--epochs", "1",
                "--quiet", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    model = json.loads((tmp_path / "run" / "result.json").read_text())["best"]["config"]["model"]
    assert (model["cell"], model["hidden"], model["layers"]) == ("lstm", 8, 2)
    bad = _cli("evolve-weights", "--model", "rnn", "--cell", "transformer")
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_resume_with_nothing_to_resume_starts_afresh_and_says_so_when_quiet(tmp_path):
    proc = _cli("evolve-weights", "--dataset", "iris", "--population", "2", "--generations", "1",
                "--epochs", "1", "--hidden", "8", "--batch-size", "16", "--quiet", "--resume",
                "--out", str(tmp_path / "never_ran"))
    assert proc.returncode == 0, proc.stderr
    assert "note: no checkpoint in" in proc.stderr and proc.stdout == ""
    assert (tmp_path / "never_ran" / "result.json").exists()


def test_soups_add_the_chosen_model_to_result_json_and_round_trip_through_the_config(
        tmp_path, capsys, monkeypatch):
    run = ["evolve-weights", "--dataset", "iris", "--population", "4", "--generations", "2",
           "--epochs", "2", "--batch-size", "16", "--hidden", "8", "--fitness", "accuracy",
           "--shared-start", "--recombination", "pull"]
    code, out, err = _in_process(capsys, monkeypatch, *run, "--soups", "--soup-repair",
                                 "--out", str(tmp_path / "soups"))
    assert code == 0, err
    result = json.loads((tmp_path / "soups" / "result.json").read_text())
    made = result["soups"]
    assert made["repair"] is True
    assert set(made["fitness"]) == {"best", "uniform", "greedy", "ensemble"}
    assert made["chosen"] in ("best", "uniform", "greedy")
    chosen = made["fitness"][made["chosen"]]
    assert chosen == max(made["fitness"][c] for c in ("best", "uniform", "greedy"))
    assert chosen == made["val"]["accuracy"] and 0 <= made["test"]["accuracy"] <= 1
    assert f"soups: chose {made['chosen']}, val_accuracy {chosen:.4f} on validation" in out
    # the best member's outputs are those of the same run without --soups
    code, _, err = _in_process(capsys, monkeypatch, *run, "--quiet", "--out",
                               str(tmp_path / "plain"))
    assert code == 0, err
    plain = json.loads((tmp_path / "plain" / "result.json").read_text())
    assert {k: v for k, v in result.items() if k not in ("soups", "command")} == \
        {k: v for k, v in plain.items() if k != "command"}
    from genetic_dl.app import cli  # pylint: disable=import-outside-toplevel
    again = cli.parse(["evolve-weights", "--config", str(tmp_path / "soups" / "config.toml")])
    assert again.soups is True and again.shared_start is True
    assert cli.parse(["evolve-weights"]).soups is None  # absent from config.toml unless given
    help_text = cli.build_parsers()[1]["evolve-weights"].format_help()
    assert "--soups" in help_text and "--shared-start" in help_text
