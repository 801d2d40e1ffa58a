"""Outer GA against grid, random, DE and TPE at equal budgets (network-epochs), many seeds.

Every method searches the same default space (learning rate, batch size, epochs, dropout,
weight decay, optimizer, model family MLP/CNN/RNN, layers, widths, activation, CNN kernel, RNN
cell) with the same trainer objective: validation accuracy, one seed per run shared by every
method. The test split is touched once per run, for the best network found. All runs of a
dataset share one process, so compiled training programs are reused across methods.

Population (GA, DE) and batch (random, grid) 8, TPE batch 4; the epochs gene takes 5, 10 or 20
so that a budget of a few hundred network-epochs covers several GA generations; RNNs have one
layer of at most 64 units (see bench_space).

Two TPE arms: "tpe" is optuna's TPESampler(seed) with its defaults over the unit genome
(every gene a float in [0, 1]); "tpe_tuned" is TPE as an Optuna user would set it for this
space: each gene in its own distribution (categorical genes as categories, log floats),
only the genes a config uses (define-by-run), multivariate with group=True, 5 start-up
trials and a constant liar. The optuna version and TPESampler's defaults are recorded.

Methods run in a seeded random order per seed (recorded); each run records its wall time
and, apart, the time XLA spent compiling (the persistent compile cache is on, so a method
that meets shapes compiled by an earlier one compiles less). Differences to random search
are reported paired per seed (paired.py).

Usage: python benchmarks/search_comparison.py [--seeds 5] [--datasets mnist1d digits]
       [--budget 240 160] [--methods ga random grid de tpe tpe_tuned] [--epochs 5 10 20]
       [--out JSON] [--plot PNG] [--append]
Writes benchmarks/results/search_comparison.json and img/search_comparison.png.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

import jax
from jax import monitoring
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired import paired  # noqa: E402  pylint: disable=wrong-import-position
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search import driver as search  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search.trainer_objective import TrainerObjective  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search.space import Choice, Space, default_space  # noqa: E402  pylint: disable=wrong-import-position

gdl.use_host_devices()  # one CPU device per core, before any JAX work
ROOT = os.path.join(os.path.dirname(__file__), "..")
POP = 8
TUNED_TPE = (("multivariate", True), ("group", True), ("n_startup_trials", 5),
             ("constant_liar", True))
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
COMPILE_SECONDS = [0.0]  # XLA compile time so far in this process (count_compile adds to it)


def count_compile(event: str, seconds: float, **_) -> None:
    """A ``jax.monitoring`` listener that adds XLA's compile durations to COMPILE_SECONDS."""
    if event == COMPILE_EVENT:
        COMPILE_SECONDS[0] += seconds


def on_grid(curve, grid) -> np.ndarray:
    """A best-so-far curve ``[[spent, best], ...]`` read at ``grid`` (NaN before its start)."""
    xs = np.array([c[0] for c in curve])
    vs = np.array([c[1] for c in curve])
    idx = np.searchsorted(xs, grid, side="right") - 1
    return np.where(idx >= 0, vs[np.maximum(idx, 0)], np.nan)


def optuna_record() -> dict:
    """The optuna version and TPESampler's defaults (they change between releases)."""
    try:
        import optuna  # pylint: disable=import-outside-toplevel
    except ImportError:
        return {}
    params = inspect.signature(optuna.samplers.TPESampler.__init__).parameters
    return {"version": optuna.__version__,
            "tpe_defaults": {n: p.default for n, p in params.items()
                             if n != "self" and not callable(p.default)},
            "tpe_tuned": dict(TUNED_TPE)}


