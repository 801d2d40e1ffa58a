"""Command line: ``genetic-dl evolve-weights | search | report | datasets``.

User errors (bad flags, unknown dataset, bad data, bad config) exit with status 2
and one line on stderr starting ``error:``, without a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import (Any, Callable, ContextManager, Dict, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import jax
from tqdm import tqdm

from .. import data as data_mod
from . import checkpoint, rundir, tracking, watchdog
from .arguments import BUDGET_UNITS, UserError, build_parsers
from .captions import caption_examples, write_caption_strip
from .cache import enable_compile_cache
from .report import fitness_label, make_plots, write_report
from .soup_entry import soup_entry
from ..core import conv_layout, memory, sharding
from ..core.models import (CaptionSpec, CNNSpec, FramesSpec, MLPSpec, ModelSpec, RNNSpec,
                           build_model, spec_to_dict)
from ..core.population import Population, init_population
from ..core.pytree import Params
from ..core.stream import Stream, estimate_stream
from ..core.tables import first_objective
from ..core.train import split_metrics
from ..data import Dataset
from ..errors import check_choice
from ..operators.alignment import Alignment
from ..search import driver as search_mod
from ..search.fidelity import Fidelity
from ..search.space import SEARCH_FAMILIES, Space, default_space
from ..search.strategy import Strategy
from ..search.trainer_objective import TrainerObjective
from ..weights import LoopState, WeightGAConfig, evolve_weights

SKIP_IN_CONFIG = {"command", "config", "out", "quiet", "latex", "run_dir", "resume", "help"}
# Options that do not change a run's numbers: a resumed run may differ in them.
NOT_COMPARED_ON_RESUME = {"checkpoint_every", "watchdog_seconds", "soups", "soup_repair"}


def parse(argv: List[str]) -> argparse.Namespace:
    """Parses ``argv``; a ``--config`` TOML sets defaults that explicit flags override."""
    parser, commands = build_parsers()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        options = rundir.load_toml(args.config)
        sub = commands[args.command]
        valid = {a.dest for a in sub._actions} - SKIP_IN_CONFIG  # pylint: disable=protected-access
        options = {k.replace("-", "_"): v for k, v in options.items()}
        for name in options:
            check_choice("option", name, sorted(valid),
                         f"(of {args.command}, in config {args.config!r})")
        for action in sub._actions:  # pylint: disable=protected-access
            if action.dest in options and callable(action.type):
                value = options[action.dest]
                value = ",".join(map(str, value)) if isinstance(value, list) else value
                try:
                    options[action.dest] = action.type(value)
                except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                    raise UserError(f"config option {action.dest} = {value!r}: {err}") from err
            if action.dest in options and action.choices:
                check_choice(action.dest, options[action.dest], action.choices,
                             f"(in config {args.config!r})")
        sub.set_defaults(**options)
        args = parser.parse_args(argv)
    return args


def _resolved(args: argparse.Namespace) -> Dict[str, Any]:
    out = {}
    for k, v in sorted(vars(args).items()):
        if k not in SKIP_IN_CONFIG and v is not None:
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _alignment(args: argparse.Namespace) -> Alignment:
    """Aligned crossover's options from the CLI's matching flags."""
    passes = "auto" if args.match_passes is None else (args.match_passes or None)
    return Alignment(matcher=args.matcher, match_to=args.match_to, every=args.match_every,
                     passes=passes)


def _spec(args: argparse.Namespace, data: Dataset) -> ModelSpec:
    if args.model == "caption":  # one head per caption slot of the data
        if not data.slots:
            raise UserError("--model caption predicts caption slots, (n, slots) labels, but "
                            "this dataset has one label per example: use --model frames")
        return CaptionSpec(args.hidden or (16, 32), cell=args.cell, activation=args.activation,
                           slot_classes=data.slot_classes)
    if args.model == "mlp":
        return MLPSpec(args.hidden or (128, 128), args.activation)
    if args.model == "cnn":  # small enough for minutes per generation on 60 k images
        return CNNSpec(args.hidden or (16, 32), activation=args.activation)
    if args.model == "frames":
        return FramesSpec(args.hidden or (16, 32), cell=args.cell, activation=args.activation)
    hidden = args.hidden or (64, 1)
    return RNNSpec(args.cell, hidden[0], hidden[1] if len(hidden) > 1 else 1)


def _finish(args: argparse.Namespace, argv: List[str], data: Dataset, spec: ModelSpec,
            params: Params, best_config: Dict[str, Any], history: List[Dict[str, Any]],
            evaluations: List[Dict[str, Any]], extra: Optional[Dict[str, Any]] = None) -> int:
    """Writes the run directory; result.json last."""
    model = build_model(spec, data.feature_shape, data.out_dim)
    val = split_metrics(model, params, data, "val")
    test = split_metrics(model, params, data, "test")
    captions = caption_examples(model, params, data) if data.slots else []
    # wall-clock fields stay in history.csv: result.json holds only reproducible numbers
    result = {"command": "genetic-dl " + " ".join(argv), "seed": args.seed,
              "dataset": data.name, "best": {"config": best_config, "val": val, "test": test},
              "history": [{k: v for k, v in h.items() if k != "elapsed"} for h in history],
              "budget_used": history[-1]["budget_used"] if history else 0,
              "lowering": conv_layout.model_lowering(model.apply, params, data.feature_shape,
                                                     data.feature_dtype, jax.default_backend()),
              **({"captions": captions} if captions else {}), **(extra or {})}
    if not args.quiet:
        print("best (validation): " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
        print("best (test):       " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    if args.out:
        rundir.write_csv(os.path.join(args.out, "history.csv"), history)
        rundir.write_csv(os.path.join(args.out, "evaluations.csv"), evaluations)
        rundir.save_model(os.path.join(args.out, "best_model"), spec, params, data,
                          {"config": best_config})
        if captions:
            write_caption_strip(os.path.join(args.out, "captions.png"), data, captions)
        rundir.write_json(os.path.join(args.out, "result.json"), result)
        make_plots(args.out)
        if not args.quiet:
            print(f"wrote {args.out}/result.json")
    return 0


def _trackers(args: argparse.Namespace) -> List[tracking.Tracker]:
    """The ``--log`` trackers, writing under the run directory."""
    names = [n.strip() for n in (args.log or "").split(",") if n.strip()]
    if not names:
        return []
    bad = [n for n in names if n not in tracking.TRACKERS]
    if bad:  # every misspelt name of the list at once
        raise UserError(f"--log: unknown tracker(s) {', '.join(bad)}: choose one of "
                        f"{', '.join(tracking.TRACKERS)}")
    if not args.out:
        raise UserError("--log writes under the run directory: add --out DIR")
    return [tracking.make(n, args.out) for n in dict.fromkeys(names)]


def _finish_trackers(trackers: Sequence[tracking.Tracker], best: Dict[str, Any]) -> None:
    for tracker in trackers:
        tracker.finish(best)


def _write_config(args: argparse.Namespace) -> None:
    """Writes the resolved options first, so that even a killed run can be repeated."""
    if args.out:
        rundir.write_bytes(os.path.join(args.out, "config.toml"),
                           rundir.dump_toml(_resolved(args)).encode())


def _resume_state(args: argparse.Namespace, loader: Callable[[str], Any]) -> Any:
    """The checkpoint to continue from (``None``: start afresh), checked against the options.

    ``loader(path)`` reads the checkpoint file into the run's state."""
    if not args.resume:
        folder = os.path.join(args.out, "checkpoints") if args.out else None
        if folder and os.path.isdir(folder):  # a fresh run must not mix with old checkpoints
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
        return None
    if not args.out:
        raise UserError("--resume needs --out DIR: the run directory to continue")
    folder = os.path.join(args.out, "checkpoints")
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


