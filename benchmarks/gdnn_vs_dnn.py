"""GDNN against plain training, done fairly: equal compute, validation selection, many seeds.

Arms (same MLP, optimizer and epochs per lineage; P members; G generations of n epochs):
  dnn          one network trained G*n epochs (member 0 of the independent population);
  best_of_p    P independent networks, the best by validation loss (equal-compute control);
  pbt          PBT exploit/explore, no crossover (rule "pbt"; copies the optimizer state);
  gdnn_no_crossover  the weight GA with crossover_prob=0: the same selection, mutation,
               elitism and optimizer-state policy (reset) as gdnn_uniform, so the paired
               difference gdnn_uniform - gdnn_no_crossover is what crossover does;
  gdnn_inherit the weight GA (uniform) whose children keep their first parent's optimizer
               state, as PBT's copies do;
  gdnn_uniform, gdnn_neuron, gdnn_aligned, gdnn_aligned_exact, gdnn_aligned_best1,
  gdnn_aligned_best5, gdnn_aligned_best_once
               the weight GA with uniform, per-neuron and aligned (Git Re-Basin) crossover,
               the last with greedy pairwise weight matching on the device (the default),
               exact matching of the parents to the best member on the host, or greedy
               matching to the best member every generation, every 5th or in the first one
               only (children inherit the shared unit order in between).
Selection only sees the validation split; test metrics of each arm's chosen network are
reported at the end. Arms share each seed's initial population, so differences are
reported paired per seed (mean, 95 % bootstrap interval, Wilcoxon and sign tests; see
paired.py), test accuracy first; the validation loss is the selection criterion itself.
--append adds seeds to an existing JSON of the same settings, one seed at a time if wanted.
Also measures offspring quality right after crossover, before any
retraining: child validation loss against the mean of its two parents', at generation 0 and
in the final population of the aligned arms (plain uniform crossover as it stands against
pairwise aligned: equal when the members share one unit order).

Usage: python benchmarks/gdnn_vs_dnn.py [--seeds 10] [--datasets digits mnist1d]
       [--arms best_of_p gdnn_uniform ...]  (best_of_p, the control, always runs)
       [--append]  (run only the seeds the JSON lacks, up to --seeds)
Writes benchmarks/results/gdnn_vs_dnn.json and img/loss.png.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired import paired  # noqa: E402  pylint: disable=wrong-import-position
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.core.train import split_metrics as train_split_metrics  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.weights import WeightGAConfig  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.weights.rules.ga import ga_step  # noqa: E402  pylint: disable=wrong-import-position

gdl.use_host_devices()  # one CPU device per core, before any JAX work
ROOT = os.path.join(os.path.dirname(__file__), "..")
ARMS = {
    "best_of_p": WeightGAConfig(rule="none"),
    "pbt": WeightGAConfig(rule="pbt", pbt_bounds=(("learning_rate", (1e-4, 1e-2)),)),
    "gdnn_uniform": WeightGAConfig(crossover="uniform"),
    "gdnn_no_crossover": WeightGAConfig(crossover="uniform", crossover_prob=0.0),
    "gdnn_inherit": WeightGAConfig(crossover="uniform", opt_state="inherit"),
    "gdnn_neuron": WeightGAConfig(crossover="per_neuron"),
    "gdnn_aligned": WeightGAConfig(crossover="aligned"),
    "gdnn_aligned_exact": WeightGAConfig(crossover="aligned",
                                         crossover_kw=(("matcher", "exact"),)),
    "gdnn_aligned_best1": WeightGAConfig(crossover="aligned",
                                         crossover_kw=(("match_to", "best"),)),
    "gdnn_aligned_best5": WeightGAConfig(crossover="aligned",
                                         crossover_kw=(("match_to", "best"), ("every", 5))),
    "gdnn_aligned_best_once": WeightGAConfig(
        crossover="aligned", crossover_kw=(("match_to", "best"), ("every", 10 ** 6))),
}
SHARED_ORDER_PROBE = ("gdnn_aligned", "gdnn_aligned_best1", "gdnn_aligned_best5",
                      "gdnn_aligned_best_once")
CROSSES = {"uniform": ("uniform", ()), "per_neuron": ("per_neuron", ()),
           "aligned": ("aligned", ()), "aligned_exact": ("aligned", (("matcher", "exact"),)),
           "aligned_best": ("aligned", (("match_to", "best"),))}


def split_metrics(model, params, data, split):
    """Loss and accuracy of one member on one split."""
    m = train_split_metrics(model, params, data, split)
    return {"loss": m["loss"], "accuracy": m["accuracy"]}


def origin(res) -> str:
    """How the final best member came about: initial, clone (a x a) or cross (a x b)."""
    made = {child: (pa, pb) for _, child, pa, pb in res.lineage}
    if res.best_id not in made:
        return "initial"
    pa, pb = made[res.best_id]
    return "clone" if pa == pb else "cross"


def run_arms(data, spec, seed, args):
    """Every arm on one dataset and seed; returns {arm: record}."""
    key = jax.random.key(seed)
    pop = gdl.init_population(key, spec, data, args.population)
    model = pop.model
    out = {}
    for arm in args.arms:
        config = ARMS[arm]
        t0 = time.perf_counter()
        res = gdl.evolve_weights(jax.random.fold_in(key, 1), pop, data,
                                 generations=args.generations, epochs=args.epochs, config=config)
        curve = [-h["best"] for h in res.history]  # best validation loss per generation
        rec = {"curve": curve, "compute": [h["network_epochs"] for h in res.history],
               "val": split_metrics(model, res.best_params, data, "val"),
               "test": split_metrics(model, res.best_params, data, "test"),
               "seconds": time.perf_counter() - t0,
               "best_origin": origin(res)}
        if arm in SHARED_ORDER_PROBE:  # do the final members share one unit order?
            k = jax.random.fold_in(key, 7)
            rec["final_crossover"] = {
                "uniform_as_is": crossover_quality(res.population, data, k, "uniform", ()),
                "aligned_pairwise": crossover_quality(res.population, data, k, "aligned", ())}
        out[arm] = rec
        if arm == "best_of_p":  # a single DNN: member 0 of the independent runs
            losses = gdl.evaluate(res.population, data, "val")["loss"]
            first = res.population.member(0)
            out["dnn"] = {"curve": None, "final_val_loss_member0": float(losses[0]),
                          "compute": [args.epochs * (g + 1) for g in range(args.generations)],
                          "val": split_metrics(model, first, data, "val"),
                          "test": split_metrics(model, first, data, "test")}
    # the single DNN's per-generation curve: rerun a population of one with the same key
    single = gdl.take(pop, [0])
    curve = []
    for _ in range(args.generations):
        single, hist = gdl.train(single, data, args.epochs)
        curve.append(float(hist["val_loss"][0, -1]))
    out["dnn"]["curve"] = curve
    return out


def crossover_quality(pop, data, key, name, kw):
    """Children of one crossover-only step against their two parents' mean validation loss."""
    parent_loss = np.asarray(gdl.evaluate(pop, data)["loss"])
    cfg = WeightGAConfig(crossover=name, crossover_kw=kw, elitism=0, mutation_rate=0.0)
    kids, parents = ga_step(key, pop, -parent_loss, 0, cfg)
    parents = np.asarray(parents)
    child_loss = np.asarray(gdl.evaluate(kids, data)["loss"])
    distinct = parents[:, 0] != parents[:, 1]
    mean_par = parent_loss[parents].mean(1)
    return {"child_loss": float(child_loss[distinct].mean()),
            "parents_mean_loss": float(mean_par[distinct].mean()),
            "ratio": float((child_loss[distinct] / mean_par[distinct]).mean())}


