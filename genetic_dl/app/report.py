"""Plots and the report of a finished run directory (reads only its files)."""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from ..core.learner import maximized
from .rundir import write_bytes


def fitness_label(metric: str) -> str:
    """What a run maximises, as its tables name it: ``val_accuracy``, or ``-val_loss`` for
    a loss-like metric (negated, so that higher is better)."""
    return f"val_{metric}" if maximized(metric) else f"-val_{metric}"


def _read(run_dir: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    path = os.path.join(run_dir, "result.json")
    if not os.path.exists(path):
        raise ValueError(f"{run_dir!r} has no result.json: the run did not finish (resume it "
                         f"with --resume) or this is not a run directory")
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    rows: List[Dict[str, Any]] = []
    ev = os.path.join(run_dir, "evaluations.csv")
    if os.path.exists(ev):
        with open(ev, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    return result, rows


def _num(v: Any) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def make_plots(run_dir: str) -> List[str]:
    """Writes fitness-vs-generation, best-so-far-vs-budget and hyperparameter plots.

    Returns:
      The written file names (empty, with a note printed, without matplotlib).
    """
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("note: matplotlib is absent, no plots (pip install 'genetic-dl[plots]')")
        return []
    result, rows = _read(run_dir)
    hist = result["history"]
    written = []
    gens = [h["generation"] for h in hist]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    best = [h["best"] for h in hist]
    mean = [h["mean"] for h in hist]
    std = [h["std"] or 0.0 for h in hist]
    axes[0].plot(gens, best, marker="o", label="best")
    axes[0].errorbar(gens, mean, yerr=std, marker=".", capsize=2, label="mean ± std")
    axes[0].set_xlabel("generation")
    axes[0].set_ylabel(f"fitness ({result.get('fitness', 'validation')})")
    axes[0].legend()
    so_far, running = [], float("-inf")
    for h in hist:
        running = max(running, h["best"] if h["best"] is not None else float("-inf"))
        so_far.append(running)
    axes[1].step([h["budget_used"] for h in hist], so_far, where="post", marker="o")
    axes[1].set_xlabel(f"budget used ({result.get('budget_unit', 'network-epochs')})")
    axes[1].set_ylabel("best so far")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result['dataset']}: {result['command']}", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "fitness.png"), dpi=110)
    plt.close(fig)
    written.append("fitness.png")
    lrs = [(_num(r.get("learning_rate")), _num(r.get("fitness"))) for r in rows]
    lrs = [(a, b) for a, b in lrs if a is not None and b is not None]
    if lrs:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        rates, fitness = zip(*lrs)
        ax.scatter(rates, fitness, s=12, alpha=0.7)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("fitness")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(run_dir, "hyperparameters.png"), dpi=110)
        plt.close(fig)
        written.append("hyperparameters.png")
    if result.get("pareto"):
        written.append(_pareto_plot(plt, run_dir, result, rows))
    return written