def _progress(args: argparse.Namespace, total: float, unit: str) -> Optional[tqdm]:
    """A progress bar on stderr (none with --quiet or when stderr is not a terminal)."""
    if args.quiet or not sys.stderr.isatty():
        return None
    return tqdm(total=total, unit=f" {unit}", dynamic_ncols=True, leave=False)


def _line(args: argparse.Namespace, progress_bar: Optional[tqdm], text: str,
          advance: float) -> None:
    """One line per generation (above the progress_bar when there is one); nothing with --quiet."""
    if args.quiet:
        return
    if progress_bar is not None:
        progress_bar.write(text)
        progress_bar.update(advance)
    else:
        print(text, flush=True)


def _close(progress_bar: Optional[tqdm]) -> None:
    if progress_bar is not None:
        progress_bar.close()


def _check_positive(args: argparse.Namespace, names: Sequence[str]) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")


def evolve_weights_command(args: argparse.Namespace, argv: List[str]) -> int:
    """Runs ``genetic-dl evolve-weights``; returns the exit status."""
    _check_positive(args, ("population", "generations", "epochs", "batch_size",
                           "checkpoint_every"))
    data = data_mod.load_dataset(args.dataset, seed=args.seed, task=args.task)
    spec = _spec(args, data)
    config = WeightGAConfig(rule=args.rule, crossover=args.crossover, selection=args.selection,
                            alignment=_alignment(args) if args.crossover == "aligned" else None,
                            mutation_rate=args.mutation_rate,
                            mutation_scale=args.mutation_scale,
                            elitism=min(args.elitism, args.population),
                            recombination=args.recombination or "none",
                            recombination_rate=args.recombination_rate,
                            recombination_period=(1 if args.recombination_period is None
                                                  else args.recombination_period),
                            shared_start=bool(args.shared_start),
                            reset_statistics=args.reset_statistics or 0,
                            repair=args.repair or 0)
    hparams = {} if args.lr is None else {"learning_rate": args.lr}
    k_pop, k_ga = jax.random.split(jax.random.key(args.seed))
    pop = init_population(k_pop, spec, data, args.population, args.optimizer, hparams)
    args.fitness = args.fitness or pop.learner.default_fitness()
    if not args.quiet:
        print(f"{data!r}\n{spec}, P={args.population}, G={args.generations}, "
              f"{args.epochs} epoch(s)/generation, {jax.device_count()} device(s)")

    progress_bar = _progress(args, args.generations, "generations")

    label = fitness_label(args.fitness)

    def report(gen: int, _pop: Population, rec: Mapping[str, Any]) -> bool:
        _line(args, progress_bar, f"gen {gen:3d}  {label}: best {rec['best']:.4f} "
              f"mean {rec['mean']:.4f} std {rec['std']:.4f}  diversity {rec['diversity']:.4f}  "
              f"budget {rec['network_epochs']} net-epochs  elapsed {rec['elapsed']:.1f}s", 1)
        return False
    resume = _resume_state(args, lambda path: checkpoint.load(path, pop)[0])
    _write_config(args)
    options = _resolved(args)
    train_data = _training_data(args, data, pop)

    def save(state: LoopState) -> None:
        if args.out and state.generation % args.checkpoint_every == 0:
            checkpoint.save(os.path.join(args.out, "checkpoints"), state, options)
    trackers = _trackers(args)
    res = evolve_weights(k_ga, pop, train_data, generations=args.generations, epochs=args.epochs,
                         batch_size=args.batch_size, config=config, fitness=args.fitness,
                         callbacks=[report, *trackers], resume=resume, on_state=save)
    _close(progress_bar)
    parents = {c: (a, b) for _, c, a, b in res.lineage}
    records: List[Dict[str, Any]] = res.history  # member_ids, member_fitness: lists
    evaluations = [{"generation": h["generation"], "member_id": i, "fitness": f,
                    "parent_a": parents.get(i, (None, None))[0],
                    "parent_b": parents.get(i, (None, None))[1]}
                   for h in records for i, f in zip(h["member_ids"], h["member_fitness"])]
    history = [{"generation": h["generation"], "best": h["best"], "mean": h["mean"],
                "std": h["std"], "failed": h["failed"], "diversity": h["diversity"],
                "budget_used": h["network_epochs"], "elapsed": h["elapsed"]}
               for h in res.history]
    best_config = {"model": spec_to_dict(spec), "optimizer": args.optimizer,
                   "member_id": res.best_id, "generation": res.best_generation}
    _finish_trackers(trackers, {**best_config, "learning_rate": args.lr,
                                "fitness": res.best_fitness, "metrics": res.best_metrics})
    extra: Dict[str, Any] = {
        "fitness": label, "lineage": [list(x) for x in res.lineage],
        "hall_of_fame": [{k: h[k] for k in ("id", "generation", "fitness")}
                         for h in res.hall_of_fame]}
    if args.soups:
        extra["soups"] = soup_entry(args, res, data, label)
    return _finish(args, argv, data, spec, res.best_params, best_config, history, evaluations,
                   extra)


