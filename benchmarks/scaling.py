"""Population training vs population size and device count; the GA step's share of a generation.

Each (P, devices) point runs in a fresh process (so the device count can be forced and peak
memory measured alone): member-epochs/s of the digits MLP 64-128-128-10 (batch 64, adam),
its GFLOP/s as a fraction of this machine's dense float32 matmul ceiling, and peak RSS.
Then, at P = 128, the GA step (select + cross + mutate) against a 5-epoch generation; aligned
crossover matched to the best member is timed in a generation that re-matches (2 sweeps, the
default, or until converged) and in one that crosses the inherited unit order, and their mean over re-matching
every 5th / 10th / 20th generation is printed, with the two parts of one weight-matching sweep
(similarity matmuls, greedy assignments) timed alone. The arms run interleaved, 15 rounds (medians).

Usage: python benchmarks/scaling.py [--sizes 8 32 128 512 1024] [--devices 1 2]
Writes benchmarks/results/scaling.json and img/scaling.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

POINT = r"""
import json, resource, sys, time
import jax, numpy as np
import genetic_dl as gdl
size, epochs = int(sys.argv[1]), int(sys.argv[2])
data = gdl.load_dataset("digits")
pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((128, 128)), data, size)
out, _ = gdl.train(pop, data, epochs)
jax.block_until_ready(out.params)
t0 = time.perf_counter()
out, _ = gdl.train(out, data, epochs)
jax.block_until_ready(out.params)
seconds = time.perf_counter() - t0
print(json.dumps({"P": size, "devices": jax.device_count(), "seconds": seconds,
                  "member_epochs_per_s": size * epochs / seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

GA_STEP = r"""
import json, time
import jax, jax.numpy as jnp, numpy as np
import genetic_dl as gdl
from genetic_dl.operators import matching  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.operators import permutation  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.core import sharding  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.weights import WeightGAConfig  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.weights.rules.ga import ga_step  # noqa: E402  pylint: disable=wrong-import-position
data = gdl.load_dataset("digits")
pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((128, 128)), data, 128)
pop, _ = gdl.train(pop, data, 5)
jax.block_until_ready(pop.params)
times = []
for _ in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(gdl.train(pop, data, 5)[0].params)
    times.append(time.perf_counter() - t0)
generation = float(np.median(times))
fit = gdl.fitness_from_metrics(gdl.evaluate(pop, data))
best = (("match_to", "best"), ("every", 5))
arms = [
    ("uniform", WeightGAConfig(), 0),
    ("uniform+table", WeightGAConfig(noise_table=True), 0),
    ("per_neuron", WeightGAConfig(crossover="per_neuron"), 0),
    ("per_neuron+table", WeightGAConfig(crossover="per_neuron", noise_table=True), 0),
    ("aligned", WeightGAConfig(crossover="aligned"), 0),
    ("aligned_1pass", WeightGAConfig(crossover="aligned", crossover_kw=(("passes", 1),)), 0),
    ("aligned_converged", WeightGAConfig(crossover="aligned", crossover_kw=(("passes", None),)),
     0),
    ("aligned_best_matching", WeightGAConfig(crossover="aligned", crossover_kw=best), 0),
    ("aligned_best_matching_converged", WeightGAConfig(
        crossover="aligned", crossover_kw=best + (("passes", None),)), 0),
    ("aligned_best_inherited", WeightGAConfig(crossover="aligned", crossover_kw=best), 1),
    ("aligned_exact", WeightGAConfig(crossover="aligned", crossover_kw=(("matcher", "exact"),)), 0),
    ("aligned_exact_1pass", WeightGAConfig(
        crossover="aligned", crossover_kw=(("matcher", "exact"), ("passes", 1))), 0)]
# one weight-matching sweep's two parts, each member matched to its neighbour: no faster
# matching algorithm can skip the similarity matmuls
pb = sharding.shard_members(jax.tree_util.tree_map(lambda x: jnp.roll(x, 1, axis=0), pop.params),
                            sharding.mesh_of(pop.params))


spec = permutation.spec_of(pop)
sizes = permutation.group_sizes(spec, pop.member(0))


def _sims(a, b):
    same = {g: jnp.arange(n) for g, n in sizes.items()}
    return [permutation.similarity(spec, a, b, same, g, sizes) for g in spec.groups]


sims = jax.jit(jax.vmap(_sims))
greedy = jax.jit(lambda ss: [jax.vmap(matching.greedy_assignment)(s) for s in ss])
S = sims(pop.params, pb)
parts = [("sweep_similarities", lambda: sims(pop.params, pb)), ("sweep_greedy", lambda: greedy(S))]
for name, cfg, gen in arms:  # compile
    jax.block_until_ready(ga_step(jax.random.key(1), pop, fit, gen, cfg)[0].params)
for name, fn in parts:
    jax.block_until_ready(fn())
times = {name: [] for name, _, _ in arms}
times.update({name: [] for name, _ in parts})
for i in range(15):  # rounds of every arm, interleaved: the median of each arm's rounds
    for name, cfg, gen in arms:
        t0 = time.perf_counter()
        jax.block_until_ready(ga_step(jax.random.key(2 + i), pop, fit, gen, cfg)[0].params)
        times[name].append(time.perf_counter() - t0)
    for name, fn in parts:
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times[name].append(time.perf_counter() - t0)
out = {"generation_s": generation}
out.update({name: float(np.median(t)) for name, t in times.items()})
print(json.dumps(out))
"""

CEILING = r"""
import json, time
import jax, jax.numpy as jnp
n = 2048
a = jax.random.normal(jax.random.key(0), (n, n))
f = jax.jit(lambda x, y: x @ y)
f(a, a).block_until_ready()
t0 = time.perf_counter()
for _ in range(10):
    f(a, a).block_until_ready()
print(json.dumps({"gflops": 10 * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9}))
"""


def run(code: str, devices: int, *args) -> dict:
    """Runs ``code`` in a fresh interpreter with ``devices`` host devices; returns its JSON."""
    env = dict(os.environ, PYTHONPATH=ROOT, GENETIC_DL_HOST_DEVICES=str(devices),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, text=True,
                          capture_output=True, check=False, timeout=1200)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ga_step(devices: int) -> dict:
    ga = run(GA_STEP, devices)
    print(f"\nGA step at P=128 vs one 5-epoch generation ({ga['generation_s']:.2f} s), "
          f"{devices} device(s):")
    for name, seconds in ga.items():
        if name != "generation_s":
            print(f"  {name:<31} {1000 * seconds:8.1f} ms  = "
                  f"{100 * seconds / (ga['generation_s'] + seconds):.1f} % of a generation")
    floor = ga["uniform"] + ga["sweep_similarities"]
    ga["floor_matching_every_generation"] = floor
    print(f"  floor of matching in every generation (uniform step + one sweep's similarities, no "
          f"assignment): {1000 * floor:.1f} ms = {100 * floor / (ga['generation_s'] + floor):.1f} %")
    for every in (5, 10, 20):  # re-matching to the best every k-th generation, inherited between
        for matching in ("aligned_best_matching", "aligned_best_matching_converged"):
            seconds = (ga[matching] + (every - 1) * ga["aligned_best_inherited"]) / every
            ga[f"aligned_best_every{every}{matching[21:]}"] = seconds
            print(f"  aligned to best, every {every:<2}{matching[21:]:<11} {1000 * seconds:6.1f} ms"
                  f"  = {100 * seconds / (ga['generation_s'] + seconds):.1f} % of a generation "
                  f"(mean)")
    return ga


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128, 512, 1024])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--ga-only", action="store_true",
                        help="measure only the GA step; keep the other figures in the JSON")
    parser.add_argument("--no-ga", action="store_true", help="skip the GA step's timing")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "scaling.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "img", "scaling.png"))
    args = parser.parse_args()
    out = args.out
    if args.ga_only:
        with open(out, encoding="utf-8") as f:
            result = json.load(f)
        result["ga_step"] = _ga_step(max(args.devices))
        result["ga_command"] = " ".join(["python"] + sys.argv)
        with open(out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        os.replace(out + ".tmp", out)
        return
    member_flops = 3 * 2 * (64 * 128 + 128 * 128 + 128 * 10) * 1024  # 16 steps x 64 examples
    ceiling = run(CEILING, 1)["gflops"]
    print(f"dense float32 matmul ceiling (2048^3, one device): {ceiling:.0f} GFLOP/s")
    rows = []
    print(f"{'P':>5} {'devices':>7} {'member-ep/s':>12} {'GFLOP/s':>8} {'of ceiling':>10} "
          f"{'peak MB':>8}")
    for devices in args.devices:
        for size in args.sizes:
            r = run(POINT, devices, size, args.epochs)
            r["gflops"] = r["member_epochs_per_s"] * member_flops / 1e9
            r["fraction_of_ceiling"] = r["gflops"] / ceiling
            rows.append(r)
            print(f"{size:>5} {devices:>7} {r['member_epochs_per_s']:>12.1f} {r['gflops']:>8.1f} "
                  f"{r['fraction_of_ceiling']:>10.2f} {r['peak_rss_mb']:>8.0f}", flush=True)
    ga = None if args.no_ga else _ga_step(max(args.devices))
    result = {"ceiling_gflops": ceiling, "rows": rows, "ga_step": ga,
              "command": " ".join(["python"] + sys.argv), "cores": os.cpu_count()}
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)
    print(f"wrote {out}")
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for devices in args.devices:
        pts = [r for r in rows if r["devices"] == devices]
        axes[0].plot([r["P"] for r in pts], [r["member_epochs_per_s"] for r in pts], marker="o",
                     label=f"{devices} device(s)")
        axes[1].plot([r["P"] for r in pts], [r["peak_rss_mb"] for r in pts], marker="o",
                     label=f"{devices} device(s)")
    for ax, label in zip(axes, ("member-epochs / s", "peak memory (MB, RSS)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("population size P")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"digits MLP 64-128-128-10, batch 64, adam; {os.cpu_count()} cores; "
                 f"matmul ceiling {ceiling:.0f} GFLOP/s", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
