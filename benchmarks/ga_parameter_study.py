"""Effect of the outer GA's own settings at a fixed budget: population size, mutation rate,
crossover type, selection pressure and search-space refinement.

One factor changes at a time from a baseline (population 8, tournament k = 3, uniform
crossover, mutation rate 0.05, elitism 1, no refinement). Every arm searches the benchmark
space of `search_comparison.py` (epochs 5/10/20) on the same data, seeds and budget; the
figure of merit is the best validation accuracy found, and the test accuracy of that network.

Usage: python benchmarks/ga_parameter_study.py [--dataset digits] [--seeds 3] [--budget 160]
       [--arms NAME ...] [--append]
Writes benchmarks/results/ga_parameter_study.json and img/ga_parameter_study.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search import driver as search  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search.trainer_objective import TrainerObjective  # noqa: E402  pylint: disable=wrong-import-position
from search_comparison import bench_space  # noqa: E402  pylint: disable=wrong-import-position

gdl.use_host_devices()  # one CPU device per core, before any JAX work
ROOT = os.path.join(os.path.dirname(__file__), "..")
BASE = search.GA(population=8)
ARMS = {
    "baseline": {},
    "population 4": {"population": 4},
    "population 16": {"population": 16},
    "mutation 0.01": {"mutation_rate": 0.01},
    "mutation 0.20": {"mutation_rate": 0.2},
    "one-point": {"crossover": "one_point"},
    "two-point": {"crossover": "two_point"},
    "tournament k=2": {"selection_kw": (("k", 2),)},
    "tournament k=5": {"selection_kw": (("k", 5),)},
    "boltzmann": {"selection": "boltzmann", "selection_kw": (("beta", 10.0),),
                  "boltzmann_growth": 1.5},
    "refine after 1": {"refine_after": 1, "refine_top": 3, "refine_min_width": 0.2},
    # population 4 lives 4-9 generations at this budget, so its refinement has time to act
    "pop 4, refine after 1": {"population": 4, "refine_after": 1, "refine_top": 2,
                              "refine_min_width": 0.2},
}
FACTORS = {"population": ["population 4", "baseline", "population 16"],
           "mutation rate": ["mutation 0.01", "baseline", "mutation 0.20"],
           "crossover": ["one-point", "two-point", "baseline"],
           "selection": ["tournament k=2", "baseline", "tournament k=5", "boltzmann"],
           "refinement": ["baseline", "refine after 1", "population 4", "pop 4, refine after 1"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=160)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "ga_parameter_study.json"))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--append", action="store_true",
                        help="keep the runs already in --out and skip them")
    parser.add_argument("--replot", action="store_true",
                        help="only print the table and draw the plot of the runs in --out")
    args = parser.parse_args()
    if args.replot:
        with open(args.out, encoding="utf-8") as f:
            report(json.load(f)["runs"])
        return
    gdl.enable_compile_cache()
    runs = []
    if args.append and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            runs = json.load(f)["runs"]
    done = {(r["arm"], r["seed"]) for r in runs}
    for seed in range(args.seeds):
        data = gdl.load_dataset(args.dataset, seed=seed)
        for arm in args.arms:
            if (arm, seed) in done:
                continue
            change = ARMS[arm]
            jax.clear_caches()
            objective = TrainerObjective(data, seed=seed)
            start = time.perf_counter()
            res = search.run_search(dataclasses.replace(BASE, **change), bench_space((5, 10, 20)),
                                    objective, args.budget, jax.random.key(seed))
            rec = {"arm": arm, "seed": seed, "val_accuracy": float(res.best_fitness),
                   "test_accuracy": objective.test_metrics()["accuracy"],
                   "generations": len(res.history), "evaluated": len(res.evaluations),
                   "wall_s": time.perf_counter() - start}
            runs.append(rec)
            print(f"seed {seed} {arm:15s} val {rec['val_accuracy']:.4f} test "
                  f"{rec['test_accuracy']:.4f} rounds {rec['generations']} "
                  f"{rec['wall_s']:.0f}s", flush=True)
            gdl.app.rundir.write_json(args.out, {"command": " ".join(
                ["python benchmarks/ga_parameter_study.py"] + sys.argv[1:]),
                "machine": f"{os.cpu_count()} cores, jax {jax.__version__}, "
                f"{jax.device_count()} {jax.devices()[0].platform} device(s)",
                "dataset": args.dataset, "budget": args.budget, "runs": runs})
    report(runs)


def report(runs):
    """The table (mean +- std over seeds) and the plot."""
    lines = ["| factor | setting | seeds | val acc | test acc | rounds |", "|---|---|---|---|---|---|"]
    for factor, arms in FACTORS.items():
        for arm in arms:
            mine = [r for r in runs if r["arm"] == arm]
            if not mine:
                continue
            val = np.array([r["val_accuracy"] for r in mine]) * 100
            test = np.array([r["test_accuracy"] for r in mine]) * 100
            lines.append(f"| {factor} | {arm} | {len(mine)} | {val.mean():.2f} ± {val.std():.2f} % | "
                         f"{test.mean():.2f} ± {test.std():.2f} % | "
                         f"{np.mean([r['generations'] for r in mine]):.1f} |")
    print("\n".join(lines))
    plot(runs, os.path.join(ROOT, "img", "ga_parameter_study.png"))


def plot(runs, path):
    """One panel per factor: validation accuracy of each setting, one dot per seed."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, axes = plt.subplots(1, len(FACTORS), figsize=(3.2 * len(FACTORS), 3.6), sharey=True)
    for ax, (factor, arms) in zip(axes, FACTORS.items()):
        for x, arm in enumerate(arms):
            vals = [r["val_accuracy"] for r in runs if r["arm"] == arm] or [np.nan]
            ax.scatter([x] * len(vals), vals, alpha=0.6)
            ax.plot([x - 0.25, x + 0.25], [np.mean(vals)] * 2, color="k")
        ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
        ax.set_title(factor)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
