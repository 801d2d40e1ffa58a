"""The outer GA's duplicate renewal (`GA.renew`) on cheap test functions with known optima.

A converged population breeds copies of its best; the evaluation cache answers them for
free, so a round can spend nothing. `renew` decides when such children are mutated again
until they are new: never, only in a round where every child is a duplicate (the default),
or always. Each arm runs the same seeds and budget (in evaluations); the figure of merit
is the best fitness found (maximised, 0 at the optimum) and the budget actually spent.

Usage: python benchmarks/ga_renewal.py [--seeds 8] [--budgets 100 400]
Writes benchmarks/results/ga_renewal.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from genetic_dl.search import ga as outer_ga  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search import driver as search  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search.space import Choice, Float, Int, space  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.join(os.path.dirname(__file__), "..")

SPHERE = space({"x": Float(-5, 5), "y": Float(1e-3, 10, log=True), "n": Int(1, 8),
                "c": Choice(["a", "b", "c"])})
RUGGED = space({**{f"x{i}": Float(-5, 5) for i in range(6)}, "n": Int(1, 16),
                "c": Choice(list("abcdef"))})


def sphere(c):
    """4 genes; maximum 0 at x = 1, y = 0.1, n = 5, c = 'b' (the test suite's function)."""
    return -((c["x"] - 1) ** 2 + np.log10(c["y"] / 0.1) ** 2 + 0.3 * (c["n"] - 5) ** 2
             + (c["c"] != "b"))


def rugged(c):
    """8 genes, many local optima (a Rastrigin-like sine term); maximum 0."""
    return -(sum((c[f"x{i}"] - 0.5 * i) ** 2 + 2 * np.sin(3 * (c[f"x{i}"] - 0.5 * i)) ** 2
                 for i in range(6)) + 0.3 * (c["n"] - 11) ** 2 + 2 * (c["c"] != "e"))


PROBLEMS = {"sphere": (SPHERE, sphere), "rugged": (RUGGED, rugged)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/ga_renewal.json"))
    args = parser.parse_args()
    rows, start = [], time.perf_counter()
    print("| problem | budget | population | mutation decay | renew | best fitness | "
          "budget spent |\n|---|---|---|---|---|---|---|")
    for name, (sp, fn) in PROBLEMS.items():
        for budget in args.budgets:
            for pop in (8, 16):
                for decay in (0.0, 0.1):
                    for renew in outer_ga.RENEW:
                        ga = search.GA(population=pop, mutation_decay=decay, renew=renew)
                        runs = [search.run_search(ga, sp, search.BlackBox(fn), budget, seed)
                                for seed in range(args.seeds)]
                        best = np.array([r.best_fitness for r in runs])
                        spent = np.array([r.budget_used for r in runs])
                        rows.append({"problem": name, "budget": budget, "population": pop,
                                     "mutation_decay": decay, "renew": renew,
                                     "best": best.tolist(), "spent": spent.tolist()})
                        print(f"| {name} | {budget} | {pop} | {decay} | {renew} | "
                              f"{best.mean():.4f} ± {best.std():.4f} | {spent.mean():.0f} |",
                              flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"seeds": args.seeds, "rows": rows,
                   "seconds": time.perf_counter() - start}, f, indent=1)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
