"""In-training recombination (WASH, PAPA's pull) against best-of-P, the GA and PBT (issue #33).

Arms, all at equal compute (the same P members, generations and epochs per generation):
  best_of_p         rule "none", independent starts: P networks, the best on validation;
  best_of_p_shared  rule "none", every member starts from member 0 (``gdl.shared_start``);
  ga_no_crossover   the weight GA with crossover_prob=0 (selection and mutation only);
  pbt               PBT exploit/explore (rule "pbt");
  ga_default        ``WeightGAConfig()``: the weight GA as it comes;
  papa_pull         rule "none", shared start, every member pulled toward the mean (PAPA);
  wash              rule "none", shared start, WASH's shuffle of weight positions;
  ga_pull           the weight GA, shared start, with the pull;
  pull_independent  negative control: the pull on independent starts (no shared basin);
  papa_pull_repair  papa_pull with REPAIR after every pull (4 training batches; BatchNorm
                    models: statistics recomputed);
  ga_pull_repair    ga_pull with the same REPAIR.
Within a seed every arm starts from the same initial population (the shared-start arms from
its member 0) and the same evolution key, so the arms are compared paired per seed
(paired.py: mean difference, 95 % bootstrap interval). Per arm and seed it records the best
member's test accuracy (chosen on validation), the model soups and the ensemble of the
final population (``gdl.soups``, chosen on validation accuracy), the wall seconds and the
loss barrier between the final population's two best members.

Seeds are appended one at a time: each run merges its (set, arm, seed) records into the
JSON (re-running a seed replaces it) and prints the tables over every seed present.

Usage: python benchmarks/recombination.py --set digits_cnn --seeds 0 1 [--arms ...]
       python benchmarks/recombination.py --tiny --set digits_cnn --seeds 0
           (seconds; writes /tmp/recombination_tiny.json unless --out is given)
Writes benchmarks/results/recombination.json and, with two seeds or more and matplotlib,
img/recombination.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired import paired  # noqa: E402  pylint: disable=wrong-import-position
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.app.rundir import write_json  # noqa: E402  pylint: disable=wrong-import-position

gdl.use_host_devices()  # one CPU device per core, before any JAX work
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PBT_BOUNDS = (("learning_rate", (1e-4, 1e-2)),)

# arm: (config, shared start)
ARMS: Dict[str, Tuple[gdl.WeightGAConfig, bool]] = {
    "best_of_p": (gdl.WeightGAConfig(rule="none"), False),
    "best_of_p_shared": (gdl.WeightGAConfig(rule="none"), True),
    "ga_no_crossover": (gdl.WeightGAConfig(rule="ga", crossover_prob=0.0), False),
    "pbt": (gdl.WeightGAConfig(rule="pbt", pbt_bounds=PBT_BOUNDS), False),
    "ga_default": (gdl.WeightGAConfig(), False),
    "papa_pull": (gdl.WeightGAConfig(rule="none", recombination="pull"), True),
    "wash": (gdl.WeightGAConfig(rule="none", recombination="wash"), True),
    "ga_pull": (gdl.WeightGAConfig(rule="ga", recombination="pull"), True),
    "pull_independent": (gdl.WeightGAConfig(rule="none", recombination="pull"), False),
    "papa_pull_repair": (gdl.WeightGAConfig(rule="none", recombination="pull", repair=4), True),
    "ga_pull_repair": (gdl.WeightGAConfig(rule="ga", recombination="pull", repair=4), True),
}
CONTROLS = ("best_of_p", "best_of_p_shared", "pbt")
BARRIER_TS = (0.25, 0.5, 0.75)


def _xent(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def _accuracy(logits, batch):
    return jnp.mean(jnp.argmax(logits, -1) == batch["y"])


class Conv1D(nn.Module):
    """A small 1-D CNN for MNIST-1D's length-40 signals (features ``(n, 40)``)."""

    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        x = nn.relu(nn.Conv(16, (5,))(x))
        x = nn.relu(nn.Conv(32, (5,), strides=(2,))(x))
        x = nn.relu(nn.Conv(32, (3,), strides=(2,))(x))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