def _training_data(args: argparse.Namespace, data: Dataset,
                   pop: Population) -> Union[Dataset, Stream]:
    """What ``evolve-weights`` trains on: ``data``, or a Stream over its stored arrays
    with ``--stream on``, or with ``auto`` when the data does not fit in memory next
    to the population but the population and a staged step of batches do."""
    if args.stream == "off":
        return data
    stream = Stream.from_dataset(data, args.batch_size)
    if args.stream == "auto":
        budget = memory.available_bytes()
        mesh = sharding.population_mesh(size=pop.size)
        devices = 1 if mesh is None else int(mesh.devices.size)
        est = memory.estimate(pop, data, min(args.batch_size, len(data.y_train)), devices)
        if budget is None or est.total <= budget \
                or estimate_stream(pop, stream, devices, steps=1).total > budget:
            return data  # it fits, or streaming would not make it fit (train says what would)
        if not args.quiet:
            print(f"note: the data ({est.data / memory.GB:.2f} GB on {devices} device(s)) does "
                  f"not fit next to the population in {budget / memory.GB:.1f} GB: streaming "
                  f"batches from its arrays (--stream off refuses instead)", file=sys.stderr)
    return stream


def _search_space(args: argparse.Namespace) -> Tuple[Tuple[str, ...], Space]:
    """The searched families and the space, from ``--families``, ``--epochs``, ``--space``."""
    if not args.epochs or min(args.epochs) < 1:
        raise UserError(f"--epochs needs positive epoch counts, got {list(args.epochs)}")
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    if not families:
        raise UserError(f"--families names no model family: give some of "
                        f"{', '.join(SEARCH_FAMILIES)}")
    for family in families:
        check_choice("model family", family, SEARCH_FAMILIES)
    try:
        return families, default_space(families, args.epochs, narrow=_narrowing(args.space))
    except ValueError as err:
        raise UserError(f"--space: {err}") from err


