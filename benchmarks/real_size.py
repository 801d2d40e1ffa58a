"""Real-size throughput and memory: populations of CNNs on MNIST-size images, frames models
on image sequences, against training one by one and against PyTorch.

Data is generated offline with the real sets' shapes (genetic_dl.synthetic): 60 k
28x28 uint8 digit images (10 classes), and 10 k sequences of 10 32x32 frames
(moving_digits, one digit, 10 classes). Each arm runs in its own process, so its
peak RSS is its own; rounds interleave the arms. An arm trains one warm-up epoch
(compiles) and one timed epoch on the first --train-n examples, batch 64, Adam.
The JAX arms also validate --val images after the epoch (the GA needs it); the
PyTorch arms do not.

  population   gdl.train: P members, one vmapped program (the array path)
  stream       gdl.train on a gdl.Stream over the same uint8 arrays (one program per batch)
  jax_serial   the members one after another: P populations of one (JAX scan)
  torch_grouped  a hand-batched PyTorch population: members stacked as conv groups,
               per-member dense weights with bmm; each member its own batch order (CNN only)
  torch_vmap   the same population with torch.func.functional_call under torch.func.vmap
               (the frames model's GRU written in tensor ops, which vmap batches)
  torch_serial the members one after another in PyTorch (torch.nn, nn.GRU, Adam)
  eval         memory only: gdl.evaluate of P = 8 on a validation split of --val rows

GFLOP/s counts one member's training step analytically (genetic_dl.core.flops: the
dense, conv and recurrent multiply-adds of three forward passes, not XLA's cost
analysis, which counts work a lowering adds) times steps and members, against the
machine's float32 matmul ceiling (2048x2048 jnp.dot).

Usage:
  python benchmarks/real_size.py [--sizes 4 8 16 32] [--rounds 2] [--train-n 4096]
      [--frames-sizes 4 8] [--frames-train-n 512]
  python benchmarks/real_size.py --arm population --model cnn --size 8   (one arm, JSON)
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH = 64
FILTERS = (16, 32)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(model: str, n_val: int = 2000):
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    if model == "cnn":
        x, y = gdl.synthetic.digit_images(60000 + n_val + 1000, seed=0)
        n = 60000
    else:
        x, y = gdl.synthetic.moving_digits(10000 + n_val + 1000, frames=10, size=32, digits=1,
                                           label="class", seed=0)
        n = 10000
    return gdl.make_dataset(model, x[:n], y[:n], x[-1000:], y[-1000:], x_val=x[n:n + n_val],
                            y_val=y[n:n + n_val])


def _spec(model: str):
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    if model == "cnn":
        return gdl.CNNSpec(FILTERS, dense=(64,))
    return gdl.FramesSpec(filters=FILTERS, embed=64, cell="gru", hidden=64)


def _subset(data, n):
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    return gdl.Dataset(data.name, data.task, data.x_train[:n], data.y_train[:n], data.x_val,
                       data.y_val, data.x_test, data.y_test, data.num_classes,
                       data.feature_mean, data.feature_std, data.raw_inputs)


def _step_flops(model: str, data) -> float:
    """Analytic FLOPs of one member's training step on one batch (genetic_dl.core.flops:
    dense, conv and recurrent multiply-adds, three forward passes per step)."""
    from genetic_dl.core import flops  # pylint: disable=import-outside-toplevel
    return float(flops.training_flops(_spec(model), data.feature_shape, data.out_dim) * BATCH)


def arm_jax(arm: str, model: str, size: int, train_n: int, n_val: int) -> dict:
    import jax  # pylint: disable=import-outside-toplevel
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    data = _subset(_data(model, n_val), train_n)
    spec = _spec(model)
    pop = gdl.init_population(jax.random.key(0), spec, data, 1 if arm == "jax_serial" else size)
    source = gdl.Stream.from_dataset(data, BATCH) if arm == "stream" else data
    members = [pop] * (size if arm == "jax_serial" else 1)
    out = {}
    if arm == "population":
        from genetic_dl.core import memory  # pylint: disable=import-outside-toplevel
        out["estimate_mb"] = memory.estimate(pop, data, BATCH,
                                             devices=len(jax.devices())).total / 2 ** 20
    for phase in ("warm", "timed"):
        start = time.perf_counter()
        for member in members if phase == "timed" else members[:1]:
            trained, _ = gdl.train(member, source, 1, batch_size=BATCH)
            jax.block_until_ready(trained.params)
        out[phase] = time.perf_counter() - start
    flops = _step_flops(model, data) * (train_n // BATCH) * size
    return {"seconds": out["timed"], "member_epochs_per_s": size / out["timed"],
            "gflops": flops / out["timed"] / 1e9, "warm_seconds": out["warm"],
            **({"estimate_mb": out["estimate_mb"]} if "estimate_mb" in out else {})}


def _torch_cnn(torch, in_shape, classes):
    channels = in_shape[-1] if len(in_shape) == 3 else 1
    side = in_shape[0] // 4
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, FILTERS[0], 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(FILTERS[0], FILTERS[1], 3, padding=1),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(FILTERS[1] * side * side, 64), torch.nn.ReLU(), torch.nn.Linear(64, classes))


@functools.lru_cache(maxsize=1)
def _torch_frames_class(torch):
    """The frames model's PyTorch class (one class per process: torch.func stacks
    modules of one class)."""

    class OpsGRU(torch.nn.Module):
        """A GRU layer (PyTorch's gate equations) in plain tensor ops."""

        def __init__(self, size, hidden):
            super().__init__()
            self.inp = torch.nn.Linear(size, 3 * hidden)
            self.rec = torch.nn.Linear(hidden, 3 * hidden)
            self.hidden = hidden

        def forward(self, z):
            h = z.new_zeros(z.shape[0], self.hidden)
            gates_in = self.inp(z)
            for t in range(z.shape[1]):
                xr, xz, xn = gates_in[:, t].chunk(3, -1)
                hr, hz, hn = self.rec(h).chunk(3, -1)
                r, u = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                h = (1 - u) * torch.tanh(xn + r * hn) + u * h
            return h

    class Frames(torch.nn.Module):
        """CNN per frame, dense embedding, GRU over time, head on the last state."""

        def __init__(self, side, classes, cell):
            super().__init__()
            self.cnn = torch.nn.Sequential(
                torch.nn.Conv2d(1, FILTERS[0], 3, padding=1), torch.nn.ReLU(),
                torch.nn.MaxPool2d(2), torch.nn.Conv2d(FILTERS[0], FILTERS[1], 3, padding=1),
                torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                torch.nn.Linear(FILTERS[1] * side * side, 64), torch.nn.ReLU())
            self.cell = cell
            self.gru = torch.nn.GRU(64, 64, batch_first=True) if cell == "nn" else OpsGRU(64, 64)
            self.head = torch.nn.Linear(64, classes)

        def forward(self, x):  # (B, T, 1, H, W)
            z = self.cnn(x.reshape(-1, *x.shape[2:])).reshape(x.shape[0], x.shape[1], -1)
            last = self.gru(z)[0][:, -1] if self.cell == "nn" else self.gru(z)
            return self.head(last)
    return Frames


def _torch_frames(torch, frame_shape, classes, cell="nn"):
    """The frames model in PyTorch: the GRU is ``nn.GRU``, or written in tensor ops
    with ``cell="ops"`` so that ``torch.func.vmap`` batches it."""
    return _torch_frames_class(torch)(frame_shape[0] // 4, classes, cell)


def arm_torch(arm: str, model: str, size: int, train_n: int) -> dict:
    import torch  # pylint: disable=import-outside-toplevel
    if model == "frames" and arm == "torch_grouped":
        raise SystemExit("the frames model's batched PyTorch arm is torch_vmap")
    torch.manual_seed(0)
    data = _subset(_data(model), train_n)
    inputs = data.model_inputs(data.x_train)
    x_all = torch.tensor(inputs[:, None] if model == "cnn" else inputs[:, :, None])
    y_all = torch.tensor(data.y_train, dtype=torch.long)
    steps = train_n // BATCH
    loss_fn = torch.nn.functional.cross_entropy
    frame = data.feature_shape[1:] if model == "frames" else data.feature_shape

    def make_net(cell="nn"):
        if model == "cnn":
            return _torch_cnn(torch, frame, 10)
        return _torch_frames(torch, frame, 10, cell)
    if arm == "torch_serial":
        nets = [make_net() for _ in range(size)]
        opts = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in nets]

        def epoch():
            for net, opt in zip(nets, opts):
                order = torch.randperm(train_n)[:steps * BATCH].view(steps, BATCH)
                for idx in order:
                    opt.zero_grad()
                    loss_fn(net(x_all[idx]), y_all[idx]).backward()
                    opt.step()
    elif arm == "torch_vmap":
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap  # pylint: disable=import-outside-toplevel
        nets = [make_net("ops") for _ in range(size)]
        params, buffers = stack_module_state(nets)
        base = make_net("ops").to("meta")
        leaves = list(params.values())
        opt = torch.optim.Adam(leaves, lr=1e-3, foreach=True)

        def member_loss(p, b, xb, yb):
            return loss_fn(functional_call(base, (p, b), (xb,)), yb)
        grads_fn = vmap(grad_and_value(member_loss))

        def epoch():
            order = torch.argsort(torch.rand(size, train_n), dim=1)[:, :steps * BATCH]
            for s in range(steps):
                idx = order[:, s * BATCH:(s + 1) * BATCH]
                grads, _ = grads_fn(params, buffers, x_all[idx], y_all[idx])
                for k, v in params.items():
                    v.grad = grads[k]
                opt.step()
    else:  # torch_grouped: members as conv groups, per-member dense weights with bmm
        def init(shape, fan_in):
            bound = 1 / np.sqrt(fan_in)
            return torch.empty(shape).uniform_(-bound, bound).requires_grad_()
        side = data.feature_shape[0] // 4
        w1, b1 = init((size * FILTERS[0], 1, 3, 3), 9), init((size * FILTERS[0],), 9)
        w2 = init((size * FILTERS[1], FILTERS[0], 3, 3), 9 * FILTERS[0])
        b2 = init((size * FILTERS[1],), 9 * FILTERS[0])
        flat = FILTERS[1] * side * side
        w3, b3 = init((size, flat, 64), flat), init((size, 1, 64), flat)
        w4, b4 = init((size, 64, 10), 64), init((size, 1, 10), 64)
        leaves = [w1, b1, w2, b2, w3, b3, w4, b4]
        opt = torch.optim.Adam(leaves, lr=1e-3, foreach=True)
        pool = torch.nn.functional.max_pool2d

        def forward(xb):  # xb: (P, B, 1, H, W), each member its own batch
            h = xb.transpose(0, 1).reshape(BATCH, size, *xb.shape[3:])
            h = pool(torch.relu(torch.nn.functional.conv2d(h, w1, b1, padding=1, groups=size)), 2)
            h = pool(torch.relu(torch.nn.functional.conv2d(h, w2, b2, padding=1, groups=size)), 2)
            h = h.view(BATCH, size, FILTERS[1], side, side).transpose(0, 1).reshape(size, BATCH, -1)
            h = torch.relu(torch.baddbmm(b3, h, w3))
            return torch.baddbmm(b4, h, w4)

        def epoch():
            order = torch.argsort(torch.rand(size, train_n), dim=1)[:, :steps * BATCH]
            for s in range(steps):
                idx = order[:, s * BATCH:(s + 1) * BATCH]
                logits = forward(x_all[idx])
                loss = loss_fn(logits.reshape(-1, 10), y_all[idx].reshape(-1)) * size
                opt.zero_grad()
                loss.backward()
                opt.step()
    times = []
    for _ in range(2):  # warm-up, then timed
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    flops = _step_flops(model, data) * steps * size
    return {"seconds": times[1], "member_epochs_per_s": size / times[1],
            "gflops": flops / times[1] / 1e9, "warm_seconds": times[0],
            "threads": torch.get_num_threads()}


def arm_eval(model: str, size: int, n_val: int) -> dict:
    import jax  # pylint: disable=import-outside-toplevel
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    from genetic_dl.core import memory  # pylint: disable=import-outside-toplevel
    data = _data(model, n_val=n_val)
    pop = gdl.init_population(jax.random.key(0), _spec(model), data, size)
    before = _peak_mb()
    start = time.perf_counter()
    metrics = gdl.evaluate(pop, data, "val")
    jax.block_until_ready(metrics)
    est = memory.estimate(pop, data, BATCH, devices=len(jax.devices()))
    return {"seconds": time.perf_counter() - start, "rss_before_mb": before,
            "estimate_mb": est.total / 2 ** 20}


def arm_ceiling() -> dict:
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda m: m @ m)
    f(a).block_until_ready()
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        f(a).block_until_ready()
    return {"gflops": 2 * 2048 ** 3 * reps / (time.perf_counter() - start) / 1e9}


