"""Soak test: many short CLI runs beside a CPU-burning neighbour; does any hang?

Runs ``genetic-dl search --method random`` over the default space (MLP, CNN and
RNN families, 2-layer LSTMs included) and ``genetic-dl evolve-weights`` over
MLP, CNN, GRU and 2-layer LSTM populations, on a small tabular ``.npz`` (178 rows,
13 features, 3 classes: the shape that once deadlocked), alternately with one
XLA host device per core and with one device. A neighbour process burns CPU the
whole time. Each run has the CLI's watchdog on and an outer timeout; a run that
ends with status 3 (watchdog) or is killed by the timeout counts as a hang, and
the main thread's innermost frames from ``hang.txt`` say where.

    python benchmarks/soak.py --searches 50 --ga-runs 50
    python benchmarks/soak.py --searches 2 --ga-runs 4 --out /tmp/soak.json   # a quick look

Writes ``benchmarks/results/soak.json`` (one row per run) and prints a table.
"""
import argparse
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.datasets import make_classification

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from genetic_dl.app.rundir import write_json  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.dirname(HERE)  # the checkout under test, not an installed copy
GA_MODELS = (("mlp", "32,32", "gru"), ("cnn", "8,16", "gru"), ("rnn", "64,2", "lstm"),
             ("rnn", "32,1", "gru"), ("rnn", "128,2", "lstm"))


def _data(folder: str) -> str:
    x, y = make_classification(178, 13, n_informative=8, n_classes=3, random_state=0)
    path = os.path.join(folder, "data.npz")
    np.savez(path, x_train=x[:134].astype(np.float32), y_train=y[:134],
             x_test=x[134:].astype(np.float32), y_test=y[134:])
    return path


def _where(hang_file: str) -> str:
    """The innermost frames of the main thread in a watchdog's stack dump."""
    if not os.path.exists(hang_file):
        return ""
    blocks = open(hang_file, encoding="utf-8").read().split("\n\n")
    threads = [b for b in blocks if "most recent call first" in b and "watchdog" not in b]
    frames = threads[-1].splitlines()[1:4] if threads else []
    return " <- ".join(f.strip() for f in frames)


def _run(cmd, env, timeout, out_dir):
    start = time.time()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        status, err = proc.returncode, proc.stderr.strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        status, err = "timeout", []
    hang = status in (3, "timeout")
    return {"status": status, "hang": hang, "seconds": round(time.time() - start, 1),
            "where": _where(os.path.join(out_dir, "hang.txt")) if hang else "",
            "error": err[0] if err and status != 0 else ""}


def _write(args, rows):
    """Writes the rows and their summary to ``args.out`` atomically; returns the summary."""
    import jax  # pylint: disable=import-outside-toplevel
    summary = {}
    for row in rows:
        c = summary.setdefault(row["kind"].split()[0], {"runs": 0, "hangs": 0, "errors": 0})
        c["runs"] += 1
        c["hangs"] += row["hang"]
        c["errors"] += row["status"] not in (0, 3, "timeout")
    record = {"command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "jax": jax.__version__, "neighbours": args.neighbours,
              "summary": summary, "runs": rows}
    write_json(args.out, record)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=50)
    parser.add_argument("--ga-runs", type=int, default=50)
    parser.add_argument("--budget", type=float, default=40, help="network-epochs per search")
    parser.add_argument("--timeout", type=float, default=900, help="outer timeout per run (s)")
    parser.add_argument("--watchdog", type=float, default=120, help="--watchdog-seconds")
    parser.add_argument("--neighbours", type=int, default=1, help="CPU-burning processes")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "soak.json"))
    args = parser.parse_args()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(args.neighbours)]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = _data(tmp)
            searches, ga_runs = [], []
            for i in range(args.searches):
                searches.append(("search", i % 2 == 0, [
                    "search", "--method", "random", "--dataset", data, "--budget",
                    f"{args.budget:g}", "--seed", str(i)]))
            for i in range(args.ga_runs):
                model, hidden, cell = GA_MODELS[i % len(GA_MODELS)]
                ga_runs.append((f"evolve-weights {model} {cell if model == 'rnn' else ''}".strip(),
                                (i // len(GA_MODELS)) % 2 == 0, [
                    "evolve-weights", "--dataset", data, "--model", model,
                    "--hidden", hidden, "--cell", cell, "--population", "4",
                    "--generations", "2", "--epochs", "1", "--batch-size", "32",
                    "--seed", str(i)]))
            # interleaved, so that a soak cut short has measured both kinds
            jobs = [j for pair in itertools.zip_longest(searches, ga_runs) for j in pair if j]
            for n, (kind, host_devices, cmd) in enumerate(jobs):
                out_dir = os.path.join(tmp, f"run{n}")
                env = dict(os.environ, GENETIC_DL_HOST_DEVICES="" if host_devices else "0",
                           PYTHONPATH=ROOT)
                full = [sys.executable, "-m", "genetic_dl", *cmd, "--quiet", "--out", out_dir,
                        "--watchdog-seconds", f"{args.watchdog:g}"]
                row = {"kind": kind, "host_devices": host_devices, "seed": cmd[cmd.index(
                    "--seed") + 1], **_run(full, env, args.timeout, out_dir)}
                rows.append(row)
                _write(args, rows)  # after every run: a cut-short soak keeps what it measured
                print(f"{n:3d} {kind:<24} host devices {'on ' if host_devices else 'off'} "
                      f"status {row['status']!s:<7} {row['seconds']:6.1f} s "
                      f"{row['where'] or row['error']}", flush=True)
    finally:
        for b in burners:
            b.kill()
    summary = _write(args, rows)
    print("\nkind            runs  hangs  errors")
    for key, c in summary.items():
        print(f"{key:<15} {c['runs']:>4} {c['hangs']:>6} {c['errors']:>7}")
    print(f"wrote {args.out}")
    return 1 if any(r["hang"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
