"""Minimal reproducer of an XLA CPU deadlock in jaxlib >= 0.10: batched QR.

No genetic_dl, no flax: one jitted program with several independent chains of
``jax.random.normal`` -> ``jnp.linalg.qr`` over a batch of 2 matrices of 128 x 128
(what a vmapped population of 2 members does in an orthogonal initialiser, e.g. a
2-layer LSTM's recurrent kernels). jaxlib's LAPACK kernels split a batch whose work
exceeds ~2e5 FLOP into tasks on the XLA CPU intra-op thread pool and block until
they finish (``ParallelBatchMap``), while running on a worker of that same pool.
When every worker is blocked that way, nobody runs the tasks: the process sleeps
forever with no CPU use. A batch of 1 runs inline and cannot wedge, which is why
``genetic_dl.init_population`` initialises members one at a time (``lax.map``).

Runs each case in a subprocess with a timeout (other jax releases: PYTHONPATH to
a folder they were installed in with ``pip install --target``; results in
benchmarks/RESULTS.md):

    python benchmarks/xla_qr_deadlock.py            # prints a table; exit 1 if any case hung
    python benchmarks/xla_qr_deadlock.py --json benchmarks/results/xla_qr_deadlock.json
    python benchmarks/xla_qr_deadlock.py --child 2 16  # one case in this process (may hang)
"""
import argparse
import json
import os
import subprocess
import sys
import time

CASES = ((1, 16), (2, 16))  # (batch, independent chains)


def child(batch: int, chains: int, size: int = 128) -> None:
    """The program that wedges (batch >= 2) or finishes (batch 1)."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    def chains_of_qr(key):
        keys = jax.random.split(key, chains)
        return [jnp.linalg.qr(jax.random.normal(k, (batch, size, size)))[0] for k in keys]
    out = jax.jit(chains_of_qr)(jax.random.key(0))
    print(sum(float(q.sum()) for q in out), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, type=int, metavar=("BATCH", "CHAINS"))
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="append this jax release's rows here")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    import jax  # pylint: disable=import-outside-toplevel
    print(f"jax {jax.__version__}, {os.cpu_count()} cores")
    print(f"{'batch':>5} {'chains':>6}  results (finished in s, or hang)")
    hung = False
    rows = []
    for batch, chains in CASES:
        results = []
        for _ in range(args.repeats):
            start = time.time()
            try:
                subprocess.run([sys.executable, __file__, "--child", str(batch), str(chains)],
                               capture_output=True, timeout=args.timeout, check=True)
                results.append(f"{time.time() - start:.1f}")
            except subprocess.TimeoutExpired:
                results.append("hang")
                hung = True
        print(f"{batch:>5} {chains:>6}  {' '.join(results)}")
        rows.append({"jax": jax.__version__, "batch": batch, "chains": chains,
                     "results": results, "timeout_s": args.timeout, "cores": os.cpu_count()})
    if args.json:
        old = json.load(open(args.json, encoding="utf-8")) if os.path.exists(args.json) else []
        old = [r for r in old if r["jax"] != jax.__version__] + rows
        with open(args.json + ".tmp", "w", encoding="utf-8") as f:
            json.dump(old, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