class DigitsCNN(nn.Module):
    """A small 2-D CNN with BatchNorm for the 8x8 digits (features ``(n, 8, 8)``)."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = x[..., None]
        x = nn.Conv(16, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Conv(32, (3, 3), strides=(2, 2), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def _conv1d_learner():
    return gdl.Learner.from_linen(Conv1D(), loss=_xent, metrics={"accuracy": _accuracy},
                                  rngs=())


def _digits_learner():
    return gdl.Learner.from_linen(DigitsCNN(), loss=_xent, metrics={"accuracy": _accuracy},
                                  train_kwargs={"train": True}, eval_kwargs={"train": False},
                                  mutable=("batch_stats",), rngs=())


def _shrink(data, n_train=256, n_eval=128):
    """The first rows of each split: the --tiny data."""
    return gdl.Dataset.from_arrays(
        x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
        x_val=data.x_val[:n_eval], y_val=data.y_val[:n_eval],
        x_test=data.x_test[:n_eval], y_test=data.y_test[:n_eval], name=data.name)


def _noisy_digits():
    """Digits whose training split (only) has fixed-seed pixel noise, one-pixel shifts and
    10 % wrong labels; validation and test stay clean. The same arrays every run."""
    clean = gdl.load_dataset("digits")
    rng = np.random.default_rng(33)
    x = np.asarray(clean.x_train, np.float32).copy()
    y = np.asarray(clean.y_train).copy()
    n = len(x)
    shifts = rng.integers(-1, 2, (n, 2))
    for i in range(n):
        x[i] = np.roll(x[i], tuple(shifts[i]), axis=(0, 1))
    x += rng.normal(0.0, 0.5, x.shape).astype(np.float32)
    flip = rng.random(n) < 0.1
    y[flip] = (y[flip] + rng.integers(1, 10, int(flip.sum()))) % 10
    return gdl.Dataset.from_arrays(x_train=x, y_train=y.astype(clean.y_train.dtype),
                                   x_val=clean.x_val, y_val=clean.y_val, x_test=clean.x_test,
                                   y_test=clean.y_test, name="noisy_digits")


# set: (data, learner or spec) maker and full-size (P, generations, epochs); --tiny: 4, 2, 1
SETS: Dict[str, Tuple[Callable[[], Tuple[Any, Any]], Tuple[int, int, int]]] = {
    "mnist1d_mlp": (lambda: (gdl.load_dataset("mnist1d"), gdl.MLPSpec((128, 128))), (8, 8, 2)),
    "mnist1d_cnn1d": (lambda: (gdl.load_dataset("mnist1d"), _conv1d_learner()), (8, 6, 2)),
    "digits_cnn": (lambda: (gdl.load_dataset("digits"), _digits_learner()), (8, 8, 2)),
    "noisy_digits": (lambda: (_noisy_digits(), _digits_learner()), (8, 8, 2)),
}
TINY = (4, 2, 1)
# rough CPU-minutes of one seed of every arm at full size on 2 cores (for the estimate)
MINUTES_PER_SEED = {"mnist1d_mlp": 2.0, "mnist1d_cnn1d": 4.0, "digits_cnn": 3.0,
                    "noisy_digits": 3.0}


def make_set(name, tiny):
    """``(data, learner or spec, P, generations, epochs)`` of one set."""
    maker, sizes = SETS[name]
    data, model = maker()
    if tiny:
        return (_shrink(data), model) + TINY
    return (data, model) + sizes


def _val_loss(member, data):
    """One network's validation loss; BatchNorm statistics recomputed first when it has them."""
    pop = member.population()
    if jax.tree_util.tree_leaves(pop.collections):
        pop = gdl.recompute_statistics(pop, data)
    return float(np.asarray(gdl.evaluate(pop, data, "val")["loss"])[0])


def barrier(population, data):
    """The loss barrier between the two members of lowest validation loss.

    ``max over t of L((1-t) a + t b) - (L(a) + L(b)) / 2`` on validation, t in BARRIER_TS
    (positive: the path between them rises above the endpoints' mean; about 0 or below: one
    basin). Every network on the path, the endpoints included, gets its BatchNorm statistics
    recomputed on training batches, so that stale running averages do not count as a barrier.
    """
    losses = np.asarray(gdl.evaluate(population, data, "val")["loss"], np.float64)
    order = np.argsort(np.where(np.isfinite(losses), losses, np.inf), kind="stable")
    a = gdl.population_member(population, int(order[0]))
    b = gdl.population_member(population, int(order[1]))
    ends = float((_val_loss(a, data) + _val_loss(b, data)) / 2)
    path = [_val_loss(dataclasses.replace(a, params=gdl.averaging.interpolate(
        a.params, b.params, t)), data) for t in BARRIER_TS]
    return {"barrier": float(max(p - ends for p in path)), "endpoints_mean_loss": ends,
            "path_loss": path, "ts": list(BARRIER_TS)}


