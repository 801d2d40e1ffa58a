"""Array path against stream path: member-epochs per second on the same data, interleaved.

The array path trains a whole epoch in one program (the data on the device); the stream
path (genetic_dl.Stream) runs one jitted step per batch that the host hands over, from
arrays in memory or from memory-mapped .npy files. Both train the same digits MLPs
(128, 128) at batch 64; each member iterates its own batch order. Rounds are interleaved
and the median reported; compile time is excluded (one warm-up call each).

    python benchmarks/stream_throughput.py [--sizes 8 32] [--rounds 5] [--epochs 2]
Writes benchmarks/results/stream_throughput.json.
"""
import argparse
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


def _stream(x, y, data):
    def make_iter(epoch, seed):
        del epoch
        order = np.random.default_rng(seed).permutation(len(x))
        for i in range(len(order) // BATCH):
            idx = np.sort(order[i * BATCH:(i + 1) * BATCH])
            yield {"x": np.asarray(x[idx], np.float32), "y": np.asarray(y[idx])}
    return gdl.Stream(make_iter, val={"x": data.x_val, "y": data.y_val})


def _rate(pop, data, epochs: int) -> float:
    start = time.perf_counter()
    jax.block_until_ready(gdl.train(pop, data, epochs, batch_size=BATCH)[0].params)
    return pop.size * epochs / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "stream_throughput.json"))
    args = parser.parse_args()
    data = gdl.load_dataset("digits")
    tmp = tempfile.mkdtemp()
    np.save(os.path.join(tmp, "x.npy"), data.x_train)
    np.save(os.path.join(tmp, "y.npy"), data.y_train)
    arms = {"array": data, "stream (memory)": _stream(data.x_train, data.y_train, data),
            "stream (mmap .npy)": _stream(np.load(os.path.join(tmp, "x.npy"), mmap_mode="r"),
                                          np.load(os.path.join(tmp, "y.npy"), mmap_mode="r"),
                                          data)}
    table = []
    print(f"{'P':>4} {'arm':<20} {'member-epochs/s':>16} {'/ array':>8}")
    for size in args.sizes:
        pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((128, 128)), data, size)
        rates = {name: [] for name in arms}
        for name, d in arms.items():  # compile what is timed: epochs is a static argument
            _rate(pop, d, args.epochs)
        for r in range(args.rounds):
            for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                rates[name].append(_rate(pop, arms[name], args.epochs))
        base = statistics.median(rates["array"])
        for name, values in rates.items():
            rate = statistics.median(values)
            table.append({"P": size, "arm": name, "member_epochs_per_s": rate,
                          "ratio_to_array": rate / base, "rounds": values})
            print(f"{size:>4} {name:<20} {rate:>16.1f} {rate / base:>8.2f}")
    record = {"command": "python benchmarks/stream_throughput.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"{jax.device_count()} {jax.default_backend()} device(s)",
              "table": table}
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