def _pareto_plot(plt: Any, run_dir: str, result: Dict[str, Any],
                 rows: List[Dict[str, Any]]) -> str:
    """Every evaluated candidate and the non-dominated front: metric vs parameter count."""
    pts = [(_num(r.get("params")), _num(r.get("fitness"))) for r in rows]
    pts = [(a, b) for a, b in pts if a is not None and b is not None]
    front = sorted((p["params"], p["metric"]) for p in result["pareto"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if pts:
        ax.scatter(*zip(*pts), s=10, alpha=0.4, label="evaluated")
    ax.step(*zip(*front), where="post", color="C3", marker="o", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("fitness (validation)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "pareto.png"), dpi=110)
    plt.close(fig)
    return "pareto.png"


def structure(config: Dict[str, Any]) -> str:
    """A search config's network in a few characters: ``mlp 128-64 relu``, ``rnn gru 64x2``."""
    family = config.get("family", "mlp")
    if family == "rnn":
        return f"rnn {config.get('rnn_cell', 'gru')} {config.get('rnn_hidden', 64)}" \
               f"x{config.get('rnn_layers', 1)}"
    widths = "-".join(str(config.get(f"width_{i}", 64)) for i in range(int(config.get("layers",
                                                                                      2))))
    kernel = f" k{config.get('kernel_size', 3)}" if family in ("cnn", "caption") else ""
    recurrent = f" {config.get('rnn_cell', 'gru')} {config.get('rnn_hidden', 64)}" \
        if family == "caption" else ""
    return f"{family} {widths}{kernel}{recurrent} {config.get('activation', 'relu')}"


def _candidates(history: List[Dict[str, Any]]) -> List[List[str]]:
    """Per generation: its best candidate's structure and hyperparameters (the tuning story)."""
    rows = [["generation", "best", "best so far", "structure", "optimizer", "learning rate",
             "batch", "epochs", "dropout", "weight decay"]]
    for h in history:
        c = h["best_config"]
        rows.append([str(h["generation"]), _fmt(h["best"]), _fmt(h.get("best_so_far")),
                     structure(c), str(c.get("optimizer", "")),
                     f"{c.get('learning_rate', float('nan')):.2e}", str(c.get("batch_size", "")),
                     str(c.get("epochs", "")), f"{c.get('dropout', 0.0):.2f}",
                     f"{c.get('weight_decay', 0.0):.1e}"])
    return rows


def _table(rows: List[List[str]]) -> str:
    head, *body = rows
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("–" if v is None else str(v))


def _captions(run_dir: str, result: Dict[str, Any]) -> str:
    """The report's section of a caption model's example test videos (empty for other runs)."""
    examples = result.get("captions") or []
    if not examples:
        return ""
    rows = [["test video", "true caption", "predicted caption", "exact match"]]
    rows += [[str(e["index"]), e["true"], e["predicted"], "yes" if e["exact_match"] else "no"]
             for e in examples]
    image = "![captions.png](captions.png)\n\n" \
        if os.path.exists(os.path.join(run_dir, "captions.png")) else ""
    return (f"## Example captions\n\nThe best model's captions of the first test videos "
            f"(frames left to right).\n\n{image}{_table(rows)}\n\n")


def write_report(run_dir: str, latex: bool = False) -> List[str]:
    """Writes ``report.md`` (and ``report.tex``): setup, per-generation table, best config,
    its validation and test metrics, example captions of a caption model, and the plots."""
    result, _ = _read(run_dir)
    plots = make_plots(run_dir)
    label = result.get("fitness", "fitness")  # older run directories do not name it
    hist = [["generation", f"best {label}", "mean", "std", "budget used"]]
    hist += [[str(h["generation"]), _fmt(h["best"]), _fmt(h["mean"]), _fmt(h["std"]),
              _fmt(h["budget_used"])] for h in result["history"]]
    best = result["best"]
    metrics = [["metric", "validation", "test"]]
    metrics += [[k, _fmt(best["val"].get(k)), _fmt(best["test"].get(k))] for k in best["test"]]
    config = [["option", "value"]] + [[k, json.dumps(v)] for k, v in best["config"].items()]
    tuning = ""
    if result["history"] and "best_config" in result["history"][0]:
        tuning = ("## Best candidate of each generation\n\nThe tuning story: how the best "
                  f"structure and hyperparameters changed.\n\n"
                  f"{_table(_candidates(result['history']))}\n\n")
    md = (f"# Run report: {result['dataset']}\n\nCommand: `{result['command']}`  \n"
          f"Seed: {result['seed']}; budget used: {result['budget_used']} "
          f"{result.get('budget_unit', 'network-epochs')}.\n\n"
          f"## Per generation (validation fitness)\n\n{_table(hist)}\n\n{tuning}"
          f"## Best configuration\n\n{_table(config)}\n\n"
          f"## Best model's metrics\n\nSelection used the validation split only; test was "
          f"evaluated once, at the end.\n\n{_table(metrics)}\n\n{_captions(run_dir, result)}"
          + "".join(f"![{p}]({p})\n\n" for p in plots))
    write_bytes(os.path.join(run_dir, "report.md"), md.encode())
    written = ["report.md"]
    if latex:
        strip = ["captions.png"] if "![captions.png]" in md else []
        write_bytes(os.path.join(run_dir, "report.tex"), _latex(result, hist, config, metrics,
                                                                strip + plots).encode())
        written.append("report.tex")
    return written + plots


_TEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
        "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def _latex_table(rows: List[List[str]]) -> str:
    head, *body = rows
    cols = "l" * len(head)
    lines = [rf"\begin{{tabular}}{{{cols}}}", r"\hline", " & ".join(map(_tex, head)) + r" \\",
             r"\hline"]
    lines += [" & ".join(map(_tex, r)) + r" \\" for r in body]
    return "\n".join(lines + [r"\hline", r"\end{tabular}"])


def _latex(result: Dict[str, Any], hist: List[List[str]], config: List[List[str]],
           metrics: List[List[str]], plots: List[str]) -> str:
    figs = "".join(rf"\begin{{figure}}[h]\centering\includegraphics[width=\linewidth]{{{p}}}"
                   rf"\end{{figure}}" + "\n" for p in plots)
    return (r"\documentclass{article}" "\n" r"\usepackage{graphicx}" "\n" r"\begin{document}"
            "\n" rf"\section*{{Run report: {_tex(result['dataset'])}}}" "\n"
            rf"Command: \texttt{{{_tex(result['command'])}}}. Seed {result['seed']}." "\n\n"
            r"\subsection*{Per generation}" "\n" + _latex_table(hist) + "\n\n"
            r"\subsection*{Best configuration}" "\n" + _latex_table(config) + "\n\n"
            r"\subsection*{Metrics (selection on validation; test once at the end)}" "\n"
            + _latex_table(metrics) + "\n\n" + figs + r"\end{document}" "\n")