def run_arm(arm, key, pop, shared, data, sizes):
    """One arm on one seed: its record."""
    config, is_shared = ARMS[arm]
    _, generations, epochs = sizes
    t0 = time.perf_counter()
    res = gdl.evolve_weights(jax.random.fold_in(key, 1), shared if is_shared else pop, data,
                             generations=generations, epochs=epochs, config=config)
    jax.block_until_ready(res.population.params)
    seconds = time.perf_counter() - t0
    best = res.best_member
    s = gdl.soups(res, data, fitness="accuracy")
    return {"test_accuracy": float(best.evaluate(data, "test")["accuracy"]),
            "val_accuracy": float(best.evaluate(data, "val")["accuracy"]),
            "soup": {"chosen": s.chosen_name,
                     "test_accuracy": float(s.test_metrics(data)["accuracy"]),
                     "val_fitness": {k: float(v) for k, v in s.fitness.items()},
                     "uniform_val_accuracy": float(s.uniform_metrics["accuracy"]),
                     "greedy_val_accuracy": float(s.greedy_metrics["accuracy"]),
                     "ensemble_val_accuracy": float(s.ensemble_metrics["accuracy"]),
                     "greedy_size": len(s.ingredients["greedy"])},
            "seconds": seconds, "barrier": barrier(res.population, data),
            "network_epochs": int(res.history[-1]["network_epochs"])}


def run_seed(name, seed, arms, data, model, sizes):
    """Every arm of one set on one seed, from one initial population."""
    key = jax.random.key(seed)
    pop = gdl.init_population(key, model, data, sizes[0])
    shared = gdl.shared_start(pop)
    out = {}
    for arm in arms:
        out[arm] = rec = run_arm(arm, key, pop, shared, data, sizes)
        print(f"  {name} seed {seed} {arm:<17} test acc {rec['test_accuracy']:.4f}  soup "
              f"({rec['soup']['chosen']}) {rec['soup']['test_accuracy']:.4f}  barrier "
              f"{rec['barrier']['barrier']:+.3f}  {rec['seconds']:.1f} s", flush=True)
    return out


def machine():
    """What the numbers were measured on."""
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "devices": f"{jax.device_count()} {jax.devices()[0].platform}"}


def load(path):
    """The JSON so far, or an empty one."""
    if not os.path.exists(path):
        return {"sets": {}, "settings": {}, "runs": []}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def paired_rows(arms_seeds, metric):
    """``{arm: {"mean", "n", control: paired(...)}}`` over the seeds each pair shares."""
    rows = {}
    for arm, seeds in arms_seeds.items():
        vals = [metric(r) for r in seeds.values()]
        row = {"n": len(vals), "mean": float(np.mean(vals))}
        for control in CONTROLS:
            if control == arm or control not in arms_seeds:
                continue
            common = sorted(set(seeds) & set(arms_seeds[control]), key=int)
            if common:
                row[control] = paired([metric(arms_seeds[control][s]) for s in common],
                                      [metric(seeds[s]) for s in common])
        rows[arm] = row
    return rows


def print_tables(results):
    """Per set: each arm's mean test accuracy and its paired differences to the controls."""
    metrics = {"best member": lambda r: r["test_accuracy"],
               "soup (chosen on val)": lambda r: r["soup"]["test_accuracy"]}
    tables = {}
    for name, arms_seeds in results["sets"].items():
        tables[name] = {}
        for what, metric in metrics.items():
            rows = paired_rows(arms_seeds, metric)
            tables[name][what] = rows
            print(f"\n{name}: {what} test accuracy; paired difference arm - control in points, "
                  f"mean [95 % interval] over the seeds both have")
            print(f"  {'arm':<17} {'n':>2} {'acc':>7} {'barrier':>8} {'s':>6}  " +
                  "  ".join(f"{'vs ' + c:<23}" for c in CONTROLS))
            for arm, row in rows.items():
                recs = list(arms_seeds[arm].values())
                barr = np.mean([r["barrier"]["barrier"] for r in recs])
                sec = np.mean([r["seconds"] for r in recs])
                cells = []
                for c in CONTROLS:
                    p = row.get(c)
                    cells.append(f"{'':<23}" if p is None else
                                 f"{100 * p['mean']:+6.2f} [{100 * p['lo']:+6.2f},"
                                 f"{100 * p['hi']:+6.2f}]")
                print(f"  {arm:<17} {row['n']:>2} {row['mean']:>7.4f} {barr:>+8.3f} {sec:>6.1f}  "
                      + "  ".join(cells))
    return tables


