"""The CLI on an MNIST-size file, as a new user runs it: peak memory and time per run.

Writes a Keras-layout ``mnistlike.npz`` (60 k + 10 k uint8 28x28 digit images from
genetic_dl.synthetic, generated offline) and runs, each in its own process with its
own peak RSS (``wait4``):

  evolve   genetic-dl evolve-weights --model cnn --population P (the array path)
  stream   the same with --stream on (batches read from the arrays)
  search   genetic-dl search --families cnn on the same file, a small budget: the
           time per network-epoch of the outer GA's candidates on 60 k images

Usage:
  python benchmarks/real_size_cli.py [--population 8] [--budget 16]
  # -> benchmarks/results/real_size_cli.json and a table
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from genetic_dl.app.rundir import write_json  # noqa: E402  pylint: disable=wrong-import-position


def _write_npz(path: str) -> None:
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    x, y = gdl.synthetic.digit_images(70000, seed=0)
    np.savez(path, x_train=x[:60000], y_train=y[:60000].astype(np.uint8),
             x_test=x[60000:], y_test=y[60000:].astype(np.uint8))


def _run(cmd, out_dir: str) -> dict:
    """Runs the CLI in its own process: wall seconds, peak RSS (MB), exit code, result."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        with subprocess.Popen([sys.executable, "-m", "genetic_dl", *cmd], env=env, stdout=out,
                              stderr=err) as proc:
            # wait4 gives this child's own resource usage (peak RSS in KB on Linux)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    record = {"command": "genetic-dl " + " ".join(cmd), "exit": code,
              "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
              "stderr_tail": stderr.strip().splitlines()[-3:], "stdout_tail":
              stdout.strip().splitlines()[-3:]}
    result = os.path.join(out_dir, "result.json")
    if os.path.exists(result):
        with open(result, encoding="utf-8") as f:
            res = json.load(f)
        record["test"] = res["best"]["test"]
        record["budget_used"] = res.get("budget_used")
    return record


def main() -> int:
    """Runs the arms; prints the table and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--budget", type=int, default=16,
                        help="network-epochs of the search arm")
    parser.add_argument("--arms", nargs="+", default=["evolve", "stream", "search"])
    parser.add_argument("--out", default=os.path.join(HERE, "results", "real_size_cli.json"))
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "mnistlike.npz")
        _write_npz(npz)
        common = ["--dataset", npz, "--seed", "0", "--quiet"]
        evolve = ["evolve-weights", *common, "--model", "cnn", "--population",
                  str(args.population), "--generations", "1", "--epochs", "1"]
        commands = {
            "evolve": evolve + ["--stream", "off"],
            "stream": evolve + ["--stream", "on"],
            "search": ["search", *common, "--method", "ga", "--families", "cnn", "--epochs", "1",
                       "--population", str(args.population), "--budget", str(args.budget),
                       "--space", "optimizer=adam; activation=relu; batch_size=64; layers=2; "
                       "width=16,32"],
        }
        for arm in args.arms:
            out_dir = os.path.join(tmp, arm)
            runs[arm] = _run(commands[arm] + ["--out", out_dir], out_dir)
            runs[arm]["command"] = runs[arm]["command"].replace(npz, "mnistlike.npz").replace(
                out_dir, arm)
            print(arm, json.dumps({k: v for k, v in runs[arm].items() if k != "command"}),
                  flush=True)
    print(f"\n{'arm':<8}{'exit':>5}{'wall s':>9}{'peak MB':>9}{'test acc':>10}{'net-epochs':>11}")
    for arm, r in runs.items():
        acc = r.get("test", {}).get("accuracy")
        print(f"{arm:<8}{r['exit']:>5}{r['wall_s']:>9.1f}{r['peak_rss_mb']:>9.0f}"
              f"{'' if acc is None else f'{acc:.4f}':>10}{r.get('budget_used') or '':>11}")
    write_json(args.out, {"command": "python benchmarks/real_size_cli.py " + " ".join(sys.argv[1:]),
                          "machine": f"{platform.platform()}, {os.cpu_count()} cores",
                          "runs": runs})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
