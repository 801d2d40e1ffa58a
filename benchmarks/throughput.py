"""Member-epochs per second of population training, against its alternatives.

Variants, measured side by side in one process, interleaved in rounds (compile time excluded,
reported apart):
  population        genetic_dl: all P members in one vmapped, jitted program, sharded over
                    the host devices (one per core by default, see genetic_dl.use_host_devices);
  population_1device  the same program on one XLA device (GENETIC_DL_HOST_DEVICES=0);
  sequential_jax    the same members one after another, each a jitted scanned epoch loop
                    (genetic_dl.train on a population of one);
  sequential_torch  the same members one after another in PyTorch on CPU (torch.optim.Adam);
  batched_torch     a hand-batched PyTorch population: stacked (P, in, out) weights, baddbmm,
                    one Adam over the stacked tensors (fused when available), per-member
                    minibatches: the strongest PyTorch peer we know how to write;
  limit             one dense MLP whose per-step FLOPs equal the whole population's
                    (hidden width w with 64w + w^2 + 10w = P * member FLOPs), trained in
                    one jitted scan: what the hardware gives one big network.

Usage: python benchmarks/throughput.py [--sizes 8 32 128] [--seconds 2] [--rounds 5] [--no-torch]
Writes benchmarks/results/throughput.json and img/throughput.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import genetic_dl as gdl  # noqa: E402  pylint: disable=wrong-import-position

gdl.use_host_devices()  # one CPU device per core, before any JAX work
HIDDEN = (128, 128)
BATCH = 64
ROOT = os.path.join(os.path.dirname(__file__), "..")


def machine() -> str:
    """A one-line description of this machine and its JAX devices."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device(s)")


def member_flops(data) -> float:
    """Training FLOPs of one member-epoch: 3x a forward pass (fwd + bwd) over used examples."""
    widths = (int(np.prod(data.feature_shape)),) + HIDDEN + (data.out_dim,)
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    used = (len(data.y_train) // BATCH) * BATCH
    return 3 * 2 * macs * used


def measure(variants, seconds: float, rounds: int):
    """Times the variants interleaved: each is compiled (first call, timed apart), then
    ``rounds`` times every variant runs for ``seconds / rounds`` in turn, so that a burst of
    other load on this shared machine hits all of them alike.

    Args:
      variants: ``{name: (run, member_epochs_per_call)}``.

    Returns:
      ``{name: (compile_s, [member-epochs/s of each round])}``.
    """
    out = {}
    for name, (run, _) in variants.items():
        t0 = time.perf_counter()
        run()
        out[name] = (time.perf_counter() - t0, [])
    for _ in range(rounds):
        for name, (run, per_call) in variants.items():
            calls, t0 = 0, time.perf_counter()
            while True:
                run()
                calls += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds / rounds:
                    break
            out[name][1].append(per_call * calls / elapsed)
    return out


def bench_population(data, size, epochs, mesh="auto"):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec(HIDDEN), data, size)

    def run():
        out, _ = gdl.train(pop, data, epochs, batch_size=BATCH, mesh=mesh)
        jax.block_until_ready(out.params)
    return run, size * epochs


def bench_sequential_jax(data, size, epochs):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec(HIDDEN), data, size)
    members = [gdl.take(pop, [i]) for i in range(size)]

    def run():
        for m in members:
            out, _ = gdl.train(m, data, epochs, batch_size=BATCH, mesh=None)
            jax.block_until_ready(out.params)
    return run, size * epochs


def bench_limit(data, size, epochs):
    """One wide MLP with the population's FLOPs per step, trained in one jitted scan."""
    d_in, d_out = int(np.prod(data.feature_shape)), data.out_dim
    widths = (d_in,) + HIDDEN + (d_out,)
    target = size * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    # solve w^2 + (d_in + d_out) w - target = 0
    width = int(round((-(d_in + d_out) + math.sqrt((d_in + d_out) ** 2 + 4 * target)) / 2))
    model = gdl.build_model(gdl.MLPSpec((width, width)), data.feature_shape, d_out)
    x = jnp.asarray(data.x_train)
    y = jnp.asarray(data.y_train)
    params = model.init(jax.random.key(0), x[:1])
    tx = optax.adam(1e-3)
    steps = len(y) // BATCH

    @jax.jit
    def fit(params, key):
        state = tx.init(params)

        def step(carry, idx):
            p, s = carry
            grads = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
                model.apply(q, x[idx]), y[idx]).mean())(p)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        def epoch(carry, k):
            order = jax.random.permutation(k, len(y))[:steps * BATCH].reshape(steps, BATCH)
            return jax.lax.scan(step, carry, order)[0], None
        return jax.lax.scan(epoch, (params, state), jax.random.split(key, epochs))[0][0]

    def run():
        jax.block_until_ready(fit(params, jax.random.key(1)))
    return (run, size * epochs), width