def plot(results, path):
    """Paired differences to best_of_p per set, if matplotlib is there and seeds >= 2."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("matplotlib is absent: no plot")
        return
    sets = {n: a for n, a in results["sets"].items()
            if "best_of_p" in a and len(a["best_of_p"]) >= 2}
    if not sets:
        return
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, (name, arms_seeds) in zip(axes[0], sets.items()):
        rows = paired_rows(arms_seeds, lambda r: r["test_accuracy"])
        arms = [a for a, row in rows.items() if "best_of_p" in row]
        mean = np.array([100 * rows[a]["best_of_p"]["mean"] for a in arms])
        lo = np.array([100 * rows[a]["best_of_p"]["lo"] for a in arms])
        hi = np.array([100 * rows[a]["best_of_p"]["hi"] for a in arms])
        ax.errorbar(mean, range(len(arms)), xerr=[mean - lo, hi - mean], fmt="o", capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(arms)), arms, fontsize=8)
        ax.set_xlabel("test accuracy - best_of_p (points), 95 % interval")
        ax.set_title(f"{name} (n={len(arms_seeds['best_of_p'])})", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    """Runs the seeds asked for, merges them into --out and prints the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--set", nargs="+", choices=list(SETS), default=["digits_cnn"],
                        dest="sets")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--tiny", action="store_true",
                        help=f"P, generations, epochs = {TINY} on 256 training rows: a check")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/"
                        "recombination.json (--tiny: /tmp/recombination_tiny.json)")
    parser.add_argument("--plot", default=None, help="default: img/recombination.png "
                        "(--tiny: /tmp/recombination_tiny.png)")
    args = parser.parse_args()
    if args.out is None:
        args.out = "/tmp/recombination_tiny.json" if args.tiny else os.path.join(
            ROOT, "benchmarks", "results", "recombination.json")
    if args.plot is None:
        args.plot = "/tmp/recombination_tiny.png" if args.tiny else os.path.join(
            ROOT, "img", "recombination.png")
    results = load(args.out)
    est = 0.05 if args.tiny else sum(MINUTES_PER_SEED[n] for n in args.sets)
    est *= len(args.seeds) * len(args.arms) / len(ARMS)
    print(f"{len(args.sets)} set(s) x {len(args.seeds)} seed(s) x {len(args.arms)} arms: "
          f"about {est:.1f} min estimated on 2 cores", flush=True)
    start = time.perf_counter()
    for name in args.sets:
        data, model, p, generations, epochs = make_set(name, args.tiny)
        settings = {"P": p, "generations": generations, "epochs": epochs, "tiny": args.tiny}
        old = results["settings"].get(name)
        if old is not None and old != settings:
            raise SystemExit(f"{args.out} holds {name} with {old}, not {settings}: "
                             "give another --out")
        results["settings"][name] = settings
        for seed in args.seeds:
            t0 = time.perf_counter()
            recs = run_seed(name, seed, args.arms, data, model, (p, generations, epochs))
            for arm, rec in recs.items():
                results["sets"].setdefault(name, {}).setdefault(arm, {})[str(seed)] = rec
            results["runs"].append({"command": " ".join(["python"] + sys.argv), "set": name,
                                    "seed": seed, "arms": args.arms, "machine": machine(),
                                    "seconds": time.perf_counter() - t0,
                                    "time": time.strftime("%Y-%m-%d %H:%M:%S")})
            write_json(args.out, results)  # after every seed: an interrupted run keeps it
            print(f"{name} seed {seed} done in {time.perf_counter() - t0:.0f} s "
                  f"({(time.perf_counter() - start) / 60:.1f} min so far)", flush=True)
    results["tables"] = print_tables(results)
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    plot(results, args.plot)


if __name__ == "__main__":
    main()
