"""Command line: ``genetic-dl evolve-weights ...`` and ``genetic-dl datasets``.

User errors (bad flags, unknown dataset, bad data) exit with status 2 and one
line on stderr starting ``error:``, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np

from . import data as data_mod
from .models import CNNSpec, MLPSpec, RNNSpec, spec_to_dict


class UserError(Exception):
    """An error in the user's input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(message)


def _ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from err


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``genetic-dl`` command."""
    from .crossover import CROSSOVERS  # pylint: disable=import-outside-toplevel
    from .optimizers import OPTIMIZERS  # pylint: disable=import-outside-toplevel
    from .selection import SELECTIONS  # pylint: disable=import-outside-toplevel
    from .weight_ga import RULES  # pylint: disable=import-outside-toplevel
    parser = _Parser(prog="genetic-dl", description="Evolve neural networks with JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("datasets", help="list the bundled datasets")
    ev = sub.add_parser("evolve-weights", help="the GDNN weight GA hybrid with gradient descent")
    ev.add_argument("--dataset", default="digits", help="bundled name or path to an .npz")
    ev.add_argument("--task", choices=data_mod.TASKS, help="override the task of an .npz")
    ev.add_argument("--model", choices=("mlp", "cnn", "rnn"), default="mlp")
    ev.add_argument("--hidden", type=_ints, default=(128, 128),
                    help="MLP widths / CNN filters / RNN [hidden, layers]")
    ev.add_argument("--activation", default="relu")
    ev.add_argument("--population", type=int, default=16)
    ev.add_argument("--generations", type=int, default=5)
    ev.add_argument("--epochs", type=int, default=2, help="epochs per generation")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    ev.add_argument("--lr", type=float, default=None, help="learning rate")
    ev.add_argument("--rule", choices=RULES, default="ga")
    ev.add_argument("--crossover", choices=sorted(CROSSOVERS), default="uniform")
    ev.add_argument("--selection", choices=sorted(SELECTIONS), default="tournament")
    ev.add_argument("--mutation-rate", type=float, default=0.05)
    ev.add_argument("--mutation-scale", type=float, default=0.1)
    ev.add_argument("--elitism", type=int, default=1)
    ev.add_argument("--fitness", default="loss", help="validation metric to maximise "
                    "(loss and mse are negated)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", default=None, help="run directory for result.json")
    ev.add_argument("--quiet", action="store_true")
    return parser


def _spec(args):
    if args.model == "mlp":
        return MLPSpec(args.hidden, args.activation)
    if args.model == "cnn":
        return CNNSpec(args.hidden or (32, 32), activation=args.activation)
    hidden = args.hidden if args.hidden != (128, 128) else (64, 1)
    return RNNSpec("gru", hidden[0], hidden[1] if len(hidden) > 1 else 1)


def _write_json(path: str, obj) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _finite(d):
    return {k: (float(v) if np.isfinite(v) else None) for k, v in d.items()}


def evolve_weights_command(args, argv: List[str]) -> int:
    """Runs ``genetic-dl evolve-weights``; returns the exit status."""
    import jax  # pylint: disable=import-outside-toplevel
    from .metrics import compute_metrics  # pylint: disable=import-outside-toplevel
    from .population import init_population  # pylint: disable=import-outside-toplevel
    from .weight_ga import WeightGAConfig, evolve_weights  # pylint: disable=import-outside-toplevel
    for name in ("population", "generations", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    dataset = data_mod.load_dataset(args.dataset, seed=args.seed, task=args.task)
    spec = _spec(args)
    config = WeightGAConfig(rule=args.rule, crossover=args.crossover, selection=args.selection,
                            mutation_rate=args.mutation_rate,
                            mutation_scale=args.mutation_scale,
                            elitism=min(args.elitism, args.population))
    hparams = {} if args.lr is None else {"learning_rate": args.lr}
    key = jax.random.key(args.seed)
    k_pop, k_ga = jax.random.split(key)
    pop = init_population(k_pop, spec, dataset, args.population, args.optimizer, hparams)
    if not args.quiet:
        print(f"{dataset!r}\n{spec}, P={args.population}, G={args.generations}, "
              f"{args.epochs} epoch(s)/generation, {jax.device_count()} device(s)")

    def report(gen, _pop, rec):
        if not args.quiet:
            print(f"gen {gen:3d}  best {rec['best']:.4f}  mean {rec['mean']:.4f}  "
                  f"std {rec['std']:.4f}  diversity {rec['diversity']:.4f}  "
                  f"budget {rec['network_epochs']} net-epochs  {rec['elapsed']:.1f}s", flush=True)
        return False
    start = time.time()
    res = evolve_weights(k_ga, pop, dataset, generations=args.generations, epochs=args.epochs,
                         batch_size=args.batch_size, config=config, fitness=args.fitness,
                         callbacks=[report])
    if res.best_params is None:
        raise UserError("every member diverged (NaN/inf loss): lower the learning rate (--lr)")
    model = pop.model
    test = compute_metrics(model.apply(res.best_params, dataset.x_test), dataset.y_test,
                           dataset.is_classification)
    test = _finite(jax.device_get(test))
    result = {
        "command": "genetic-dl " + " ".join(argv), "seed": args.seed, "dataset": dataset.name,
        "best": {"config": {"model": spec_to_dict(spec), "optimizer": args.optimizer,
                            "member_id": res.best_id, "generation": res.best_generation},
                 "val": _finite(res.best_metrics), "test": test},
        "history": [{"generation": h["generation"], "best": h["best"], "mean": h["mean"],
                     "std": h["std"], "budget_used": h["network_epochs"]} for h in res.history],
        "budget_used": res.history[-1]["network_epochs"], "seconds": time.time() - start}
    if not args.quiet:
        print("best (validation): " + ", ".join(f"{k} {v:.4f}" for k, v in
                                                res.best_metrics.items()))
        print("best (test):       " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()
                                                if v is not None))
    if args.out:
        _write_json(os.path.join(args.out, "result.json"), result)
        if not args.quiet:
            print(f"wrote {os.path.join(args.out, 'result.json')}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``genetic-dl`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "datasets":
            for name, (_, about) in data_mod.DATASETS.items():
                print(f"{name:<10} {about}")
            return 0
        return evolve_weights_command(args, argv)
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
