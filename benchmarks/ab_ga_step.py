"""Interleaved A/B of the weight GA's step (aligned and per-neuron crossover) between two
checkouts of genetic_dl.

Each round runs one fresh process per checkout (A, then B, then the next round B first) on
2 host devices. A process trains a digits MLP (128, 128) population of each size for 3 epochs,
compiles every arm, then times ``ga_step`` for the arms in turn, ``--reps`` times; its figure
per arm is the median of those calls. So a change to the crossover path is measured against the
code before it on the same machine, the same minute.

    git worktree add /tmp/before <commit>
    python benchmarks/ab_ga_step.py --a /tmp/before --b . --rounds 5
    # -> benchmarks/results/ab_ga_step.json, a table of milliseconds per step and B/A ratios
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from ab_throughput import (  # noqa: E402  pylint: disable=wrong-import-position
    ab_parser, interleaved, write_record)

# The child imports ga_step from where each layout keeps it: the flat package had it in
# genetic_dl.weight_ga, the subpackages in genetic_dl.weights.rules.ga.
CHILD = """
import json, statistics, sys, time
import jax
import genetic_dl as gdl
try:
    from genetic_dl.weights.rules.ga import ga_step
except ImportError:
    from genetic_dl.weight_ga import ga_step
gdl.use_host_devices()
data = gdl.load_dataset("digits")
best = (("match_to", "best"), ("every", 5))
arms = {"aligned": gdl.WeightGAConfig(crossover="aligned"),
        "aligned_best_matching": gdl.WeightGAConfig(crossover="aligned", crossover_kw=best),
        "aligned_exact": gdl.WeightGAConfig(crossover="aligned",
                                            crossover_kw=(("matcher", "exact"),)),
        "per_neuron": gdl.WeightGAConfig(crossover="per_neuron")}
out = {}
for size in map(int, sys.argv[1].split(",")):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((128, 128)), data, size)
    pop = jax.block_until_ready(gdl.train(pop, data, 3)[0])
    fit = gdl.fitness_from_metrics(gdl.evaluate(pop, data))
    for cfg in arms.values():  # compile
        jax.block_until_ready(ga_step(jax.random.key(1), pop, fit, 0, cfg)[0].params)
    times = {name: [] for name in arms}
    for i in range(int(sys.argv[2])):
        for name, cfg in arms.items():
            t0 = time.perf_counter()
            jax.block_until_ready(ga_step(jax.random.key(2 + i), pop, fit, 0, cfg)[0].params)
            times[name].append(time.perf_counter() - t0)
    out[size] = {name: 1000 * statistics.median(t) for name, t in times.items()}
print(json.dumps(out))
"""


def main() -> int:
    """Runs the rounds, prints the table and writes the JSON."""
    parser = ab_parser(__doc__, [32, 128], "ab_ga_step.json")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    runs = interleaved({"a": args.a, "b": args.b}, args.rounds, CHILD,
                       ",".join(map(str, args.sizes)), str(args.reps))
    print(f"{'P':>5} {'arm':<22} {'A ms':>8} {'B ms':>8} {'B/A (median)':>13}")
    table = []
    for size in args.sizes:
        for name in runs["a"][0][size]:
            a = statistics.median(x[size][name] for x in runs["a"])
            b = statistics.median(x[size][name] for x in runs["b"])
            ratios = [y[size][name] / x[size][name] for x, y in zip(runs["a"], runs["b"])]
            table.append({"P": size, "arm": name, "a_ms": a, "b_ms": b,
                          "ratio_median": statistics.median(ratios), "ratios": ratios})
            print(f"{size:>5} {name:<22} {a:>8.1f} {b:>8.1f} {statistics.median(ratios):>13.3f}")
    return write_record("ab_ga_step.py", args, table, runs)


if __name__ == "__main__":
    sys.exit(main())
