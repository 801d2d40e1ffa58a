"""The command line's grammar: the ``genetic-dl`` commands, their options and defaults.

The choices of each option are the library's own tables (optimizers, crossovers,
rules, search methods...), so the parser accepts what the library implements.
"""
from __future__ import annotations

import argparse
from typing import Dict, NoReturn, Tuple

from ..core.optimizers import OPTIMIZERS
from ..data import TASKS
from ..operators.alignment import MATCH_TO
from ..operators.crossover import CROSSOVERS
from ..operators.matching import MATCHERS
from ..operators.recombination import DEFAULT_RATES, METHODS as RECOMBINATIONS
from ..operators.selection import SELECTIONS
from ..search.driver import METHODS
from ..weights.config import RULES


# --budget-unit's choices and the run_search unit each names (None: the objective's cost).
BUDGET_UNITS = {"network-epochs": None, "flop-epochs": "flop_epochs", "seconds": "seconds"}


class UserError(Exception):
    """An error in the user's input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def _ints(text: str) -> Tuple[int, ...]:
    """``"16,32"`` -> ``(16, 32)``: the type of comma-separated integer options."""
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from err


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help="bundled name or path to an .npz")
    p.add_argument("--task", choices=TASKS, help="override the task of an .npz")
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


def build_parsers() -> Tuple[argparse.ArgumentParser, Dict[str, argparse.ArgumentParser]]:
    """The ``genetic-dl`` parser and each command's own parser, by command name."""
    parser: argparse.ArgumentParser = _Parser(prog="genetic-dl",
                                              description="Evolve neural networks with JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands: Dict[str, argparse.ArgumentParser] = {
        "datasets": sub.add_parser("datasets", help="list the bundled datasets"),
        "report": sub.add_parser("report", help="write report.md (and plots) of a run directory"),
        "evolve-weights": sub.add_parser("evolve-weights",
                                         help="the GDNN weight GA hybrid with gradient descent"),
        "search": sub.add_parser("search", help="search hyperparameters and structure"),
    }
    commands["report"].add_argument("run_dir")
    commands["report"].add_argument("--latex", action="store_true", help="also write report.tex")
    _evolve_parser(commands["evolve-weights"])
    _search_parser(commands["search"])
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``genetic-dl`` command."""
    return build_parsers()[0]


def _evolve_parser(ev: argparse.ArgumentParser) -> None:
    """The options of ``genetic-dl evolve-weights``."""
    _common(ev)
    ev.add_argument("--model", choices=("mlp", "cnn", "rnn", "frames", "caption"), default="mlp",
                    help="frames: a CNN per frame then a recurrent layer, for image sequences; "
                    "caption: the same with one head per caption slot, for videos with "
                    "caption slots (captioned_moving_digits)")
    ev.add_argument("--hidden", type=_ints, default=None,
                    help="MLP widths (default 128,128) / CNN, frames or caption filters (default "
                    "16,32) / RNN hidden,layers (default 64,1)")
    ev.add_argument("--cell", choices=("gru", "lstm", "simple"), default="gru",
                    help="recurrent cell of --model rnn, frames and caption")
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
    # None when not given (off, the method's rate, 1): a checkpoint of a run from before
    # these options existed resumes
    ev.add_argument("--recombination", choices=RECOMBINATIONS, default=None,
                    help="mix the members while a generation trains, after every "
                    "--recombination-period epochs: wash (WASH: a fraction of weight positions "
                    "shuffled among the members), pull (PAPA: every member pulled toward the "
                    "population's mean), pairwise (random pairs averaged); default none")
    ev.add_argument("--recombination-rate", type=float, default=None,
                    help="the shuffled fraction (wash) or the pull toward the mean (pull, "
                    "pairwise), in [0, 1]; default " + ", ".join(
                        f"{k} {v:g}" for k, v in DEFAULT_RATES.items() if k != "none"))
    ev.add_argument("--recombination-period", type=int, default=None,
                    help="epochs between recombinations (default 1); a generation recombines "
                    "at its end too")
    ev.add_argument("--shared-start", action="store_true", default=None,
                    help="every member starts from member 0's weights and optimizer state "
                    "(the one initialisation that --recombination assumes)")
    ev.add_argument("--reset-statistics", type=int, default=None, metavar="BATCHES",
                    help="after each generation's training, recompute BatchNorm statistics on "
                    "this many training batches, so averaged or crossed members are scored "
                    "with their own (default 0: off)")
    ev.add_argument("--repair", type=int, default=None, metavar="BATCHES",
                    help="REPAIR after each --recombination pull or pairwise round, on this many "
                    "training batches: units rescaled to the mix of their endpoints' statistics "
                    "(BatchNorm models: statistics recomputed) (default 0: off)")
    ev.add_argument("--fitness", default=None, help="validation metric to maximise "
                    "(loss and mse are negated; default loss, slot_accuracy for --model caption)")
    ev.add_argument("--soups", action="store_true", default=None,
                    help="after the run, make model soups of the final population (uniform "
                    "and greedy averages), choose among them and its best member by --fitness "
                    "on validation, and add to result.json each one's validation fitness "
                    "(the prediction ensemble's too), the chosen name and the chosen model's "
                    "test metrics; the best member's outputs stay as they are")
    ev.add_argument("--soup-repair", action="store_true", default=None,
                    help="with --soups and a model without BatchNorm: rescale each average's "
                    "hidden units to the mean and spread its members' units have on training "
                    "batches (REPAIR, Jordan et al. 2023)")
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
    _common(se)
    se.add_argument("--method", choices=sorted(METHODS), default="ga")
    se.add_argument("--budget", type=float, default=200,
                    help="what the search may spend, in --budget-unit")
    # None when not given (network-epochs, off, 3): a checkpoint of a run from before these
    # options existed resumes
    se.add_argument("--budget-unit", choices=BUDGET_UNITS, default=None,
                    help="what --budget counts: network-epochs (the default), flop-epochs "
                    "(network-epochs each weighted by the network's training FLOPs per example "
                    "over those of an MLP of two 64-unit layers, so wider and deeper networks "
                    "cost more) or seconds of wall time (checked after each round, so the last "
                    "one may overrun; such a run does not repeat, nor resume bit-identically). "
                    "result.json reports network-epochs and FLOP-epochs used either way")
    se.add_argument("--min-epochs", type=int, default=None,
                    help="multi-fidelity generations (--method ga): each generation's children "
                    "first train this many epochs; only the best 1/--eta train on, --eta times "
                    "as many epochs per rung, up to their epochs gene, continuing from where "
                    "they stopped; selection ranks children by the rung they reached, then by "
                    "fitness (default: off, every child trains its epochs)")
    se.add_argument("--eta", type=int, default=None,
                    help="with --min-epochs: each rung keeps the best 1/eta of its children "
                    "and trains them eta times as long (default 3)")
    se.add_argument("--population", type=int, default=16, help="GA/DE population")
    se.add_argument("--families", default="mlp,cnn,rnn", help="model families in the space "
                    "(caption: alone, for a dataset with caption slots)")
    se.add_argument("--metric", default=None, help="validation metric to maximise (default: "
                    "accuracy for classification, r2 for regression, slot_accuracy for "
                    "caption slots)")
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
