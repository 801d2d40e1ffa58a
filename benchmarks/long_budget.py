"""Long-budget search: the Lamarckian GA against random search, tuned TPE and PBT, paired per seed.

Every arm spends the same budget of network-epochs on the same data split (one per seed) and
is scored the same way: the network with the best validation accuracy is chosen, and its test
accuracy is reported. The test split is touched once per run.

The space (``small_mlp_space``): MLPs of 1 or 2 hidden layers of 16-128 units (ReLU), with
the learning rate, weight decay and dropout of Adam training and 5, 10, 20 or 40 epochs per
config; batch size 64. Widths train in one padded shape (``pad_widths``), so a round of
configs is at most a few populations.

Arms:
  ga_lamarckian  the outer GA (population 8) whose children start from the best weights
                 trained so far for their structure (layer widths, dropout layers, optimizer)
                 and train their own epochs with their own hyperparameters: exploitation of
                 trained weights with explored hyperparameters, as in PBT, across structures.
  ga             the same GA, every config from a fresh initialisation (isolates inheritance).
  random         random search, batches of 8.
  tpe_tuned      optuna's TPESampler as an Optuna user would set it for this space (genes in
                 their own distributions, define-by-run, multivariate, group, 5 start-up
                 trials, constant liar), batches of 4.
  tpe            TPESampler(seed) with optuna's defaults over the unit genome, batches of 4.
  pbt            population-based training (Jaderberg et al., 2017) of 8 MLPs of the space's
                 largest shape (128, 128): hyperparameters drawn from the space, then every 5
                 epochs the bottom quarter copies the top quarter's weights and optimizer state
                 and perturbs learning rate, weight decay and dropout (x0.8 / x1.2, in the
                 space's bounds).

Methods run in a seeded random order per seed (recorded); each run records its wall time and,
apart, XLA's compile time. Differences are paired per seed (paired.py): mean, 95 % bootstrap
interval, wins/losses, Wilcoxon p.

Usage: python benchmarks/long_budget.py [--seeds 10] [--datasets mnist1d digits]
       [--budget 2000] [--methods ...] [--out JSON] [--plot PNG] [--append]
       python benchmarks/long_budget.py --replot [--out JSON] [--plot PNG]
Writes benchmarks/results/long_budget.json and img/long_budget.png.
"""
from __future__ import annotations

import argparse
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
from search_comparison import (  # noqa: E402  pylint: disable=wrong-import-position
    COMPILE_SECONDS, TUNED_TPE, count_compile, on_grid, optuna_record)
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search import driver as search  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search.space import default_space  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.core.train import split_metrics  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.search.trainer_objective import TrainerObjective  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.weights import WeightGAConfig, evolve_weights  # noqa: E402  pylint: disable=wrong-import-position

gdl.use_host_devices()  # one CPU device per core, before any JAX work
ROOT = os.path.join(os.path.dirname(__file__), "..")
POP = 8
PBT_EPOCHS = 5  # PBT's ready interval: epochs between exploit/explore steps
PBT_WIDTHS = (128, 128)
BATCH = 64
STRONGEST = "sh_pbt"
# (control, arm) pairs compared besides STRONGEST against every arm
OTHER_PAIRS = (("random", "pbt"), ("tpe_tuned", "pbt"), ("ga", "ga_lamarckian"),
               ("tpe", "tpe_tuned"), ("random", "tpe_tuned"))


def small_mlp_space():
    """Small MLPs with Adam: widths, layer count, learning rate, weight decay, dropout, epochs."""
    return default_space(families=("mlp",), epochs=(5, 10, 20, 40),
                         narrow={"optimizer": ["adam"], "activation": ["relu"],
                                 "batch_size": [BATCH], "layers": [1, 2],
                                 "width": [16, 32, 64, 128]})


