"""Black-box search: genetic_dl's GA (through run_search and as an Optuna sampler)
against Optuna's TPE, CMA-ES, NSGA-II and random sampling, under one trial budget.

Arms: ga_run_search (gdl.run_search with gdl.GA(population=16), the defaults), ga_optuna
(GASampler(population=16)), ga_optuna_p8 (population 8), ga_screen (run_search, GA(screen=3):
each child the best of 3 bred versions by TPE's density ratio), and Optuna's TPESampler,
CmaEsSampler, NSGAIISampler and RandomSampler with their defaults.

Functions (all minimised, every arm sees the same instance per seed):
  bbob_f<N>   IOHprofiler's BBOB function N in 5-D (instance = seed + 1), mixed-integer
              as in COCO's bbob-mixint: x0, x1 real in [-5, 5]; x2, x3 integer on the
              grid -5, -4.5, ..., 5; x4 categorical in {-4, -2, 0, 2, 4}.
  hpo_smooth  an HPO-shaped function of the 8 genes of an MLP's search (log-scaled learning
              rate, weight decay, batch size and units, momentum, dropout, layers, optimizer
              as a category), a valley whose optimum (seeded) depends on the optimizer.
  hpo_rugged  the same plus cosine ripples (minimum unchanged).

Regret is normalised per function instance: (best found - optimum) / (median of 1000
uniform random configs - optimum): 0 is the optimum, 1 a typical random config. Arms are
paired per seed: per seed the regret is averaged over the functions, then the mean over
seeds and its 95 % t-interval, and paired differences, are reported at each budget.

Usage:
  python benchmarks/blackbox.py [--seeds 10] [--trials 500] [--workers 2]
Writes benchmarks/results/blackbox.json and img/blackbox.png.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from genetic_dl.app.rundir import write_json  # noqa: E402  pylint: disable=wrong-import-position

READ_AT = (25, 50, 100, 200, 500)
ARMS = ("ga_run_search", "ga_optuna", "ga_optuna_p8", "ga_screen", "tpe", "cmaes", "nsga2",
        "random")
BBOB = (1, 6, 10, 15, 21)
FUNCTIONS = tuple(f"bbob_f{i}" for i in BBOB) + ("hpo_smooth", "hpo_rugged")
POP = 16  # the GA's default population, both paths
CATS = (-4.0, -2.0, 0.0, 2.0, 4.0)
OPTIMIZERS = ("sgd", "adam", "rmsprop")

# (name, kind, lo, hi, log)  kind: f float, i int, c categorical (lo = options)
BBOB_PARAMS = [("x0", "f", -5.0, 5.0, False), ("x1", "f", -5.0, 5.0, False),
               ("x2", "i", -10, 10, False), ("x3", "i", -10, 10, False),
               ("x4", "c", CATS, None, False)]
HPO_PARAMS = [("lr", "f", 1e-5, 1.0, True), ("wd", "f", 1e-6, 1e-1, True),
              ("batch", "i", 16, 1024, True), ("units", "i", 16, 1024, True),
              ("momentum", "f", 0.0, 0.99, False), ("dropout", "f", 0.0, 0.7, False),
              ("layers", "i", 1, 4, False), ("optimizer", "c", OPTIMIZERS, None, False)]


class Problem:
    """One function instance: ``value(config)`` and its known optimum."""

    def __init__(self, name: str, seed: int):
        self.name, self.seed = name, seed
        if name.startswith("bbob"):
            import ioh  # pylint: disable=import-outside-toplevel
            self.params = BBOB_PARAMS
            self._f = ioh.get_problem(int(name[6:]), seed + 1, 5, ioh.ProblemClass.BBOB)
            self.optimum = float(self._f.optimum.y)
        else:
            rng = np.random.default_rng([seed, 7])
            self.params = HPO_PARAMS
            self._best = {"lr": rng.uniform(-4, -1), "wd": rng.uniform(-5, -2),
                          "batch": rng.uniform(5, 9), "units": rng.uniform(5, 9),
                          "momentum": rng.uniform(0.5, 0.95), "dropout": rng.uniform(0.0, 0.5),
                          "layers": int(rng.integers(1, 5)),
                          "optimizer": int(rng.integers(0, 3))}
            self.optimum = 0.0
        self.reference = float(np.median([self.value(self.random_config(rng))
                                          for rng in [np.random.default_rng([seed, 11])]
                                          for _ in range(1000)]))

    def random_config(self, rng):
        out = {}
        for name, kind, lo, hi, log in self.params:
            if kind == "c":
                out[name] = lo[int(rng.integers(len(lo)))]
            elif kind == "i":
                out[name] = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)) - 0.5))
                                ) if log else int(rng.integers(lo, hi + 1))
                out[name] = min(hi, max(lo, out[name]))
            else:
                out[name] = float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if log \
                    else float(rng.uniform(lo, hi))
        return out

    def value(self, c) -> float:
        if self.name.startswith("bbob"):
            return float(self._f([c["x0"], c["x1"], 0.5 * c["x2"], 0.5 * c["x3"], c["x4"]]))
        b = self._best
        opt = OPTIMIZERS.index(c["optimizer"])
        shift = 0.7 * (opt - b["optimizer"])  # each optimizer prefers its own learning rate
        d = {"lr": math.log10(c["lr"]) - b["lr"] - shift, "wd": math.log10(c["wd"]) - b["wd"],
             "batch": math.log2(c["batch"]) - b["batch"] - 0.5 * (math.log10(c["lr"]) - b["lr"]),
             "units": (math.log2(c["units"]) - b["units"]) / 2,
             "momentum": (c["momentum"] - b["momentum"]) * 4 * (opt == 0),
             "dropout": (c["dropout"] - b["dropout"]) * 3, "layers": (c["layers"] - b["layers"])}
        loss = sum(v * v for v in d.values()) + 0.3 * (opt != b["optimizer"])
        if self.name == "hpo_rugged":
            loss += sum(0.3 * (1 - math.cos(2 * math.pi * v)) for v in d.values())
        return float(loss)


def _space(params):
    from genetic_dl.search.space import Choice, Float, Int, Space  # pylint: disable=import-outside-toplevel
    genes = []
    for name, kind, lo, hi, log in params:
        genes.append((name, Choice(tuple(lo)) if kind == "c" else
                      (Int(lo, hi, log) if kind == "i" else Float(lo, hi, log))))
    return Space(tuple(genes))


def _suggest(trial, params):
    out = {}
    for name, kind, lo, hi, log in params:
        if kind == "c":
            out[name] = trial.suggest_categorical(name, list(lo))
        elif kind == "i":
            out[name] = trial.suggest_int(name, lo, hi, log=log)
        else:
            out[name] = trial.suggest_float(name, lo, hi, log=log)
    return out


def run_one(job):
    """One (function, seed, arm): the best value after each trial, and seconds."""
    name, seed, arm, trials = job
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update("jax_platforms", "cpu")
    problem = Problem(name, seed)
    start = time.perf_counter()
    if arm in ("ga_run_search", "ga_screen"):
        import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
        ga = gdl.GA(population=POP, screen=3 if arm == "ga_screen" else 0)
        res = gdl.run_search(ga, _space(problem.params),
                             gdl.BlackBox(lambda c: -problem.value(c)), trials, seed)
        values = [-e["fitness"] for e in res.evaluations][:trials]
    else:
        import optuna  # pylint: disable=import-outside-toplevel
        from genetic_dl.integrations.optuna import GASampler  # pylint: disable=import-outside-toplevel
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        sampler = {"ga_optuna": lambda: GASampler(population=POP, seed=seed),
                   "ga_optuna_p8": lambda: GASampler(population=8, seed=seed),
                   "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                   "cmaes": lambda: optuna.samplers.CmaEsSampler(
                       seed=seed, warn_independent_sampling=False),
                   "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
                   "random": lambda: optuna.samplers.RandomSampler(seed=seed)}[arm]()
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: problem.value(_suggest(t, problem.params)), n_trials=trials)
        values = [t.value for t in study.trials]
    best = np.minimum.accumulate(np.asarray(values, np.float64))
    regret = (best - problem.optimum) / max(problem.reference - problem.optimum, 1e-12)
    return {"function": name, "seed": seed, "arm": arm, "regret": regret.tolist(),
            "seconds": time.perf_counter() - start}


def _t95(n: int) -> float:
    from scipy import stats  # pylint: disable=import-outside-toplevel
    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def summarise(runs, seeds, read_at):
    """Per arm and budget: mean over seeds of the per-seed mean over functions, 95 % CI;
    paired differences of ga_optuna against every other arm."""
    per_seed = {}  # (arm, n) -> [mean over functions for each seed]
    for arm in ARMS:
        for n in read_at:
            vals = []
            for s in seeds:
                rs = [r["regret"][min(n, len(r["regret"])) - 1] for r in runs
                      if r["arm"] == arm and r["seed"] == s]
                if rs:
                    vals.append(float(np.mean(rs)))
            per_seed[arm, n] = vals
    table, diffs = {}, {}
    for (arm, n), vals in per_seed.items():
        if vals:
            v = np.asarray(vals)
            half = _t95(len(v)) * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
            table[f"{arm}@{n}"] = {"mean": float(v.mean()), "ci95": float(half), "n": len(v)}
    for other in ARMS:
        if other == "ga_optuna":
            continue
        for n in read_at:
            a, b = per_seed["ga_optuna", n], per_seed[other, n]
            if a and len(a) == len(b):
                d = np.asarray(a) - np.asarray(b)
                half = _t95(len(d)) * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
                diffs[f"ga_optuna-{other}@{n}"] = {"mean": float(d.mean()), "ci95": float(half)}
    return table, diffs


def plot(table, read_at, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arm in ARMS:
        pts = [(n, table[f"{arm}@{n}"]) for n in read_at if f"{arm}@{n}" in table]
        if not pts:
            continue
        xs = [n for n, _ in pts]
        m = np.array([p["mean"] for _, p in pts])
        h = np.array([p["ci95"] for _, p in pts])
        ax.plot(xs, m, marker="o", label=arm, lw=2.2 if arm.startswith("ga") else 1.2)
        ax.fill_between(xs, m - h, m + h, alpha=0.15)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.minorticks_off()
    ax.set_xticks(list(read_at))
    ax.set_xticklabels([str(n) for n in read_at])
    ax.set_yticks([0.02, 0.05, 0.1, 0.2])
    ax.set_yticklabels(["0.02", "0.05", "0.1", "0.2"])
    ax.set_xlabel("trials")
    ax.set_ylabel("normalised regret (mean over seeds, 95 % CI)")
    ax.set_title("Black-box search: bbob-mixint-style + HPO-shaped functions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--functions", nargs="+", default=list(FUNCTIONS))
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "blackbox.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "img", "blackbox.png"))
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the plot from the JSON at --out")
    args = parser.parse_args()
    if args.replot:
        with open(args.out, encoding="utf-8") as f:
            saved = json.load(f)
        plot(saved["table"], tuple(saved["read_at"]), args.plot)
        return
    seeds = list(range(args.seeds))
    read_at = tuple(n for n in READ_AT if n <= args.trials)
    # seeds outermost, arms innermost: arms of one seed run side by side in time
    jobs = [(f, s, a, args.trials) for s in seeds for f in args.functions for a in args.arms]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        runs = []
        for i, run in enumerate(pool.imap(run_one, jobs)):
            runs.append(run)
            if (i + 1) % 20 == 0 or i + 1 == len(jobs):
                print(f"  {i + 1}/{len(jobs)} runs, {time.perf_counter() - start:.0f} s",
                      flush=True)
    table, diffs = summarise(runs, seeds, read_at)
    print(f"\nnormalised regret, mean over {len(seeds)} seeds of the mean over "
          f"{len(args.functions)} functions (95 % CI); lower is better")
    print(f"{'trials':>7} " + " ".join(f"{a:>17}" for a in args.arms))
    for n in read_at:
        cells = [table.get(f"{a}@{n}") for a in args.arms]
        print(f"{n:>7} " + " ".join(f"{c['mean']:8.3f} ±{c['ci95']:6.3f}  " if c else " " * 17
                                    for c in cells))
    print("\npaired differences ga_optuna - arm (negative: the GA sampler is better)")
    for key, d in diffs.items():
        print(f"  {key:<28} {d['mean']:+.3f} ± {d['ci95']:.3f}")
    seconds = {a: float(np.mean([r["seconds"] for r in runs if r["arm"] == a]))
               for a in args.arms}
    print("\nmean seconds per run: " + ", ".join(f"{a} {s:.1f}" for a, s in seconds.items()))
    import optuna  # pylint: disable=import-outside-toplevel
    write_json(args.out, {
        "command": "python benchmarks/blackbox.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"optuna {optuna.__version__}, {args.workers} worker processes",
        "functions": args.functions, "seeds": seeds, "trials": args.trials,
        "read_at": list(read_at), "population": POP, "table": table, "paired": diffs,
        "seconds_per_run": seconds, "runs": runs})
    plot(table, read_at, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