def run_arm(args) -> dict:
    import genetic_dl as gdl  # pylint: disable=import-outside-toplevel
    gdl.use_host_devices()  # one CPU device per core, before any JAX work
    if args.arm == "ceiling":
        out = arm_ceiling()
    elif args.arm == "eval":
        out = arm_eval(args.model, args.size, args.val)
    elif args.arm.startswith("torch"):
        out = arm_torch(args.arm, args.model, args.size, args.train_n)
    else:
        out = arm_jax(args.arm, args.model, args.size, args.train_n, args.val)
    out["peak_rss_mb"] = _peak_mb()
    return out


def _spawn(arm, model, size, train_n, val=2000, timeout=1800) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--arm", arm, "--model", model, "--size",
           str(size), "--train-n", str(train_n), "--val", str(val)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--arm")
    parser.add_argument("--model", default="cnn", choices=("cnn", "frames"))
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--val", type=int, default=512,
                        help="validation rows of the JAX arms (validated every epoch)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[4, 8, 16, 32])
    parser.add_argument("--frames-sizes", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-n", type=int, default=4096)
    parser.add_argument("--frames-train-n", type=int, default=512,
                        help="sequences per timed epoch of the frames model")
    parser.add_argument("--eval-vals", type=int, nargs="*", default=[1000, 10000, 50000])
    parser.add_argument("--arms", nargs="+", default=["population", "stream", "jax_serial",
                                                      "torch_grouped", "torch_vmap",
                                                      "torch_serial"])
    parser.add_argument("--eval-only", action="store_true",
                        help="only the evaluation-memory arms (and the ceiling)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "real_size.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "img", "real_size.png"))
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args)))
        return
    if args.eval_only:
        args.sizes, args.frames_sizes = [], []
    runs = [("cnn", s, a) for s in args.sizes for a in args.arms]
    runs += [("frames", s, a) for s in args.frames_sizes for a in args.arms
             if a != "torch_grouped"]  # its batched PyTorch arm is torch_vmap
    raw = {f"{m}/{s}/{a}": [] for m, s, a in runs}
    ceiling = []
    for r in range(args.rounds):
        ceiling.append(_spawn("ceiling", "cnn", 1, 64)["gflops"])
        for model, size, arm in (runs if r % 2 == 0 else runs[::-1]):
            train_n = args.train_n if model == "cnn" else args.frames_train_n
            raw[f"{model}/{size}/{arm}"].append(_spawn(arm, model, size, train_n,
                                                       val=args.val))
            print(model, size, arm, raw[f"{model}/{size}/{arm}"][-1], flush=True)
    evals = {str(n): _spawn("eval", "cnn", 8, 64, val=n) for n in args.eval_vals}
    table = {}
    for key, values in raw.items():
        ok = [v for v in values if "error" not in v]
        table[key] = {k: _median([v.get(k) for v in ok]) for k in
                      ("member_epochs_per_s", "gflops", "peak_rss_mb", "estimate_mb")}
        table[key]["errors"] = [v["error"] for v in values if "error" in v]
    result = {"command": "python " + " ".join(sys.argv), "machine": platform.platform(),
              "cpus": os.cpu_count(), "train_n": args.train_n,
              "frames_train_n": args.frames_train_n, "batch": BATCH,
              "ceiling_gflops": _median(ceiling), "runs": raw, "table": table,
              "eval_memory": evals}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.out)
    _print(result)
    if raw:
        _plot(result, args.plot)


