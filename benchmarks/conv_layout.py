"""A BatchNorm ResNet population on CPU: the engine against plain JAX loops.

The model is ``examples/resnet_bn.py``'s ResNet (a 3x3 stem convolution, two
residual blocks conv-BN-relu-dropout-conv-BN, global average pooling, a linear
head; every convolution ``--width`` channels), P members, Adam (lr 3e-3), batch
64, on the first ``--train-n`` 28x28 uint8 digit images of
``gdl.synthetic.digit_images`` (seed 0). Every arm runs in its own process,
trains one warm-up epoch (compiles), then times one epoch; rounds interleave the
arms. Every arm also evaluates ``--val`` validation images after the epoch (the
engine does so each epoch), inside the timed span.

  population      gdl.train: the engine, with its fixed lowering for the backend
                  (on CPU: canonical-layout convolutions, one member at a time)
  population_xla  gdl.train with XLA's own layouts (the convolutions' gradients
                  fall to XLA:CPU's naive loop inside the scan); --xla-rounds rounds
  jax_loop        the members one after another, a jitted step per minibatch
                  called from Python (the plain one-by-one loop)
  jax_vmap        one jitted vmapped step over the members per minibatch

Usage:
  python benchmarks/conv_layout.py [--rounds 5] [--size 6] [--train-n 1024]
  python benchmarks/conv_layout.py --arm population   (one arm, prints JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH = 64
LR = 3e-3
ARMS = ("population", "jax_loop", "jax_vmap")


def _data(train_n: int, n_val: int):
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    x, y = gdl.synthetic.digit_images(train_n + n_val, seed=0)
    return gdl.Dataset.from_arrays(x_train=x[:train_n], y_train=y[:train_n],
                                   x_val=x[train_n:], y_val=y[train_n:])


def _learner(width: int):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import resnet_bn  # pylint: disable=import-outside-toplevel,import-error
    return resnet_bn.learner(width)


def arm_engine(arm: str, size: int, width: int, train_n: int, n_val: int) -> float:
    """Seconds of one cached ``gdl.train`` epoch (validation included)."""
    import jax  # pylint: disable=import-outside-toplevel
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    from genetic_dl.core import conv_layout  # pylint: disable=import-outside-toplevel
    if arm == "population_xla":  # the benchmark's own process: patch the rule for this arm
        conv_layout.lowered = lambda step, backend: (conv_layout.DEFAULT_LOWERING, step)
    data = _data(train_n, n_val)
    pop = gdl.init_population(jax.random.key(0), _learner(width), data, size=size,
                              hparams={"learning_rate": LR})
    out, _ = gdl.train(pop, data, epochs=1, batch_size=BATCH)
    jax.block_until_ready(out.params)
    start = time.perf_counter()
    out, _ = gdl.train(pop, data, epochs=1, batch_size=BATCH)
    jax.block_until_ready(out.params)
    return time.perf_counter() - start


def arm_plain(arm: str, size: int, width: int, train_n: int, n_val: int) -> float:
    """Seconds of one epoch of plain JAX (a jitted step per minibatch), validation included."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import optax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    data = _data(train_n, n_val)
    x = np.asarray(data.x_train, np.float32) / 255.0
    y = np.asarray(data.y_train)
    xv = jnp.asarray(np.asarray(data.x_val, np.float32) / 255.0)
    module = _learner(width).module
    tx = optax.adam(LR)

    def init(key):
        variables = module.init({"params": key, "dropout": key}, jnp.asarray(x[:1]), train=False)
        return variables["params"], tx.init(variables["params"]), variables["batch_stats"]

    def step(state, xb, yb, key):
        params, opt, stats = state

        def loss(p):
            logits, new = module.apply({"params": p, "batch_stats": stats}, xb, train=True,
                                       rngs={"dropout": key}, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), new
        grads, new = jax.grad(loss, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, new["batch_stats"]

    def evaluate(state):
        params, _, stats = state
        return module.apply({"params": params, "batch_stats": stats}, xv, train=False)

    keys = jax.random.split(jax.random.key(0), size)
    steps = train_n // BATCH
    orders = np.stack([np.random.default_rng(i).permutation(train_n)[:steps * BATCH]
                       for i in range(size)]).reshape(size, steps, BATCH)
    if arm == "jax_loop":
        one, ev = jax.jit(step), jax.jit(evaluate)
        states = [init(k) for k in keys]

        def epoch():
            outs = []
            for m in range(size):
                state = states[m]
                for s in range(steps):
                    idx = orders[m, s]
                    state = one(state, x[idx], y[idx], jax.random.fold_in(keys[m], s))
                outs.append(ev(state))
            return outs
    else:
        one = jax.jit(jax.vmap(step))
        ev = jax.jit(jax.vmap(evaluate))
        state0 = jax.vmap(init)(keys)

        def epoch():
            state = state0
            for s in range(steps):
                idx = orders[:, s]
                state = one(state, x[idx], y[idx], jax.vmap(jax.random.fold_in, (0, None))(keys, s))
            return ev(state)
    jax.block_until_ready(epoch())
    start = time.perf_counter()
    jax.block_until_ready(epoch())
    return time.perf_counter() - start


def run_arm(args) -> dict:
    """One arm in this process: seconds per epoch and peak RSS."""
    fn = arm_engine if args.arm.startswith("population") else arm_plain
    seconds = fn(args.arm, args.size, args.width, args.train_n, args.val)
    return {"arm": args.arm, "seconds": seconds,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _spawn(arm: str, args, timeout: int = 3600) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--arm", arm, "--size", str(args.size),
           "--width", str(args.width), "--train-n", str(args.train_n), "--val", str(args.val)]
    env = dict(os.environ, GENETIC_DL_CACHE="off")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else \
        0.5 * (values[len(values) // 2 - 1] + values[len(values) // 2])


def main() -> None:
    """Interleaved rounds of every arm (or one arm with --arm); JSON under results/."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", choices=ARMS + ("population_xla",))
    parser.add_argument("--size", type=int, default=6)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--train-n", type=int, default=1024)
    parser.add_argument("--val", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--xla-rounds", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "conv_layout.json"))
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args)))
        return
    import jax  # pylint: disable=import-outside-toplevel
    runs = []
    for r in range(args.rounds):
        arms = ARMS + (("population_xla",) if r < args.xla_rounds else ())
        for arm in arms:
            res = dict(_spawn(arm, args), round=r)
            print(f"round {r} {arm:15s} {res['seconds']:8.2f} s  {res['peak_mb']:7.0f} MB",
                  flush=True)
            runs.append(res)
    by_arm = {a: [x for x in runs if x["arm"] == a] for a in ARMS + ("population_xla",)}
    ratios = [p["seconds"] / q["seconds"] for p, q in zip(by_arm["population"], by_arm["jax_loop"])]
    table = {a: {"median_s": _median([x["seconds"] for x in v]),
                 "min_s": min(x["seconds"] for x in v), "max_s": max(x["seconds"] for x in v),
                 "peak_mb": _median([x["peak_mb"] for x in v]), "rounds": len(v)}
             for a, v in by_arm.items() if v}
    result = {"settings": {"size": args.size, "width": args.width, "train_n": args.train_n,
                           "val": args.val, "batch": BATCH, "rounds": args.rounds,
                           "data": "gdl.synthetic.digit_images seed 0, 28x28 uint8",
                           "validation_timed": True},
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "jax": jax.__version__},
              "command": "python benchmarks/conv_layout.py " + " ".join(sys.argv[1:]),
              "runs": runs, "table": table,
              "population_over_loop": {"median": _median(ratios), "min": min(ratios),
                                       "max": max(ratios)}}
    print(f"\n{'arm':15s} {'median s':>9s} {'range':>17s} {'peak MB':>8s}")
    for arm, row in table.items():
        print(f"{arm:15s} {row['median_s']:9.2f} {row['min_s']:8.2f}-{row['max_s']:<8.2f} "
              f"{row['peak_mb']:8.0f}")
    print("population / jax_loop: median {median:.2f} (range {min:.2f}-{max:.2f})".format(
        **result["population_over_loop"]))
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
