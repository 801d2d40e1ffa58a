"""Interleaved A/B of population training throughput between two checkouts of genetic_dl.

Each round runs one fresh process per checkout (A, then B, then the next round B first),
each timing ``genetic_dl.train`` on digits MLPs (128, 128) after a warm-up call: so an
engine change is measured against the code before it on the same machine, the same minute.

    git worktree add /tmp/before <commit>
    python benchmarks/ab_throughput.py --a /tmp/before --b . --rounds 5
    # -> benchmarks/results/ab_throughput.json, a table of member-epochs/s and B/A ratios
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from genetic_dl.app.rundir import write_json  # noqa: E402  pylint: disable=wrong-import-position

CHILD = """
import json, sys, time
import jax
import genetic_dl as gdl
gdl.use_host_devices()
data = gdl.load_dataset("digits")
out = {}
for size in map(int, sys.argv[1].split(",")):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((128, 128)), data, size)
    jax.block_until_ready(gdl.train(pop, data, 2)[0].params)  # compile
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < float(sys.argv[2]):
        pop = jax.block_until_ready(gdl.train(pop, data, 2)[0])
        calls += 1
    out[size] = size * 2 * calls / (time.perf_counter() - start)
print(json.dumps(out))
"""


def measure(root: str, child: str, *args: str) -> dict:
    """Runs ``child`` in a fresh process that imports genetic_dl from checkout ``root``;
    returns the JSON of its last line, keyed by int (the population sizes)."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    proc = subprocess.run([sys.executable, "-c", child, *args], env=env, capture_output=True,
                          text=True, check=True, cwd="/")
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def interleaved(roots: dict, rounds: int, child: str, *args: str) -> dict:
    """``{"a": [...], "b": [...]}``: one :func:`measure` per arm and round, A first in even
    rounds and B first in odd ones, so drift of the machine's speed hits both alike."""
    runs = {"a": [], "b": []}
    for r in range(rounds):
        for arm in ("a", "b") if r % 2 == 0 else ("b", "a"):
            runs[arm].append(measure(roots[arm], child, *args))
    return runs


def ab_parser(doc: str, sizes: list, out: str) -> argparse.ArgumentParser:
    """The options every A/B script takes: the two checkouts, sizes, rounds and output."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--a", required=True, help="checkout A (e.g. the commit before)")
    parser.add_argument("--b", default=".", help="checkout B (default: this one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=sizes)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", out))
    return parser


def main() -> int:
    """Runs the rounds, prints the table and writes the JSON."""
    parser = ab_parser(__doc__, [8, 32, 128], "ab_throughput.json")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    runs = interleaved({"a": args.a, "b": args.b}, args.rounds, CHILD,
                       ",".join(map(str, args.sizes)), str(args.seconds))
    print(f"{'P':>5} {'A member-epochs/s':>18} {'B member-epochs/s':>18} {'B/A (median)':>13}")
    table = []
    for size in args.sizes:
        a = statistics.median(x[size] for x in runs["a"])
        b = statistics.median(x[size] for x in runs["b"])
        ratios = [y[size] / x[size] for x, y in zip(runs["a"], runs["b"])]
        table.append({"P": size, "a": a, "b": b, "ratio_median": statistics.median(ratios),
                      "ratios": ratios})
        print(f"{size:>5} {a:>18.1f} {b:>18.1f} {statistics.median(ratios):>13.3f}")
    return write_record("ab_throughput.py", args, table, runs)


def write_record(script: str, args: argparse.Namespace, table: list, runs: dict) -> int:
    """Writes an A/B's table and runs, with its command and machine, to ``args.out``."""
    record = {"command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "a": args.a,
              "b": args.b, "table": table, "runs": runs}
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