METHODS = {"ga": lambda: search.GA(population=POP),
           "random": lambda: search.RandomSearch(batch=POP),
           "grid": lambda: search.GridSearch(resolution=3, batch=POP),
           "de": lambda: search.DifferentialEvolution(population=POP),
           "tpe": lambda: search.TPE(batch=POP // 2),
           "tpe_tuned": lambda: search.TPE(batch=POP // 2, native=True,
                                           sampler_options=TUNED_TPE)}


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
    compiled = COMPILE_SECONDS[0]
    start = time.perf_counter()
    res = search.run_search(METHODS[method](), bench_space(epochs), objective, budget,
                            jax.random.key(seed))
    wall = time.perf_counter() - start
    compile_s = COMPILE_SECONDS[0] - compiled
    curve, best = [], -np.inf
    for e in res.evaluations:
        f = e["fitness"]
        best = max(best, f) if np.isfinite(f) else best
        curve.append([e["budget_used"], best])
    test = objective.test_metrics()
    return {"method": method, "seed": seed, "budget": budget, "budget_used": res.budget_used,
            "val_accuracy": float(res.best_fitness), "test_accuracy": test.get("accuracy"),
            "best_config": res.best_config, "evaluated": len(res.evaluations),
            "groups_trained": objective.groups_trained, "wall_s": wall,
            "compile_s": compile_s, "curve": curve}


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
            ys = np.array([on_grid(r["curve"], grid) for r in mine])
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
    lines += ["", "| dataset | method - random | seeds | test acc, points: mean [95 % CI] | "
              "wins/losses | Wilcoxon p |", "|---|---|---|---|---|---|"]
    for name in sorted({r["dataset"] for r in runs}):
        by = {(r["method"], r["seed"]): r["test_accuracy"] for r in runs if r["dataset"] == name}
        for method in METHODS:
            seeds = sorted(s for m, s in by if m == method and ("random", s) in by)
            if method == "random" or len(seeds) < 2:
                continue
            p = paired([by["random", s] for s in seeds], [by[method, s] for s in seeds])
            lines.append(f"| {name} | {method} | {p['n']} | {100 * p['mean']:+.2f} "
                         f"[{100 * p['lo']:+.2f}, {100 * p['hi']:+.2f}] | {p['wins']}/"
                         f"{p['losses']} | {p['wilcoxon_p']:.3f} |")
    return "\n".join(lines)


def paired_stats(runs):
    """paired() of the test accuracies per dataset, keyed ``"method - random"``."""
    out = {}
    for name in sorted({r["dataset"] for r in runs}):
        by = {(r["method"], r["seed"]): r["test_accuracy"] for r in runs if r["dataset"] == name}
        out[name] = {}
        for method in METHODS:
            seeds = sorted(s for m, s in by if m == method and ("random", s) in by)
            if method != "random" and len(seeds) >= 2:
                out[name][f"{method} - random"] = paired([by["random", s] for s in seeds],
                                                         [by[method, s] for s in seeds])
    return out


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
    monitoring.register_event_duration_secs_listener(count_compile)
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
            order = [str(m) for m in np.random.default_rng(seed).permutation(args.methods)]
            for method in order:
                if (name, seed, method) in done:
                    continue
                jax.clear_caches()  # thousands of live programs exhaust XLA's code memory
                rec = one_run(data, method, seed, budgets[name], args.epochs)
                rec["dataset"], rec["order"] = name, order.index(method)
                runs.append(rec)
                print(f"{name:8s} seed {seed} {method:6s} val {rec['val_accuracy']:.4f} "
                      f"test {rec['test_accuracy']:.4f} evaluated {rec['evaluated']:3d} "
                      f"{rec['wall_s']:.0f}s  {rec['best_config']}", flush=True)
                gdl.app.rundir.write_json(args.out, {"machine": machine, "command": " ".join(
                    ["python benchmarks/search_comparison.py"] + sys.argv[1:]),
                    "optuna": optuna_record(), "runs": runs})
    if runs:  # the paired statistics, for benchmarks/results_md.py
        with open(args.out, encoding="utf-8") as f:
            saved = json.load(f)
        gdl.rundir.write_json(args.out, {**saved, "paired": paired_stats(runs)})
    print(table(runs))
    plot(runs, args.plot)


def replot(paths):
    """Table and plot of several result files together (e.g. one per dataset); adds each
    file's paired statistics to it."""
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        gdl.rundir.write_json(path, {**saved, "paired": paired_stats(saved["runs"])})
        runs += saved["runs"]
    print(table(runs))
    plot(runs, os.path.join(ROOT, "img", "search_comparison.png"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replot"]:
        replot(sys.argv[2:])
    else:
        main()
