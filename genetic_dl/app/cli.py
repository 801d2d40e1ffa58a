"""Command line: ``genetic-dl evolve-weights | search | report | datasets``.

User errors (bad flags, unknown dataset, bad data, bad config) exit with status 2
and one line on stderr starting ``error:``, without a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

from .. import data as data_mod
from . import rundir
from ..core import sharding
from ..core.tables import first_objective
from ..core.models import CNNSpec, FramesSpec, MLPSpec, RNNSpec, spec_to_dict

SKIP_IN_CONFIG = {"command", "config", "out", "quiet", "latex", "run_dir", "resume"}
# Options that do not change a run's numbers: a resumed run may differ in them.
NOT_COMPARED_ON_RESUME = {"checkpoint_every", "watchdog_seconds"}


class UserError(Exception):
    """An error in the user's input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(message)


def _ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from err


def _common(p):
    p.add_argument("--dataset", default="digits", help="bundled name or path to an .npz")
    p.add_argument("--task", choices=data_mod.TASKS, help="override the task of an .npz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (result.json, csv, plots...)")
    p.add_argument("--config", default=None, help="TOML file of options (flags win)")
    p.add_argument("--quiet", action="store_true", help="no per-generation lines")
    p.add_argument("--log", default="", help="trackers writing under --out, comma-separated: "
                   "tensorboard (DIR/tensorboard), mlflow (DIR/mlruns/mlflow.db), wandb "
                   "(DIR/wandb, offline); pip install 'genetic-dl[tracking]'")
    p.add_argument("--watchdog-seconds", type=float, default=600,
                   help="end the run (status 3, stacks in DIR/hang.txt) when the process has "
                   "used no CPU time for this long: a stuck computation; 0: off")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``genetic-dl`` command."""
    parser = _Parser(prog="genetic-dl", description="Evolve neural networks with JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("datasets", help="list the bundled datasets")
    rep = sub.add_parser("report", help="write report.md (and plots) of a run directory")
    rep.add_argument("run_dir")
    rep.add_argument("--latex", action="store_true", help="also write report.tex")
    _evolve_parser(sub.add_parser("evolve-weights",
                                  help="the GDNN weight GA hybrid with gradient descent"))
    _search_parser(sub.add_parser("search", help="search hyperparameters and structure"))
    return parser


def _evolve_parser(ev: argparse.ArgumentParser) -> None:
    """The options of ``genetic-dl evolve-weights``."""
    from ..operators.crossover import CROSSOVERS  # pylint: disable=import-outside-toplevel
    from ..operators.matching import MATCHERS  # pylint: disable=import-outside-toplevel
    from ..core.optimizers import OPTIMIZERS  # pylint: disable=import-outside-toplevel
    from ..operators.selection import SELECTIONS  # pylint: disable=import-outside-toplevel
    from ..operators.alignment import MATCH_TO  # pylint: disable=import-outside-toplevel
    from ..weights.config import RULES  # pylint: disable=import-outside-toplevel
    _common(ev)
    ev.add_argument("--model", choices=("mlp", "cnn", "rnn", "frames"), default="mlp",
                    help="frames: a CNN per frame then a recurrent layer, for image sequences")
    ev.add_argument("--hidden", type=_ints, default=None,
                    help="MLP widths (default 128,128) / CNN or frames filters (default 16,32) / "
                    "RNN hidden,layers (default 64,1)")
    ev.add_argument("--cell", choices=("gru", "lstm", "simple"), default="gru",
                    help="recurrent cell of --model rnn and frames")
    ev.add_argument("--activation", default="relu")
    ev.add_argument("--population", type=int, default=16)
    ev.add_argument("--generations", type=int, default=5)
    ev.add_argument("--epochs", type=int, default=2, help="epochs per generation")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    ev.add_argument("--lr", type=float, default=None, help="learning rate")
    ev.add_argument("--rule", choices=RULES, default="ga")
    ev.add_argument("--crossover", choices=sorted(CROSSOVERS), default="uniform")
    ev.add_argument("--matcher", choices=MATCHERS, default=MATCHERS[0],
                    help="weight matching of --crossover aligned: greedy on the device, or "
                    "exact linear assignments on the host (2-5x slower)")
    ev.add_argument("--match-to", choices=MATCH_TO, default=None,
                    help="--crossover aligned matches each child's second parent to its first "
                    "(parent; the default with greedy), or parents and elites to the best member "
                    "so the population shares one unit order (best; the default with exact)")
    ev.add_argument("--match-every", type=int, default=1,
                    help="with --match-to best, re-match every N generations; in between, "
                    "children inherit their parents' shared unit order")
    ev.add_argument("--match-passes", type=int, default=None,
                    help="weight-matching sweeps of --crossover aligned (default 2 with greedy, "
                    "until converged with exact; 0: until converged)")
    ev.add_argument("--selection", choices=sorted(SELECTIONS), default="tournament")
    ev.add_argument("--mutation-rate", type=float, default=0.05)
    ev.add_argument("--mutation-scale", type=float, default=0.1)
    ev.add_argument("--elitism", type=int, default=1)
    ev.add_argument("--fitness", default="loss", help="validation metric to maximise "
                    "(loss and mse are negated)")
    ev.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                    help="read training batches from the data's files instead of holding the "
                    "data in device memory: auto streams when the data does not fit next to "
                    "the population (about half the speed on small models)")
    ev.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its last checkpoint")
    ev.add_argument("--checkpoint-every", type=int, default=1,
                    help="write a checkpoint every K generations (with --out)")


def _search_parser(se: argparse.ArgumentParser) -> None:
    """The options of ``genetic-dl search``."""
    from ..search.driver import METHODS  # pylint: disable=import-outside-toplevel
    _common(se)
    se.add_argument("--method", choices=sorted(METHODS), default="ga")
    se.add_argument("--budget", type=float, default=200, help="network-epochs to spend")
    se.add_argument("--population", type=int, default=16, help="GA/DE population")
    se.add_argument("--families", default="mlp,cnn,rnn", help="model families in the space")
    se.add_argument("--metric", default=None, help="validation metric to maximise (default: "
                    "accuracy for classification, r2 for regression)")
    se.add_argument("--epochs", type=_ints, default=(5, 10, 20, 40),
                    help="choices of the epochs gene (training epochs per candidate)")
    se.add_argument("--space", default="",
                    help="narrow genes of the space, e.g. \"optimizer=adam; width=16,32; "
                    "layers=1,2; learning_rate=1e-3,1e-2\" (choices; or bounds / one value of "
                    "a numeric gene): fewer shapes compile fewer programs")
    se.add_argument("--objectives", choices=("metric", "metric,params"), default="metric",
                    help="metric,params: NSGA-II on (metric, -parameter count), Pareto front")
    se.add_argument("--lamarckian", action="store_true",
                    help="configs of a structure trained before start from its best weights")
    se.add_argument("--pad-widths", action="store_true",
                    help="train MLP/CNN widths of one layer count in one padded program")
    se.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its last checkpoint")
    se.add_argument("--checkpoint-every", type=int, default=1,
                    help="write a checkpoint every K rounds (with --out)")


def parse(argv: List[str]) -> argparse.Namespace:
    """Parses ``argv``; a ``--config`` TOML sets defaults that explicit flags override."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        options = rundir.load_toml(args.config)
        sub = parser._subparsers._group_actions[0].choices[args.command]  # pylint: disable=protected-access
        valid = {a.dest for a in sub._actions} - SKIP_IN_CONFIG  # pylint: disable=protected-access
        options = {k.replace("-", "_"): v for k, v in options.items()}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise UserError(f"config {args.config!r} has unknown option(s) {', '.join(unknown)}; "
                            f"valid for {args.command}: {', '.join(sorted(valid))}")
        for action in sub._actions:  # pylint: disable=protected-access
            if action.dest in options and action.type is not None:
                value = options[action.dest]
                value = ",".join(map(str, value)) if isinstance(value, list) else value
                try:
                    options[action.dest] = action.type(value)
                except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                    raise UserError(f"config option {action.dest} = {value!r}: {err}") from err
            if action.dest in options and action.choices and options[action.dest] \
                    not in action.choices:
                raise UserError(f"config option {action.dest} = {options[action.dest]!r}: "
                                f"choose one of {', '.join(map(str, action.choices))}")
        sub.set_defaults(**options)
        args = parser.parse_args(argv)
    return args


