"""The caption family on captioned moving digits: caption exact match and per-slot F1 after a
small budget, from the CLI as a user runs it.

Runs, in its own process,

  genetic-dl evolve-weights --dataset captioned_moving_digits:count=N --model caption
      --population P --generations G --epochs E --seed S

and writes its wall time, the budget it used, the best member's validation and test caption
metrics, the best validation fitness of each generation, its example test captions, and each
slot's majority baseline on the test split (the accuracy and macro F1 of always predicting
the training split's most frequent class).

Usage:
  python benchmarks/captions.py [--count 2000] [--population 4] [--generations 8] [--epochs 2]
  # -> benchmarks/results/captions.json
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


def _majority(dataset: str) -> dict:
    """Each slot's test accuracy and macro F1 when always predicting the training split's most
    frequent class of that slot."""
    import jax  # pylint: disable=import-outside-toplevel
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    from sklearn.metrics import f1_score  # pylint: disable=import-outside-toplevel
    data = gdl.load_dataset(dataset)
    accuracy, f1 = [], []
    for s in range(data.slots):
        common = np.bincount(data.y_train[:, s]).argmax()
        guess = np.full(len(data.y_test), common)
        accuracy.append(float(np.mean(guess == data.y_test[:, s])))
        f1.append(float(f1_score(data.y_test[:, s], guess, average="macro", zero_division=0)))
    fields = gdl.synthetic.CAPTION_FIELDS
    names = [f"{fields[s % len(fields)]} {s // len(fields) + 1}" for s in range(data.slots)]
    return {"slots": names, "accuracy": accuracy, "f1": f1, "jax": jax.__version__,
            "train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test)}


def main() -> int:
    """Runs the command; writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="clips (a fifth are test)")
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per generation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "captions.json"))
    args = parser.parse_args()
    dataset = f"captioned_moving_digits:count={args.count}"
    cmd = ["evolve-weights", "--dataset", dataset, "--model", "caption", "--population",
           str(args.population), "--generations", str(args.generations), "--epochs",
           str(args.epochs), "--seed", str(args.seed), "--quiet"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "genetic_dl", *cmd, "--out", tmp],
                              env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        with open(os.path.join(tmp, "result.json"), encoding="utf-8") as f:
            result = json.load(f)
    write_json(args.out, {
        "command": " ".join(["python benchmarks/captions.py", *sys.argv[1:]]),
        "run": "genetic-dl " + " ".join(cmd), "machine": f"{platform.platform()}, "
        f"{os.cpu_count()} cores", "wall_s": wall, "budget_used": result["budget_used"],
        "fitness": result["fitness"], "history": [h["best"] for h in result["history"]],
        "val": result["best"]["val"],
        "test": result["best"]["test"], "captions": result["captions"],
        "majority": _majority(dataset)})
    print(json.dumps(result["best"]["test"], indent=1))
    print(f"wrote {args.out} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