def bench_torch(data, size, epochs):
    import torch  # pylint: disable=import-outside-toplevel
    x = torch.tensor(data.x_train.reshape(len(data.x_train), -1))
    y = torch.tensor(data.y_train, dtype=torch.long)
    d_in = x.shape[1]
    torch.manual_seed(0)
    nets = []
    for _ in range(size):
        net = torch.nn.Sequential(torch.nn.Linear(d_in, HIDDEN[0]), torch.nn.ReLU(),
                                  torch.nn.Linear(HIDDEN[0], HIDDEN[1]), torch.nn.ReLU(),
                                  torch.nn.Linear(HIDDEN[1], data.out_dim))
        nets.append((net, torch.optim.Adam(net.parameters(), lr=1e-3)))
    steps = len(y) // BATCH
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        for net, opt in nets:
            for _ in range(epochs):
                order = torch.randperm(len(y))[:steps * BATCH].view(steps, BATCH)
                for idx in order:
                    opt.zero_grad(set_to_none=True)
                    loss_fn(net(x[idx]), y[idx]).backward()
                    opt.step()
    return run, size * epochs


def bench_torch_batched(data, size, epochs):
    """The strong peer: a hand-batched PyTorch population (stacked weights, baddbmm, one Adam
    over the stacked tensors, fused where this torch build allows). Adam is elementwise, so
    one optimizer over (P, ...) tensors is P independent Adams; each member shuffles alone."""
    import torch  # pylint: disable=import-outside-toplevel
    x = torch.tensor(data.x_train.reshape(len(data.x_train), -1))
    y = torch.tensor(data.y_train, dtype=torch.long)
    torch.manual_seed(0)
    dims = [x.shape[1], *HIDDEN, data.out_dim]
    weights, biases = [], []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        bound = 1 / math.sqrt(d_in)
        weights.append(torch.empty(size, d_in, d_out).uniform_(-bound, bound).requires_grad_())
        biases.append(torch.empty(size, 1, d_out).uniform_(-bound, bound).requires_grad_())
    try:
        opt = torch.optim.Adam(weights + biases, lr=1e-3, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(weights + biases, lr=1e-3, foreach=True)
    steps = len(y) // BATCH

    def forward(xb):
        h = xb
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b, h, w)
            if i < len(weights) - 1:
                h = torch.relu(h)
        return h

    def run():
        for _ in range(epochs):
            order = torch.argsort(torch.rand(size, len(y)), dim=1)[:, :steps * BATCH]
            order = order.view(size, steps, BATCH)
            for s in range(steps):
                idx = order[:, s]  # (P, B): each member's own minibatch
                logits = forward(x[idx])
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1),
                    reduction="sum") / BATCH  # = sum over members of each member's mean loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return run, size * epochs


def plot(rows, path):
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("matplotlib is absent: no plot (pip install 'genetic-dl[plots]')")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in ("population", "population_1device", "sequential_jax", "sequential_torch",
                    "batched_torch", "limit"):
        pts = [(r["P"], r["member_epochs_per_s"]) for r in rows if r["variant"] == variant]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=variant)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("population size P")
    ax.set_ylabel("member-epochs / s")
    ax.set_title(f"digits MLP 64-128-128-10, batch {BATCH}, adam\n{machine()}", fontsize=8)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per variant")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved timing rounds (ratios are their median)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed call")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "throughput.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "img", "throughput.png"))
    args = parser.parse_args()

    data = gdl.load_dataset("digits")
    flops = member_flops(data)
    try:
        import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
        print("torch is absent: skipping sequential_torch (pip install 'genetic-dl[bench]')")
    rows = []
    print(f"machine: {machine()}")
    print(f"{'P':>5} {'variant':<18} {'member-ep/s':>12} {'GFLOP/s':>8} {'compile s':>9}")
    ratios = {}
    for size in args.sizes:
        variants = {"population": bench_population(data, size, args.epochs),
                    "population_1device": bench_population(data, size, args.epochs, mesh=None),
                    "sequential_jax": bench_sequential_jax(data, size, args.epochs)}
        if have_torch:
            variants["sequential_torch"] = bench_torch(data, size, 1)
            variants["batched_torch"] = bench_torch_batched(data, size, args.epochs)
        variants["limit"], width = bench_limit(data, size, args.epochs)
        results = measure(variants, args.seconds, args.rounds)
        for variant, (compile_s, rates) in results.items():
            rate = float(np.median(rates))
            row = {"P": size, "variant": variant, "member_epochs_per_s": rate,
                   "rounds": rates, "gflops": rate * flops / 1e9, "compile_s": compile_s}
            if variant == "limit":
                row["limit_width"] = width
            rows.append(row)
            print(f"{size:>5} {variant:<18} {rate:>12.1f} {rate * flops / 1e9:>8.1f} "
                  f"{compile_s:>9.2f}")
        mine = np.asarray(results["population"][1])
        ratios[size] = {v: [float(np.median(mine / np.asarray(r))),
                            float(np.min(mine / np.asarray(r))), float(np.max(mine / np.asarray(r)))]
                        for v, (_, r) in results.items() if v != "population"}
    print(f"\nratios population / other: median [min-max] of {args.rounds} interleaved rounds")
    for size, parts in ratios.items():
        print(f"  P={size}: " + ", ".join(f"{v}: {m:.2f}x [{lo:.2f}-{hi:.2f}]"
                                          for v, (m, lo, hi) in parts.items()))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    result = {"rows": rows, "machine": machine(), "dataset": "digits",
              "model": "MLP 64-128-128-10", "batch_size": BATCH, "optimizer": "adam",
              "member_epoch_flops": flops, "ratios": {str(k): v for k, v in ratios.items()},
              "command": " ".join(["python"] + sys.argv)}
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    plot(rows, args.plot)


if __name__ == "__main__":
    main()