def offspring_quality(data, spec, seed, args):
    """Child loss right after crossover vs its parents' mean, after one round of training."""
    key = jax.random.key(seed)
    pop = gdl.init_population(key, spec, data, args.population)
    pop, _ = gdl.train(pop, data, args.epochs * 2)
    return {cross: crossover_quality(pop, data, jax.random.fold_in(key, 7), name, kw)
            for cross, (name, kw) in CROSSES.items()}


# (control, arm): what each paired difference isolates
COMPARISONS = (("best_of_p", "pbt"), ("best_of_p", "gdnn_uniform"),
               ("best_of_p", "gdnn_no_crossover"), ("best_of_p", "gdnn_inherit"),
               ("gdnn_no_crossover", "gdnn_uniform"), ("gdnn_uniform", "gdnn_inherit"),
               ("gdnn_inherit", "pbt"), ("gdnn_uniform", "gdnn_aligned"),
               ("best_of_p", "dnn"))


def paired_table(results, datasets, arms):
    """Paired per-seed differences (arm - control) of test accuracy and test loss."""
    table = {}
    for name in datasets:
        seeds = results[name]["seeds"]
        table[name] = {}
        for control, arm in COMPARISONS:
            if control not in ["dnn"] + arms or arm not in ["dnn"] + arms:
                continue
            table[name][f"{arm} - {control}"] = {
                metric: paired([s[control]["test"][metric] for s in seeds],
                               [s[arm]["test"][metric] for s in seeds])
                for metric in ("accuracy", "loss")}
    return table