def _print(result):
    print(f"\nmatmul ceiling {result['ceiling_gflops']:.1f} GFLOP/s; "
          f"{result['train_n']} examples per epoch, batch {result['batch']}")
    print(f"{'model':<7}{'P':>4} {'arm':<14}{'member-ep/s':>12}{'GFLOP/s':>9}{'% ceil':>8}"
          f"{'peak MB':>9}{'est MB':>8}")
    for key, row in result["table"].items():
        model, size, arm = key.split("/")
        rate, gf = row["member_epochs_per_s"], row["gflops"]
        if rate is None:
            print(f"{model:<7}{size:>4} {arm:<14} failed: {row['errors'][:1]}")
            continue
        est = row["estimate_mb"]
        print(f"{model:<7}{size:>4} {arm:<14}{rate:>12.3f}{gf:>9.1f}"
              f"{100 * gf / result['ceiling_gflops']:>7.0f}%{row['peak_rss_mb']:>9.0f}"
              f"{'' if est is None else f'{est:.0f}':>8}")
    for n, row in result["eval_memory"].items():
        print(f"evaluate P=8 CNN on {n:>6} validation images: peak "
              f"{row.get('peak_rss_mb', float('nan')):.0f} MB (before {row.get('rss_before_mb', 0):.0f}"
              f" MB, model {row.get('estimate_mb', 0):.0f} MB)")


def _plot(result, path):
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    groups = sorted({tuple(k.split("/")[:2]) for k in result["table"]})
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.6), squeeze=False)
    for ax, (model, size) in zip(axes[0], groups):
        cells = {k.split("/")[2]: v["member_epochs_per_s"] for k, v in result["table"].items()
                 if k.startswith(f"{model}/{size}/") and v["member_epochs_per_s"]}
        names = [a for a in ("population", "stream", "jax_serial", "torch_grouped",
                             "torch_vmap", "torch_serial") if a in cells]
        ax.barh(names[::-1], [cells[a] for a in names[::-1]],
                color=["C1" if a in ("population", "stream") else "C0" for a in names[::-1]])
        ax.set_xlabel("member-epochs / s")
        ax.set_title(f"{model}, P = {size}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
