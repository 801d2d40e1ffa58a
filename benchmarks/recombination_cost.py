"""What recombination during training costs in throughput (issue #33's ≤ 5 % goal).

One generation of --epochs epochs of the weight loop with rule "none" (training and
evaluation only), each recombination method at its default rate and period (one round
per epoch), against no recombination, on digits: the MLP (128, 128) at P = 32 and the
CNN (16, 32) with a dense layer of 64 at P = 16, batch 64, 2 host devices. Rounds
interleave the arms (order reversed every other round); each call is timed after a
warm-up call that compiles. The JSON keeps every round's seconds; RESULTS.md gives each
method's median cost, the median of its per-round ratios to no recombination, minus 1.

Usage: python benchmarks/recombination_cost.py [--rounds 7] [--epochs 4]
Writes benchmarks/results/recombination_cost.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.app.rundir import write_json  # noqa: E402  pylint: disable=wrong-import-position

gdl.use_host_devices()  # one CPU device per core, before any JAX work
MODELS = {"mlp": (gdl.MLPSpec((128, 128)), 32), "cnn": (gdl.CNNSpec((16, 32), dense=(64,)), 16)}
ARMS = {"none": {}, "wash": {"recombination": "wash"}, "pull": {"recombination": "pull"},
        "pairwise": {"recombination": "pairwise"},
        "pull + REPAIR": {"recombination": "pull", "repair": 4}}


def _seconds(pop, data, epochs: int, options) -> float:
    config = gdl.WeightGAConfig(rule="none", **options)
    start = time.perf_counter()
    res = gdl.evolve_weights(jax.random.key(1), pop, data, generations=1, epochs=epochs,
                             batch_size=64, config=config)
    jax.block_until_ready(res.population.params)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "recombination_cost.json"))
    args = parser.parse_args()
    data = gdl.load_dataset("digits")
    table = []
    print(f"{'model':<5} {'P':>3} {'arm':<14} {'median s':>9} {'cost':>7}")
    for model, (spec, size) in MODELS.items():
        pop = gdl.shared_start(gdl.init_population(jax.random.key(0), spec, data, size))
        for options in ARMS.values():
            _seconds(pop, data, args.epochs, options)
        times = {arm: [] for arm in ARMS}
        for r in range(args.rounds):
            for arm in (list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]):
                times[arm].append(_seconds(pop, data, args.epochs, ARMS[arm]))
        for arm, values in times.items():
            ratios = [v / b for v, b in zip(values, times["none"])]
            table.append({"model": model, "P": size, "arm": arm, "seconds": values})
            print(f"{model:<5} {size:>3} {arm:<14} {statistics.median(values):>9.3f} "
                  f"{100 * (statistics.median(ratios) - 1):>+6.1f}%", flush=True)
    record = {"command": "python benchmarks/recombination_cost.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"{jax.device_count()} {jax.default_backend()} device(s), "
                         f"jax {jax.__version__}",
              "epochs": args.epochs, "batch": 64, "table": table}
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
