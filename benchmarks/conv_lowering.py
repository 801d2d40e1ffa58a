"""Lowerings of a population's convolutions on this backend, per input shape.

P members of the zoo CNN (``gdl.CNNSpec((16, 32), dense=(64,))``: patch convolutions
whose input gradient is a convolution, pairwise max pooling), batch 64, Adam 1e-3,
--steps steps in one jitted scan per call, on one device:

  one_at_a_time   each member's own program in a loop (lax.map): the engine's fixed
                  rule on CPU for a model with convolutions
  vmapped         one program vmapped over the members, each on its own minibatch
                  (patches times a batched matrix; the input gradient one grouped
                  convolution)
  vmapped_shared  the same with every member on the same minibatch, so the first
                  layer's patches are computed once and it is one matmul to P x C_out
                  channels (members would no longer depend only on their own key)

Shapes: 8x8 (digits), 28x28 (MNIST-size), 32x32 (a frame of moving digits), 40
(mnist1d signals). Rounds interleave the arms; the table gives the median ms per
member-step and the median of the per-round ratios to one_at_a_time.

Usage: python benchmarks/conv_lowering.py [--size 16] [--rounds 7] [--steps 8]
Writes benchmarks/results/conv_lowering.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.app.rundir import write_json  # noqa: E402  pylint: disable=wrong-import-position
from genetic_dl.core.models import CNN  # noqa: E402  pylint: disable=wrong-import-position

BATCH = 64
SHAPES = {"8x8": (8, 8), "28x28": (28, 28), "32x32": (32, 32), "40": (40,)}
ARMS = ("one_at_a_time", "vmapped", "vmapped_shared")


def _programs(shape, size: int, steps: int):
    """The three arms' jitted programs and their arguments."""
    net = CNN(gdl.CNNSpec((16, 32), dense=(64,)), 10)
    rng = np.random.default_rng(0)
    x_own = rng.random((steps, size, BATCH) + shape, np.float32)
    y_own = rng.integers(0, 10, (steps, size, BATCH))
    x_one, y_one = x_own[:, 0], y_own[:, 0]
    params = jax.vmap(lambda k: net.init(k, x_one[0]))(jax.random.split(jax.random.key(0), size))
    opt = optax.adam(1e-3)
    state = jax.vmap(opt.init)(params)

    def loss(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(net.apply(p, xb), yb).mean()

    def member_step(carry, batch):
        p, s = carry
        updates, s = opt.update(jax.grad(loss)(p, *batch), s, p)
        return optax.apply_updates(p, updates), s

    def one_at_a_time(p, s, xs, ys):
        def member(args):
            return jax.lax.scan(lambda c, b: (member_step(c, b), None), args[0],
                                (args[1], args[2]))[0]
        return jax.lax.map(member, ((p, s), xs.swapaxes(0, 1), ys.swapaxes(0, 1)))

    def vmapped(p, s, xs, ys):
        return jax.lax.scan(lambda c, b: (jax.vmap(member_step)(c, b), None), (p, s),
                            (xs, ys))[0]

    def vmapped_shared(p, s, xs, ys):
        step = jax.vmap(member_step, in_axes=(0, None))
        return jax.lax.scan(lambda c, b: (step(c, b), None), (p, s), (xs, ys))[0]

    return {"one_at_a_time": (jax.jit(one_at_a_time), (params, state, x_own, y_own)),
            "vmapped": (jax.jit(vmapped), (params, state, x_own, y_own)),
            "vmapped_shared": (jax.jit(vmapped_shared), (params, state, x_one, y_one))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "conv_lowering.json"))
    args = parser.parse_args()
    table = []
    print(f"{'shape':<6} {'arm':<15} {'ms/member-step':>15} {'ratio':>6}")
    for name in args.shapes:
        programs = _programs(SHAPES[name], args.size, args.steps)
        for fn, inputs in programs.values():  # compile outside the timed calls
            jax.block_until_ready(fn(*inputs))
        times = {arm: [] for arm in ARMS}
        for r in range(args.rounds):
            for arm in (ARMS if r % 2 == 0 else ARMS[::-1]):
                fn, inputs = programs[arm]
                start = time.perf_counter()
                jax.block_until_ready(fn(*inputs))
                times[arm].append(1e3 * (time.perf_counter() - start) / args.steps / args.size)
        for arm in ARMS:
            ratios = [t / b for t, b in zip(times[arm], times["one_at_a_time"])]
            table.append({"shape": name, "arm": arm, "ms_per_member_step": times[arm]})
            print(f"{name:<6} {arm:<15} {statistics.median(times[arm]):>15.2f} "
                  f"{statistics.median(ratios):>6.2f}", flush=True)
    record = {"command": "python benchmarks/conv_lowering.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"{jax.device_count()} {jax.default_backend()} device(s), "
                         f"jax {jax.__version__}",
              "size": args.size, "steps": args.steps, "batch": BATCH, "table": table}
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