def _resolved(args) -> Dict[str, Any]:
    out = {}
    for k, v in sorted(vars(args).items()):
        if k not in SKIP_IN_CONFIG and v is not None:
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _alignment(args):
    """Aligned crossover's options from the CLI's matching flags."""
    from ..operators.alignment import Alignment  # pylint: disable=import-outside-toplevel
    passes = "auto" if args.match_passes is None else (args.match_passes or None)
    return Alignment(matcher=args.matcher, match_to=args.match_to, every=args.match_every,
                     passes=passes)


def _spec(args):
    if args.model == "mlp":
        return MLPSpec(args.hidden or (128, 128), args.activation)
    if args.model == "cnn":  # small enough for minutes per generation on 60 k images
        return CNNSpec(args.hidden or (16, 32), activation=args.activation)
    if args.model == "frames":
        return FramesSpec(args.hidden or (16, 32), cell=args.cell, activation=args.activation)
    hidden = args.hidden or (64, 1)
    return RNNSpec(args.cell, hidden[0], hidden[1] if len(hidden) > 1 else 1)


def _finish(args, argv, data, spec, params, best_config, history, evaluations, extra=None):
    """Writes the run directory; result.json last."""
    from ..core.models import build_model  # pylint: disable=import-outside-toplevel
    model = build_model(spec, data.feature_shape, data.out_dim)
    from ..core.train import split_metrics  # pylint: disable=import-outside-toplevel
    val = split_metrics(model, params, data, "val")
    test = split_metrics(model, params, data, "test")
    # wall-clock fields stay in history.csv: result.json holds only reproducible numbers
    result = {"command": "genetic-dl " + " ".join(argv), "seed": args.seed,
              "dataset": data.name, "best": {"config": best_config, "val": val, "test": test},
              "history": [{k: v for k, v in h.items() if k != "elapsed"} for h in history],
              "budget_used": history[-1]["budget_used"] if history else 0,
              **(extra or {})}
    if not args.quiet:
        print("best (validation): " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
        print("best (test):       " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    if args.out:
        rundir.write_csv(os.path.join(args.out, "history.csv"), history)
        rundir.write_csv(os.path.join(args.out, "evaluations.csv"), evaluations)
        rundir.save_model(os.path.join(args.out, "best_model"), spec, params, data,
                          {"config": best_config})
        rundir.write_json(os.path.join(args.out, "result.json"), result)
        from .report import make_plots  # pylint: disable=import-outside-toplevel
        make_plots(args.out)
        if not args.quiet:
            print(f"wrote {args.out}/result.json")
    return 0


def _trackers(args) -> list:
    """The ``--log`` trackers, writing under the run directory."""
    names = [n.strip() for n in (args.log or "").split(",") if n.strip()]
    if not names:
        return []
    from . import tracking  # pylint: disable=import-outside-toplevel
    unknown = [n for n in names if n not in tracking.TRACKERS]
    if unknown:
        raise UserError(f"--log: unknown tracker(s) {', '.join(unknown)}: choose from "
                        f"{', '.join(tracking.TRACKERS)}")
    if not args.out:
        raise UserError("--log writes under the run directory: add --out DIR")
    return [tracking.make(n, args.out) for n in dict.fromkeys(names)]


def _finish_trackers(trackers, best) -> None:
    for tracker in trackers:
        tracker.finish(best)


def _write_config(args) -> None:
    """Writes the resolved options first, so that even a killed run can be repeated."""
    if args.out:
        rundir.write_bytes(os.path.join(args.out, "config.toml"),
                           rundir.dump_toml(_resolved(args)).encode())


def _resume_state(args, loader):
    """The checkpoint to continue from (``None``: start afresh), checked against the options.

    ``loader(path)`` reads the checkpoint file into the run's state."""
    from . import checkpoint  # pylint: disable=import-outside-toplevel
    folder = os.path.join(args.out, "checkpoints") if args.out else None
    if not args.resume:
        if folder and os.path.isdir(folder):  # a fresh run must not mix with old checkpoints
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
        return None
    if not args.out:
        raise UserError("--resume needs --out DIR: the run directory to continue")
    path = checkpoint.latest(folder)
    if path is None:  # e.g. a retry after a run stopped before its first checkpoint
        print(f"note: no checkpoint in {folder}: starting from the beginning", file=sys.stderr)
        return None
    saved = checkpoint.options(path)
    options = _resolved(args)
    diff = sorted(k for k in set(saved) | set(options)
                  if saved.get(k) != options.get(k) and k not in NOT_COMPARED_ON_RESUME)
    if diff:
        raise UserError(f"checkpoint {path} belongs to a run with other options "
                        f"({', '.join(diff)}): resume with the same options or use another --out")
    state = loader(path)
    if not args.quiet:
        print(f"resuming from {path}")
    return state


def _progress(args, total, unit):
    """A progress progress_bar on stderr (none with --quiet or when stderr is not a terminal)."""
    if args.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    return tqdm(total=total, unit=f" {unit}", dynamic_ncols=True, leave=False)


def _line(args, progress_bar, text: str, advance) -> None:
    """One line per generation (above the progress_bar when there is one); nothing with --quiet."""
    if args.quiet:
        return
    if progress_bar is not None:
        progress_bar.write(text)
        progress_bar.update(advance)
    else:
        print(text, flush=True)


def _close(progress_bar) -> None:
    if progress_bar is not None:
        progress_bar.close()


def _check_positive(args, names):
    for name in names:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")


def evolve_weights_command(args, argv: List[str]) -> int:
    """Runs ``genetic-dl evolve-weights``; returns the exit status."""
    import jax  # pylint: disable=import-outside-toplevel
    from ..core.population import init_population  # pylint: disable=import-outside-toplevel
    from ..weights import WeightGAConfig, evolve_weights  # pylint: disable=import-outside-toplevel
    from . import checkpoint  # pylint: disable=import-outside-toplevel
    _check_positive(args, ("population", "generations", "epochs", "batch_size",
                           "checkpoint_every"))
    data = data_mod.load_dataset(args.dataset, seed=args.seed, task=args.task)
    spec = _spec(args)
    config = WeightGAConfig(rule=args.rule, crossover=args.crossover, selection=args.selection,
                            alignment=_alignment(args) if args.crossover == "aligned" else None,
                            mutation_rate=args.mutation_rate,
                            mutation_scale=args.mutation_scale,
                            elitism=min(args.elitism, args.population))
    hparams = {} if args.lr is None else {"learning_rate": args.lr}
    k_pop, k_ga = jax.random.split(jax.random.key(args.seed))
    pop = init_population(k_pop, spec, data, args.population, args.optimizer, hparams)
    if not args.quiet:
        print(f"{data!r}\n{spec}, P={args.population}, G={args.generations}, "
              f"{args.epochs} epoch(s)/generation, {jax.device_count()} device(s)")

    progress_bar = _progress(args, args.generations, "generations")

    def report(gen, _pop, rec):
        _line(args, progress_bar, f"gen {gen:3d}  best {rec['best']:.4f}  mean {rec['mean']:.4f}  "
              f"std {rec['std']:.4f}  diversity {rec['diversity']:.4f}  "
              f"budget {rec['network_epochs']} net-epochs  {rec['elapsed']:.1f}s", 1)
        return False
    resume = _resume_state(args, lambda path: checkpoint.load(path, pop)[0])
    _write_config(args)
    options = _resolved(args)
    train_data = _training_data(args, data, pop)

    def save(state):
        if args.out and state.generation % args.checkpoint_every == 0:
            checkpoint.save(os.path.join(args.out, "checkpoints"), state, options)
    trackers = _trackers(args)
    res = evolve_weights(k_ga, pop, train_data, generations=args.generations, epochs=args.epochs,
                         batch_size=args.batch_size, config=config, fitness=args.fitness,
                         callbacks=[report, *trackers], resume=resume, on_state=save)
    _close(progress_bar)
    if res.best_params is None:
        raise UserError("every member diverged (NaN/inf loss): lower the learning rate (--lr)")
    parents = {c: (a, b) for _, c, a, b in res.lineage}
    evaluations = [{"generation": h["generation"], "member_id": i, "fitness": f,
                    "parent_a": parents.get(i, (None, None))[0],
                    "parent_b": parents.get(i, (None, None))[1]}
                   for h in res.history for i, f in zip(h["member_ids"], h["member_fitness"])]
    history = [{"generation": h["generation"], "best": h["best"], "mean": h["mean"],
                "std": h["std"], "failed": h["failed"], "diversity": h["diversity"],
                "budget_used": h["network_epochs"], "elapsed": h["elapsed"]}
               for h in res.history]
    best_config = {"model": spec_to_dict(spec), "optimizer": args.optimizer,
                   "member_id": res.best_id, "generation": res.best_generation}
    _finish_trackers(trackers, {**best_config, "learning_rate": args.lr,
                                "fitness": res.best_fitness, "metrics": res.best_metrics})
    return _finish(args, argv, data, spec, res.best_params, best_config, history, evaluations,
                   {"lineage": [list(x) for x in res.lineage],
                    "hall_of_fame": [{k: h[k] for k in ("id", "generation", "fitness")}
                                     for h in res.hall_of_fame]})


def _training_data(args, data, pop):
    """What ``evolve-weights`` trains on: ``data``, or a Stream over its stored arrays
    with ``--stream on``, or with ``auto`` when the data does not fit in memory next
    to the population but the population alone does."""
    from ..core import memory  # pylint: disable=import-outside-toplevel
    from ..core.stream import Stream  # pylint: disable=import-outside-toplevel
    if args.stream == "off":
        return data
    if args.stream == "auto":
        budget = memory.available_bytes()
        mesh = sharding.population_mesh(size=pop.size)
        devices = 1 if mesh is None else int(mesh.devices.size)
        est = memory.estimate(pop, data, min(args.batch_size, len(data.y_train)), devices)
        if budget is None or est.total <= budget or est.total - est.data > budget:
            return data  # it fits, or streaming would not make it fit (train says what would)
        if not args.quiet:
            print(f"note: the data ({est.data / memory.GB:.2f} GB on {devices} device(s)) does "
                  f"not fit next to the population in {budget / memory.GB:.1f} GB: streaming "
                  f"batches from its arrays (--stream off refuses instead)", file=sys.stderr)
    return Stream.from_dataset(data, args.batch_size)


def _search_space(args):
    """The searched families and the space, from ``--families``, ``--epochs``, ``--space``."""
    from ..search.space import SEARCH_FAMILIES, default_space  # pylint: disable=import-outside-toplevel
    if not args.epochs or min(args.epochs) < 1:
        raise UserError(f"--epochs needs positive epoch counts, got {list(args.epochs)}")
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    bad = sorted(set(families) - set(SEARCH_FAMILIES))
    if bad or not families:
        raise UserError(f"unknown model famil(ies) {bad or families}: use "
                        f"{', '.join(SEARCH_FAMILIES)}")
    try:
        return families, default_space(families, args.epochs, narrow=_narrowing(args.space))
    except ValueError as err:
        raise UserError(f"--space: {err}") from err


def search_command(args, argv: List[str]) -> int:
    """Runs ``genetic-dl search``; returns the exit status."""
    import jax  # pylint: disable=import-outside-toplevel
    from . import checkpoint  # pylint: disable=import-outside-toplevel
    from ..search import driver as search_mod  # pylint: disable=import-outside-toplevel
    from ..search.trainer_objective import TrainerObjective  # pylint: disable=import-outside-toplevel
    _check_positive(args, ("population", "budget", "checkpoint_every"))
    families, space = _search_space(args)
    data = data_mod.load_dataset(args.dataset, seed=args.seed, task=args.task)
    if args.metric is None:
        args.metric = "accuracy" if data.is_classification else "r2"
    n_obj = 2 if args.objectives == "metric,params" else 1
    if n_obj > 1 and args.method not in ("ga", "random", "grid"):
        raise UserError(f"--objectives metric,params needs --method ga (NSGA-II), random or "
                        f"grid; {args.method} optimises one objective")
    method = {"ga": lambda: search_mod.GA(population=args.population, objectives=n_obj),
              "de": lambda: search_mod.DifferentialEvolution(population=max(4, args.population)),
              "random": lambda: search_mod.RandomSearch(batch=args.population),
              "grid": lambda: search_mod.GridSearch(batch=args.population),
              "tpe": lambda: search_mod.TPE(batch=max(1, args.population // 2))}[args.method]()
    objective = TrainerObjective(data, seed=args.seed, metric=args.metric,
                                 multi_objective="params" if n_obj > 1 else None,
                                 lamarckian=args.lamarckian, pad_widths=args.pad_widths)
    if not args.quiet:
        print(f"{data!r}\nsearch: {args.method}, budget {args.budget:g} network-epochs, "
              f"families {','.join(families)}")
    resume = _resume_state(args, checkpoint.load_search)
    replay = []
    if resume is not None:
        objective.load_state_dict(resume["objective"])
        replay = resume["evaluations"]
    _write_config(args)
    options = _resolved(args)
    progress_bar = _progress(args, args.budget, "network-epochs")

    def report(rnd, rec):
        done = progress_bar.n if progress_bar is not None else 0
        _line(args, progress_bar,
              f"round {rnd:3d}  best {rec['best']:.4f}  mean {rec['mean']:.4f}  "
              f"std {rec['std']:.4f}  diversity {rec['diversity']:.3f}  "
              f"best so far {rec['best_so_far']:.4f}  "
              f"budget {rec['budget_used']:g}/{args.budget:g}  {rec['elapsed']:.1f}s",
              rec["budget_used"] - done)
        return False

    def save(res):
        rounds = len(res.history)
        if args.out and rounds % args.checkpoint_every == 0 and rounds > len(
                {e["round"] for e in replay}):
            checkpoint.save_search(os.path.join(args.out, "checkpoints"), rounds,
                                   res.evaluations, objective.state_dict(), options)
    trackers = _trackers(args)
    res = search_mod.run_search(method, space, objective,
                                args.budget, jax.random.key(args.seed), objectives=n_obj,
                                callbacks=[report, *trackers], replay=replay, on_round=save)
    _close(progress_bar)
    if not objective.best:
        raise UserError("no candidate trained successfully: raise --budget or check the data")
    _finish_trackers(trackers, {**objective.best["config"], "fitness": objective.best["fitness"]})
    history = [{"generation": h["round"], "best": h["best"], "mean": h["mean"], "std": h["std"],
                "diversity": h["diversity"], "best_so_far": h["best_so_far"],
                "budget_used": h["budget_used"],
                "elapsed": h["elapsed"], "best_config": h["best_config"]} for h in res.history]
    evaluations = [{"round": e["round"], "budget_used": e["budget_used"],
                    "fitness": first_objective(e["fitness"]), "cost": e["cost"], "id": e["id"],
                    "parent_a": (e["parents"] or (None, None))[0],
                    "parent_b": (e["parents"] or (None, None))[1],
                    **({"params": -e["fitness"][1]} if n_obj > 1 else {}), **e["config"]}
                   for e in res.evaluations]
    extra = {"method": args.method,
             "hall_of_fame": [{"config": e["config"], "fitness": e["fitness"]}
                              for e in res.hall_of_fame(5)]}
    if n_obj > 1:
        extra["pareto"] = [{"config": e["config"], "metric": e["fitness"][0],
                            "params": -e["fitness"][1]} for e in res.pareto]
    return _finish(args, argv, data, objective.best["spec"], objective.best["params"],
                   objective.best["config"], history, evaluations, extra)


def _narrowing(text: str) -> Dict[str, List[str]]:
    """``"optimizer=adam; width=16,32"`` -> ``{"optimizer": ["adam"], "width": ["16", "32"]}``."""
    out: Dict[str, List[str]] = {}
    text = ";".join(map(str, text)) if isinstance(text, (list, tuple)) else str(text)
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        name, sep, values = item.partition("=")
        values = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name.strip() or not values:
            raise UserError(f"--space entry {item!r} is not gene=value[,value...]: e.g. "
                            f"--space \"optimizer=adam; width=16,32\"")
        out[name.strip()] = values
    return out


def _watchdog(args):
    """Ends a run stuck without CPU use (status 3) so that a scheduler can retry it."""
    from . import watchdog  # pylint: disable=import-outside-toplevel
    if args.out:
        return watchdog.watch(args.watchdog_seconds, os.path.join(args.out, "hang.txt"),
                              "the last checkpoint is kept: rerun the same command with "
                              "--resume to continue")
    return watchdog.watch(args.watchdog_seconds, None,
                          "rerun it (with --out DIR to keep checkpoints and --resume them)")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``genetic-dl`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(argv)
        if not sharding.backends_started():  # a caller that already ran JAX keeps its devices
            sharding.use_host_devices()
        from .cache import enable_compile_cache  # pylint: disable=import-outside-toplevel
        enable_compile_cache()
        if args.command == "datasets":
            for name, (_, about) in data_mod.DATASETS.items():
                print(f"{name:<10} {about}")
            return 0
        if args.command == "report":
            from .report import write_report  # pylint: disable=import-outside-toplevel
            for name in write_report(args.run_dir, args.latex):
                print(os.path.join(args.run_dir, name))
            return 0
        command = search_command if args.command == "search" else evolve_weights_command
        with _watchdog(args):
            return command(args, argv)
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