def search_command(args: argparse.Namespace, argv: List[str]) -> int:
    """Runs ``genetic-dl search``; returns the exit status."""
    _check_positive(args, ("population", "budget", "checkpoint_every"))
    fidelity = _fidelity(args)
    families, space = _search_space(args)
    data = data_mod.load_dataset(args.dataset, seed=args.seed, task=args.task)
    if families != ("caption",) if data.slots else "caption" in families:
        raise UserError("this dataset has caption slots: search it with --families caption"
                        if data.slots else "--families caption searches a dataset with caption "
                        "slots (e.g. captioned_moving_digits), alone: drop it here")
    if args.metric is None:
        args.metric = "slot_accuracy" if data.slots else \
            "accuracy" if data.is_classification else "r2"
    n_obj = 2 if args.objectives == "metric,params" else 1
    if n_obj > 1 and args.method not in ("ga", "random", "grid"):
        raise UserError(f"--objectives metric,params needs --method ga (NSGA-II), random or "
                        f"grid; {args.method} optimises one objective")
    methods: Dict[str, Callable[[], Strategy[Any]]] = {
        "ga": lambda: search_mod.GA(population=args.population, objectives=n_obj,
                                    fidelity=fidelity),
        "de": lambda: search_mod.DifferentialEvolution(population=max(4, args.population)),
        "random": lambda: search_mod.RandomSearch(batch=args.population),
        "grid": lambda: search_mod.GridSearch(batch=args.population),
        "tpe": lambda: search_mod.TPE(batch=max(1, args.population // 2))}
    method = methods[args.method]()
    objective = TrainerObjective(data, seed=args.seed, metric=args.metric,
                                 multi_objective="params" if n_obj > 1 else None,
                                 lamarckian=args.lamarckian, pad_widths=args.pad_widths)
    unit = args.budget_unit or "network-epochs"
    if not args.quiet:
        print(f"{data!r}\nsearch: {args.method}, budget {args.budget:g} {unit}, "
              f"families {','.join(families)}")
    resume = _resume_state(args, checkpoint.load_search)
    replay: List[Dict[str, Any]] = []
    if resume is not None:
        objective.load_state_dict(resume["objective"])
        replay = resume["evaluations"]
    _write_config(args)
    options = _resolved(args)
    progress_bar = _progress(args, args.budget, unit)

    label = fitness_label(args.metric)

    def report(rnd: int, rec: Mapping[str, Any]) -> bool:
        done = progress_bar.n if progress_bar is not None else 0
        _line(args, progress_bar,
              f"round {rnd:3d}  {label}: best {rec['best']:.4f} mean {rec['mean']:.4f} "
              f"std {rec['std']:.4f} best so far {rec['best_so_far']:.4f}  "
              f"diversity {rec['diversity']:.3f}  "
              f"budget {rec['budget_used']:g}/{args.budget:g}  elapsed {rec['elapsed']:.1f}s",
              rec["budget_used"] - done)
        return False

    def save(res: search_mod.SearchResult) -> None:
        rounds = len(res.history)
        if args.out and rounds % args.checkpoint_every == 0 and rounds > len(
                {e["round"] for e in replay}):
            checkpoint.save_search(os.path.join(args.out, "checkpoints"), rounds,
                                   res.evaluations, objective.state_dict(), options)
    trackers = _trackers(args)
    res = search_mod.run_search(method, space, objective,
                                args.budget, jax.random.key(args.seed), objectives=n_obj,
                                callbacks=[report, *trackers], replay=replay, on_round=save,
                                budget_unit=BUDGET_UNITS[unit])
    _close(progress_bar)
    if not objective.best:
        raise UserError("no candidate trained successfully: raise --budget or check the data")
    _finish_trackers(trackers, {**objective.best["config"], "fitness": objective.best["fitness"]})
    history = [{"generation": h["round"], "best": h["best"], "mean": h["mean"], "std": h["std"],
                "diversity": h["diversity"], "best_so_far": h["best_so_far"],
                "budget_used": h["budget_used"],
                **{k: v for k, v in h.items() if k.endswith("_used") and k != "budget_used"},
                "elapsed": h["elapsed"], "best_config": h["best_config"]} for h in res.history]
    evaluations = [{"round": e["round"], "budget_used": e["budget_used"],
                    "fitness": first_objective(e["fitness"]), "cost": e["cost"], "id": e["id"],
                    "parent_a": (e["parents"] or (None, None))[0],
                    "parent_b": (e["parents"] or (None, None))[1],
                    **{k: e[k] for k in (*res.costs, "rung_epochs") if k in e},
                    **({"params": -e["fitness"][1]} if n_obj > 1 else {}), **e["config"]}
                   for e in res.evaluations]
    extra: Dict[str, Any] = {
        "method": args.method, "fitness": label, "budget_unit": unit, "costs": res.costs,
        "hall_of_fame": [{"config": e["config"], "fitness": e["fitness"]}
                         for e in res.hall_of_fame(5)]}
    if n_obj > 1:
        extra["pareto"] = [{"config": e["config"], "metric": e["fitness"][0],
                            "params": -e["fitness"][1]} for e in res.pareto]
    return _finish(args, argv, data, objective.best["spec"], objective.best["params"],
                   objective.best["config"], history, evaluations, extra)


def _fidelity(args: argparse.Namespace) -> Optional[Fidelity]:
    """Multi-fidelity generations from ``--min-epochs`` and ``--eta`` (``None``: off)."""
    if args.min_epochs is None and args.eta is not None:
        raise UserError("--eta sets the rungs of --min-epochs: give --min-epochs too")
    if args.min_epochs is not None and (args.method != "ga" or args.objectives != "metric"):
        raise UserError("--min-epochs trains the GA's generations in rungs ranked by one "
                        "metric: use --method ga and --objectives metric")
    eta = 3 if args.eta is None else args.eta
    return None if args.min_epochs is None else Fidelity(args.min_epochs, eta)


def _narrowing(text: Union[str, Sequence[str]]) -> Dict[str, List[str]]:
    """``"optimizer=adam; width=16,32"`` -> ``{"optimizer": ["adam"], "width": ["16", "32"]}``
    (a config file may give the entries as a list)."""
    out: Dict[str, List[str]] = {}
    text = ";".join(map(str, text)) if isinstance(text, (list, tuple)) else str(text)
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        name, sep, listed = item.partition("=")
        values = [v.strip() for v in listed.split(",") if v.strip()]
        if not sep or not name.strip() or not values:
            raise UserError(f"--space entry {item!r} is not gene=value[,value...]: e.g. "
                            f"--space \"optimizer=adam; width=16,32\"")
        out[name.strip()] = values
    return out


def _watchdog(args: argparse.Namespace) -> ContextManager[None]:
    """Ends a run stuck without CPU use (status 3) so that a scheduler can retry it."""
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
        enable_compile_cache()
        if args.command == "datasets":
            for name, (_, about) in data_mod.DATASETS.items():
                print(f"{name:<10} {about}")
            return 0
        if args.command == "report":
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
