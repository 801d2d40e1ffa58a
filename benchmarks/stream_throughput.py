"""Array path against stream path: member-epochs per second on the same data, interleaved.

The array path trains whole epochs in one program (the data on the device); the stream
path (genetic_dl.Stream) trains chunks of steps that the host stages, a prefetch thread
making the next chunk while one trains. Both train the digits MLP (128, 128) and the digits
CNN (16, 32) with a dense layer of 64, batch 64; each member iterates its own batch order.
Stream arms:

  Dataset (memory)      Stream.from_dataset on the arrays in memory: every member's chunk
                        gathered at once
  Dataset (mmap .npy)   the same over memory-mapped .npy files
  make_iter (memory)    a Python generator per member (user code per member and batch)

Rounds interleave the arms (their order reversed every other round); each call trains
--epochs epochs, compile excluded (one warm-up call each). The JSON keeps every round's rate;
RESULTS.md reports medians with their ranges, and the median of the per-round ratios to the
array path.

    python benchmarks/stream_throughput.py [--models mlp cnn] [--sizes 8 32] [--rounds 7]
Writes benchmarks/results/stream_throughput.json.
"""
import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.app.rundir import write_json  # noqa: E402  pylint: disable=wrong-import-position

gdl.use_host_devices()  # one CPU device per core, before any JAX work
BATCH = 64
MODELS = {"mlp": gdl.MLPSpec((128, 128)), "cnn": gdl.CNNSpec((16, 32), dense=(64,))}


def _generator(data):
    x, y = data.x_train, data.y_train

    def make_iter(epoch, seed):
        del epoch
        order = np.random.default_rng(seed).permutation(len(x))
        for i in range(len(order) // BATCH):
            idx = np.sort(order[i * BATCH:(i + 1) * BATCH])
            yield {"x": np.asarray(x[idx], np.float32), "y": np.asarray(y[idx])}
    return gdl.Stream(make_iter, val={"x": data.x_val, "y": data.y_val})


def _memory_mapped(data, folder):
    arrays = {}
    for name in ("x_train", "y_train"):
        np.save(os.path.join(folder, f"{name}.npy"), getattr(data, name))
        arrays[name] = np.load(os.path.join(folder, f"{name}.npy"), mmap_mode="r")
    return dataclasses.replace(data, **arrays)


def _rate(pop, data, epochs: int) -> float:
    start = time.perf_counter()
    jax.block_until_ready(gdl.train(pop, data, epochs, batch_size=BATCH)[0].params)
    return pop.size * epochs / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "stream_throughput.json"))
    args = parser.parse_args()
    data = gdl.load_dataset("digits")
    arms = {"array": data,
            "Dataset (memory)": gdl.Stream.from_dataset(data, BATCH),
            "Dataset (mmap .npy)": gdl.Stream.from_dataset(
                _memory_mapped(data, tempfile.mkdtemp()), BATCH),
            "make_iter (memory)": _generator(data)}
    load = [os.getloadavg()[0]]
    table = []
    print(f"{'model':<5} {'P':>4} {'arm':<20} {'median':>8} {'range':>15} {'ratio':>6}")
    for model in args.models:
        for size in args.sizes:
            pop = gdl.init_population(jax.random.key(0), MODELS[model], data, size)
            rates = {name: [] for name in arms}
            for d in arms.values():  # compile what is timed: epochs is a static argument
                _rate(pop, d, args.epochs)
            for r in range(args.rounds):
                for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                    rates[name].append(_rate(pop, arms[name], args.epochs))
            for name, values in rates.items():
                table.append({"model": model, "P": size, "arm": name, "rounds": values})
                ratios = [v / a for v, a in zip(values, rates["array"])]
                print(f"{model:<5} {size:>4} {name:<20} {statistics.median(values):>8.1f} "
                      f"{min(values):>7.1f}-{max(values):<7.1f} "
                      f"{statistics.median(ratios):>6.2f}")
    load.append(os.getloadavg()[0])
    record = {"command": "python benchmarks/stream_throughput.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"{jax.device_count()} {jax.default_backend()} device(s)",
              "epochs": args.epochs, "batch": BATCH, "load_average": load, "table": table}
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