def summarise(results, datasets, arms):
    """Mean and std over seeds of each arm's final figures."""
    table = {}
    for name in datasets:
        table[name] = {}
        for arm in ["dnn"] + arms:
            recs = [r[arm] for r in results[name]["seeds"]]
            row = {}
            for split in ("val", "test"):
                for metric in ("loss", "accuracy"):
                    v = np.array([r[split][metric] for r in recs])
                    row[f"{split}_{metric}"] = (float(v.mean()), float(v.std()))
            row["compute"] = recs[0]["compute"][-1]
            origins = [r.get("best_origin", "initial") for r in recs]
            row["best_origin"] = {o: origins.count(o) for o in sorted(set(origins))}
            table[name][arm] = row
    return table


def plot(results, datasets, args, path):
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("matplotlib is absent: no plot")
        return
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 4 * len(datasets)), squeeze=False)
    for row, name in enumerate(datasets):
        for arm in ["dnn"] + args.arms:
            curves = np.array([r[arm]["curve"] for r in results[name]["seeds"]])
            compute = results[name]["seeds"][0][arm]["compute"]
            lineage = [args.epochs * (g + 1) for g in range(args.generations)]
            mean, std = curves.mean(0), curves.std(0)
            for col, xs in enumerate((compute, lineage)):
                ax = axes[row, col]
                ax.plot(xs, mean, marker="o", ms=3, label=arm)
                ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
        axes[row, 0].set_xscale("log")
        axes[row, 0].set_xlabel("total network-epochs (compute)")
        axes[row, 1].set_xlabel("epochs per lineage")
        for col in (0, 1):
            axes[row, col].set_ylabel(f"{name}: best validation loss")
            axes[row, col].grid(alpha=0.3)
    axes[0, 1].legend(fontsize=8)
    fig.suptitle(f"GDNN vs DNN, MLP {args.hidden}, P={args.population}, "
                 f"{args.generations} gens x {args.epochs} epochs, {args.seeds} seeds (mean ± std)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def _previous(args):
    """The per-seed results of an earlier run with the same settings (for --append)."""
    if not os.path.exists(args.out):
        return {}
    with open(args.out, encoding="utf-8") as f:
        old = json.load(f)
    same = ("population", "generations", "epochs", "hidden")
    if "seeds_raw" not in old or any(old["args"].get(k) != getattr(args, k) for k in same) \
            or not set(args.arms) <= set(old["args"]["arms"]):
        raise SystemExit(f"{args.out} holds other settings or arms: run without --append")
    return {n: r for n, r in old["seeds_raw"].items() if n in args.datasets}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per generation")
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "gdnn_vs_dnn.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "img", "loss.png"))
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--append", action="store_true",
                        help="keep the seeds already in --out (same settings) and run the rest")
    args = parser.parse_args()
    args.arms = ["best_of_p"] + [a for a in args.arms if a != "best_of_p"]
    spec = gdl.MLPSpec(tuple(int(h) for h in args.hidden.split(",")))
    results = _previous(args) if args.append else {}
    start = time.perf_counter()
    for name in args.datasets:
        data = gdl.load_dataset(name)
        done = results.setdefault(name, {"seeds": [], "offspring": []})
        for seed in range(len(done["seeds"]), args.seeds):
            done["seeds"].append(run_arms(data, spec, seed, args))
            done["offspring"].append(offspring_quality(data, spec, seed, args))
            print(f"{name} seed {seed}: test accuracy " + ", ".join(
                f"{a} {r['test']['accuracy']:.4f}" for a, r in done["seeds"][-1].items()),
                flush=True)
    table = summarise(results, args.datasets, args.arms)
    pairs = paired_table(results, args.datasets, args.arms)
    probed = [a for a in SHARED_ORDER_PROBE if a in args.arms]
    print(f"\n{'dataset':<8} {'arm':<22} {'compute':>7} {'test acc':>15} {'test loss':>15} "
          f"{'val loss (selection)':>21}  origin of the best member")
    for name, arms in table.items():
        for arm, row in arms.items():
            cells = " ".join(f"{row[k][0]:>7.4f}±{row[k][1]:.4f}" for k in
                             ("test_accuracy", "test_loss"))
            val = f"{row['val_loss'][0]:.4f}±{row['val_loss'][1]:.4f}"
            print(f"{name:<8} {arm:<22} {row['compute']:>7} {cells} {val:>21}  "
                  f"best: {row['best_origin']}")
    print("\npaired per seed (arm - control), test accuracy in points: mean [95 % bootstrap "
          "interval], wins/losses, Wilcoxon p")
    for name, rows in pairs.items():
        for what, row in rows.items():
            acc = row["accuracy"]
            print(f"  {name:<8} {what:<38} {100 * acc['mean']:+.2f} [{100 * acc['lo']:+.2f}, "
                  f"{100 * acc['hi']:+.2f}]  {acc['wins']}/{acc['losses']}  "
                  f"p={acc['wilcoxon_p']:.3f}  (n={acc['n']})")
    print("\noffspring right after crossover (mean over seeds; ratio = child / parents' mean "
          "validation loss):")
    for name in args.datasets:
        for cross in CROSSES:
            vals = [q[cross] for q in results[name]["offspring"]]
            ratio = np.array([v["ratio"] for v in vals])
            child = np.mean([v["child_loss"] for v in vals])
            par = np.mean([v["parents_mean_loss"] for v in vals])
            print(f"  {name:<8} {cross:<14} child {child:.3f}  parents {par:.3f}  "
                  f"ratio {ratio.mean():.2f}±{ratio.std():.2f}")
    print("\nfinal population: children of plain uniform crossover as it stands, against "
          "pairwise aligned ones (ratio child / parents; equal when the members share one "
          "unit order):")
    for name in args.datasets:
        for arm in probed:
            cells = []
            for how in ("uniform_as_is", "aligned_pairwise"):
                r = np.array([s[arm]["final_crossover"][how]["ratio"]
                              for s in results[name]["seeds"]])
                cells.append(f"{how} {r.mean():.2f}±{r.std():.2f}")
            print(f"  {name:<8} {arm:<22} " + "  ".join(cells))
    summary = {"table": table, "paired": pairs, "args": vars(args),
               "per_seed": {n: [{a: {k: r[a][k] for k in ("val", "test", "best_origin")
                                     if k in r[a]} for a in r} for r in results[n]["seeds"]]
                            for n in args.datasets},
               "machine": f"{os.cpu_count()} cores, jax "
               f"{jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s)",
               "seconds": time.perf_counter() - start,
               "offspring": {n: results[n]["offspring"] for n in args.datasets},
               "seeds_raw": results,
               "final_crossover": {n: {a: [r[a]["final_crossover"] for r in results[n]["seeds"]]
                                       for a in probed} for n in args.datasets},
               "curves": {n: {a: [r[a]["curve"] for r in results[n]["seeds"]]
                              for a in ["dnn"] + args.arms} for n in args.datasets},
               "command": " ".join(["python"] + sys.argv)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out} ({summary['seconds']:.0f} s)")
    plot(results, args.datasets, args, args.plot)


if __name__ == "__main__":
    main()
