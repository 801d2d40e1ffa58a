"""Outer GA against grid, random, DE and TPE at equal budgets (network-epochs), many seeds.

Every method searches the same default space (learning rate, batch size, epochs, dropout,
weight decay, optimizer, model family MLP/CNN/RNN, layers, widths, activation, CNN kernel, RNN
cell) with the same trainer objective: validation accuracy, one seed per run shared by every
method. The test split is touched once per run, for the best network found. All runs of a
dataset share one process, so compiled training programs are reused across methods.

Population (GA, DE) and batch (random, grid) 8, TPE batch 4; the epochs gene takes 5, 10 or 20
so that a budget of a few hundred network-epochs covers several GA generations; RNNs have one
layer of at most 64 units (see bench_space).

Usage: python benchmarks/search_comparison.py [--seeds 5] [--datasets mnist1d digits]
       [--budget 240 160] [--methods ga random grid de tpe] [--epochs 5 10 20]
       [--out JSON] [--plot PNG] [--append]
Writes benchmarks/results/search_comparison.json and img/search_comparison.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl import search  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.trainer_objective import TrainerObjective  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.space import Choice, Space, default_space  # noqa: E402  pylint: disable=wrong-import-position

gdl.use_host_devices()  # one CPU device per core, before any JAX work
ROOT = os.path.join(os.path.dirname(__file__), "..")
POP = 8
METHODS = {"ga": lambda: search.GA(population=POP),
           "random": lambda: search.RandomSearch(batch=POP),
           "grid": lambda: search.GridSearch(resolution=3, batch=POP),
           "de": lambda: search.DifferentialEvolution(population=POP),
           "tpe": lambda: search.TPE(batch=POP // 2)}


def bench_space(epochs):
    """The default space with the benchmark's epoch choices and RNNs of at most 64 units in
    one layer: a 2-layer LSTM of 128 units costs ~250 GFLOP per epoch on mnist1d (12 s on
    this CPU), which would make wall time, not the budget, decide the comparison."""
    base = default_space(epochs=epochs)
    cheaper = {"rnn_hidden": Choice((16, 32, 64)), "rnn_layers": Choice((1,))}
    genes = tuple((n, cheaper.get(n, g)) for n, g in base.genes)
    return Space(genes, base.conditions)


def one_run(data, method, seed, budget, epochs):
    """One search; returns its record (curve of best-so-far validation accuracy vs budget)."""
    objective = TrainerObjective(data, seed=seed)
    start = time.perf_counter()
    res = search.run_search(METHODS[method](), bench_space(epochs), objective, budget,
                            jax.random.key(seed))
    wall = time.perf_counter() - start
    curve, best = [], -np.inf
    for e in res.evaluations:
        f = e["fitness"]
        best = max(best, f) if np.isfinite(f) else best
        curve.append([e["budget_used"], best])
    test = objective.test_metrics()
    return {"method": method, "seed": seed, "budget": budget, "budget_used": res.budget_used,
            "val_accuracy": float(res.best_fitness), "test_accuracy": test.get("accuracy"),
            "best_config": res.best_config, "evaluated": len(res.evaluations),
            "groups_trained": objective.groups_trained, "wall_s": wall, "curve": curve}


def plot(runs, path):
    """Best-so-far validation accuracy vs network-epochs, mean over seeds, one panel per dataset."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        budget = max(r["budget"] for r in runs if r["dataset"] == name)
        grid = np.linspace(0, budget, 101)
        for method in METHODS:
            mine = [r for r in runs if r["dataset"] == name and r["method"] == method]
            if not mine:
                continue
            ys = []
            for r in mine:
                xs = np.array([c[0] for c in r["curve"]])
                vs = np.array([c[1] for c in r["curve"]])
                idx = np.searchsorted(xs, grid, side="right") - 1
                ys.append(np.where(idx >= 0, vs[np.maximum(idx, 0)], np.nan))
            ys = np.array(ys)
            seen = np.isfinite(ys).all(axis=0)  # from the point every seed has a value
            ax.plot(grid[seen], ys[:, seen].mean(axis=0), label=f"{method} (n={len(mine)})")
            ax.fill_between(grid[seen], ys[:, seen].min(axis=0), ys[:, seen].max(axis=0),
                            alpha=0.12)
        ax.set_title(f"{name}: best validation accuracy so far")
        ax.set_xlabel("network-epochs spent")
        ax.set_ylabel("validation accuracy")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(runs):
    """Markdown table: mean +- std over seeds per dataset and method."""
    lines = ["| dataset | method | seeds | val acc | test acc | evaluated | wall s |",
             "|---|---|---|---|---|---|---|"]
    for name in sorted({r["dataset"] for r in runs}):
        for method in METHODS:
            mine = [r for r in runs if r["dataset"] == name and r["method"] == method]
            if not mine:
                continue
            val = np.array([r["val_accuracy"] for r in mine]) * 100
            test = np.array([r["test_accuracy"] for r in mine]) * 100
            lines.append(f"| {name} | {method} | {len(mine)} | {val.mean():.2f} ± {val.std():.2f} % "
                         f"| {test.mean():.2f} ± {test.std():.2f} % "
                         f"| {np.mean([r['evaluated'] for r in mine]):.0f} "
                         f"| {np.mean([r['wall_s'] for r in mine]):.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", default=["mnist1d", "digits"])
    parser.add_argument("--budget", type=float, nargs="+", default=[240, 160],
                        help="network-epochs per run, one per dataset")
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 20],
                        help="the epochs gene's choices (the default space also has 40)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "search_comparison.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "img", "search_comparison.png"))
    parser.add_argument("--append", action="store_true",
                        help="keep the runs already in --out and skip them")
    args = parser.parse_args()
    gdl.enable_compile_cache()
    budgets = dict(zip(args.datasets, args.budget + args.budget[-1:] * len(args.datasets)))
    runs = []
    if args.append and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            runs = json.load(f)["runs"]
    done = {(r["dataset"], r["seed"], r["method"]) for r in runs}
    machine = f"{os.cpu_count()} cores, jax {jax.__version__}, {jax.device_count()} " \
              f"{jax.devices()[0].platform} device(s)"
    for name in args.datasets:
        for seed in range(args.seeds):
            data = gdl.load_dataset(name, seed=seed)
            for method in args.methods:
                if (name, seed, method) in done:
                    continue
                jax.clear_caches()  # thousands of live programs exhaust XLA's code memory
                rec = one_run(data, method, seed, budgets[name], args.epochs)
                rec["dataset"] = name
                runs.append(rec)
                print(f"{name:8s} seed {seed} {method:6s} val {rec['val_accuracy']:.4f} "
                      f"test {rec['test_accuracy']:.4f} evaluated {rec['evaluated']:3d} "
                      f"{rec['wall_s']:.0f}s  {rec['best_config']}", flush=True)
                gdl.rundir.write_json(args.out, {"machine": machine, "command": " ".join(
                    ["python benchmarks/search_comparison.py"] + sys.argv[1:]), "runs": runs})
    print(table(runs))
    plot(runs, args.plot)


def replot(paths):
    """Table and plot of several result files together (e.g. one per dataset)."""
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            runs += json.load(f)["runs"]
    print(table(runs))
    plot(runs, os.path.join(ROOT, "img", "search_comparison.png"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replot"]:
        replot(sys.argv[2:])
    else:
        main()