SEARCHES = {"ga_lamarckian": (lambda: search.GA(population=POP), True),
            "ga": (lambda: search.GA(population=POP), False),
            "random": (lambda: search.RandomSearch(batch=POP), False),
            "tpe_tuned": (lambda: search.TPE(batch=POP // 2, native=True,
                                             sampler_options=TUNED_TPE), False),
            "tpe": (lambda: search.TPE(batch=POP // 2), False)}
METHODS = ["sh_pbt"] + list(SEARCHES) + ["pbt"]


def run_search_arm(data, method, seed, budget):
    """One search over ``small_mlp_space``: ``(val, test, best config, curve, evaluated)``."""
    make, lamarckian = SEARCHES[method]
    objective = TrainerObjective(data, seed=seed, pad_widths=True, lamarckian=lamarckian)
    res = search.run_search(make(), small_mlp_space(), objective, budget, jax.random.key(seed))
    curve, best = [], -np.inf
    for e in res.evaluations:
        if np.isfinite(e["fitness"]):
            best = max(best, e["fitness"])
        curve.append([e["budget_used"], best])
    return (float(res.best_fitness), objective.test_metrics()["accuracy"], res.best_config,
            curve, len(res.evaluations))


def run_pbt_arm(data, seed, budget):
    """PBT on the space's largest MLP, hyperparameters drawn from the space's ranges."""
    space = small_mlp_space()
    genes = {n: space.gene(n) for n in ("learning_rate", "weight_decay", "dropout")}
    draws = np.random.default_rng(seed).random((POP, len(genes)))
    hparams = {n: np.array([g.decode(u) for u in draws[:, i]], np.float32)
               for i, (n, g) in enumerate(genes.items())}
    spec = gdl.MLPSpec(PBT_WIDTHS, "relu", 0.1)  # dropout layers; the rate is per member
    pop = gdl.init_population(jax.random.key(seed), spec, data, POP, "adam", hparams)
    bounds = tuple((n, (float(g.lo), float(g.hi))) for n, g in genes.items())
    generations = int(budget // (POP * PBT_EPOCHS))
    res = evolve_weights(jax.random.key(seed), pop, data, generations=generations,
                         epochs=PBT_EPOCHS, batch_size=BATCH, fitness="accuracy",
                         config=WeightGAConfig(rule="pbt", pbt_bounds=bounds))
    model = gdl.build_model(spec, data.feature_shape, data.out_dim)
    test = split_metrics(model, res.best_params, data, "test")["accuracy"]
    curve, best = [], -np.inf
    for h in res.history:
        best = max(best, h["best"]) if np.isfinite(h["best"]) else best
        curve.append([h["network_epochs"], best])
    best = {"widths": list(PBT_WIDTHS), "generation": int(res.best_generation)}
    ids = np.asarray(res.population.ids)
    if res.best_id in ids:  # the best member's hyperparameters, if it is still in the population
        where = int(np.flatnonzero(ids == res.best_id)[0])
        best.update((n, float(v[where])) for n, v in jax.device_get(res.population.hparams).items())
    return float(res.best_fitness), test, best, curve, POP * generations


def run_sh_pbt_arm(data, seed, budget):
    """Successive halving from 32 drawn 2-layer MLPs to 8, then PBT (pbt_search)."""
    space = small_mlp_space()
    bounds = tuple((n, (float(space.gene(n).lo), float(space.gene(n).hi)))
                   for n in ("learning_rate", "weight_decay", "dropout"))
    res = gdl.pbt_search(jax.random.key(seed), data, budget, bounds=bounds, population=POP,
                         start=4 * POP, ready=PBT_EPOCHS, batch_size=BATCH)
    model = gdl.build_model(res.best_spec, data.feature_shape, data.out_dim)
    test = split_metrics(model, res.best_params, data, "test")["accuracy"]
    curve, best = [], -np.inf
    for h in res.history:
        best = max(best, h["best"]) if np.isfinite(h["best"]) else best
        curve.append([h["network_epochs"], best])
    return (res.best_fitness, test, {"widths": list(res.best_spec.hidden), **res.best_hparams},
            curve, len(res.history))


def one_run(data, method, seed, budget):
    """One arm on one seed: its record."""
    compiled, start = COMPILE_SECONDS[0], time.perf_counter()
    if method == "pbt":
        val, test, best, curve, evaluated = run_pbt_arm(data, seed, budget)
    elif method == "sh_pbt":
        val, test, best, curve, evaluated = run_sh_pbt_arm(data, seed, budget)
    else:
        val, test, best, curve, evaluated = run_search_arm(data, method, seed, budget)
    return {"method": method, "seed": seed, "budget": budget, "val_accuracy": val,
            "test_accuracy": float(test), "best_config": best, "evaluated": evaluated,
            "wall_s": time.perf_counter() - start,
            "compile_s": COMPILE_SECONDS[0] - compiled, "curve": curve}


def table(runs):
    """Markdown: test accuracy per arm, then each arm's paired difference to the strongest."""
    lines = ["| dataset | method | seeds | test acc | val acc (selection) | wall s | "
             "compile s |", "|---|---|---|---|---|---|---|"]
    for name in sorted({r["dataset"] for r in runs}):
        for method in METHODS:
            mine = [r for r in runs if r["dataset"] == name and r["method"] == method]
            if not mine:
                continue
            test = 100 * np.array([r["test_accuracy"] for r in mine])
            val = 100 * np.array([r["val_accuracy"] for r in mine])
            lines.append(f"| {name} | {method} | {len(mine)} | {test.mean():.2f} ± "
                         f"{test.std():.2f} % | {val.mean():.2f} % | "
                         f"{np.mean([r['wall_s'] for r in mine]):.0f} | "
                         f"{np.mean([r['compile_s'] for r in mine]):.0f} |")
    lines += ["", f"| dataset | {STRONGEST} - method | seeds | test acc, points: mean "
              "[95 % CI] | wins/losses | Wilcoxon p | margin > interval |",
              "|---|---|---|---|---|---|---|"]
    for name in sorted({r["dataset"] for r in runs}):
        by = {(r["method"], r["seed"]): r["test_accuracy"] for r in runs if r["dataset"] == name}
        for method in METHODS:
            seeds = sorted(s for m, s in by if m == method and (STRONGEST, s) in by)
            if method == STRONGEST or len(seeds) < 2:
                continue
            p = paired([by[method, s] for s in seeds], [by[STRONGEST, s] for s in seeds])
            lines.append(f"| {name} | {method} | {p['n']} | {100 * p['mean']:+.2f} "
                         f"[{100 * p['lo']:+.2f}, {100 * p['hi']:+.2f}] | {p['wins']}/"
                         f"{p['losses']} | {p['wilcoxon_p']:.3f} | "
                         f"{'yes' if p['lo'] > 0 else 'no'} |")
    return "\n".join(lines)


def paired_stats(runs):
    """paired() of the test accuracies per dataset, keyed ``"arm - control"``: STRONGEST
    against every other arm, then OTHER_PAIRS (what RESULTS.md reports)."""
    out = {}
    for name in sorted({r["dataset"] for r in runs}):
        by = {(r["method"], r["seed"]): r["test_accuracy"] for r in runs if r["dataset"] == name}
        out[name] = {}
        pairs = [(m, STRONGEST) for m in METHODS if m != STRONGEST] + list(OTHER_PAIRS)
        for control, arm in pairs:
            seeds = sorted(s for m, s in by if m == control and (arm, s) in by)
            if len(seeds) >= 2:
                out[name][f"{arm} - {control}"] = paired([by[control, s] for s in seeds],
                                                         [by[arm, s] for s in seeds])
    return out


def plot(runs, path):
    """Best validation accuracy so far vs network-epochs (mean over seeds), and the paired
    test-accuracy differences per seed, one row per dataset."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.8 * len(datasets)), squeeze=False)
    for row, name in zip(axes, datasets):
        budget = max(r["budget"] for r in runs if r["dataset"] == name)
        grid = np.linspace(0, budget, 201)
        for method in METHODS:
            mine = [r for r in runs if r["dataset"] == name and r["method"] == method]
            if not mine:
                continue
            ys = np.array([on_grid(r["curve"], grid) for r in mine])
            seen = np.isfinite(ys).all(axis=0)
            row[0].plot(grid[seen], 100 * ys[:, seen].mean(axis=0),
                        label=f"{method} (n={len(mine)})")
        row[0].set_title(f"{name}: best validation accuracy so far (mean over seeds)")
        row[0].set_xlabel("network-epochs spent")
        row[0].set_ylabel("validation accuracy, %")
        row[0].legend(fontsize=8)
        row[0].grid(alpha=0.3)
        by = {(r["method"], r["seed"]): r["test_accuracy"] for r in runs if r["dataset"] == name}
        others = [m for m in METHODS if m != STRONGEST and any(k[0] == m for k in by)]
        for i, method in enumerate(others):
            seeds = sorted(s for m, s in by if m == method and (STRONGEST, s) in by)
            d = 100 * np.array([by[STRONGEST, s] - by[method, s] for s in seeds])
            if len(d) == 0:
                continue
            row[1].scatter(np.full(len(d), i) + np.linspace(-0.15, 0.15, len(d)), d, s=12)
            if len(d) > 1:
                p = paired([by[method, s] for s in seeds], [by[STRONGEST, s] for s in seeds])
                row[1].errorbar(i + 0.3, 100 * p["mean"], yerr=[[100 * (p["mean"] - p["lo"])],
                                                                [100 * (p["hi"] - p["mean"])]],
                                fmt="o", color="black", capsize=4)
        row[1].axhline(0, color="grey", lw=0.8)
        row[1].set_xticks(range(len(others)), others)
        row[1].set_title(f"{name}: {STRONGEST} minus each arm, test points per seed "
                         "(black: mean, 95 % CI)", fontsize=9)
        row[1].grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    """Runs the arms seed by seed (appending), then adds the paired statistics to the JSON,
    prints the table and draws the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", default=["mnist1d", "digits"])
    parser.add_argument("--budget", type=float, default=2000, help="network-epochs per run")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "long_budget.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "img", "long_budget.png"))
    parser.add_argument("--append", action="store_true",
                        help="keep the runs already in --out and skip them")
    parser.add_argument("--replot", action="store_true", help="table and plot of --out only")
    args = parser.parse_args()
    runs = []
    if (args.append or args.replot) and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            runs = json.load(f)["runs"]
    if not args.replot:
        gdl.enable_compile_cache()
        monitoring.register_event_duration_secs_listener(count_compile)
        done = {(r["dataset"], r["seed"], r["method"]) for r in runs}
        machine = f"{os.cpu_count()} cores, jax {jax.__version__}, {jax.device_count()} " \
                  f"{jax.devices()[0].platform} device(s)"
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name in args.datasets:
                data = gdl.load_dataset(name, seed=seed)
                order = [str(m) for m in np.random.default_rng(seed).permutation(args.methods)]
                for method in order:
                    if (name, seed, method) in done:
                        continue
                    jax.clear_caches()  # thousands of live programs exhaust XLA's code memory
                    rec = one_run(data, method, seed, args.budget)
                    rec["dataset"], rec["order"] = name, order.index(method)
                    runs.append(rec)
                    print(f"{name:8s} seed {seed} {method:13s} val {rec['val_accuracy']:.4f} "
                          f"test {rec['test_accuracy']:.4f} {rec['wall_s']:.0f}s "
                          f"(compile {rec['compile_s']:.0f}s)", flush=True)
                    gdl.app.rundir.write_json(args.out, {
                        "machine": machine, "command": " ".join(
                            ["python benchmarks/long_budget.py"] + sys.argv[1:]),
                        "optuna": optuna_record(), "space": repr(small_mlp_space()),
                        "runs": runs})
    if runs:  # the paired statistics, for benchmarks/results_md.py
        with open(args.out, encoding="utf-8") as f:
            saved = json.load(f)
        gdl.rundir.write_json(args.out, {**saved, "paired": paired_stats(runs)})
    print(table(runs))
    plot(runs, args.plot)


if __name__ == "__main__":
    main()
