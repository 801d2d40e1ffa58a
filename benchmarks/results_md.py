"""Writes the generated blocks of benchmarks/RESULTS.md from the JSON in benchmarks/results/.

RESULTS.md is hand-written prose around blocks that this script owns: every table, and the
sentences that quote figures, sit between ``<!-- results_md: NAME -->`` and
``<!-- /results_md: NAME -->``. Each block is a function of the loaded JSON files (keyed by
file name without ``.json``), so the document cannot drift from the measurements.

    python benchmarks/results_md.py            # rewrite the blocks of RESULTS.md in place
    python benchmarks/results_md.py --check    # exit 1 with a diff when RESULTS.md differs

Standard library only. A figure compared against a target is never rounded across it:
0.898 against a target of 0.90 is printed as 0.898 and reported as not met.
"""
# pylint: disable=too-many-lines  # one renderer per generated block of RESULTS.md
from __future__ import annotations

import argparse
import difflib
import functools
import json
import math
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
MINUS = "\u2212"
MARKER = re.compile(r"<!-- results_md: ([a-z0-9_]+) -->\n(.*?)<!-- /results_md: \1 -->",
                    re.DOTALL)
Results = Mapping[str, Any]
BLOCKS: Dict[str, Callable[[Results], str]] = {}


def block(name: str) -> Callable[[Callable[[Results], str]], Callable[[Results], str]]:
    """Registers a block renderer under ``name``.

    Args:
      name: the block's name in RESULTS.md's markers.

    Returns:
      A decorator that registers the function and returns it unchanged.
    """
    def register(fn: Callable[[Results], str]) -> Callable[[Results], str]:
        BLOCKS[name] = fn
        return fn
    return register


# --- numbers -------------------------------------------------------------------------------


def num(x: float, digits: int = 2, sign: bool = False) -> str:
    """A number with a fixed count of decimals and a typographic minus.

    Args:
      x: the number.
      digits: decimals.
      sign: whether positive numbers get a ``+``.

    Returns:
      The text.
    """
    return (f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}").replace("-", MINUS)


def vs(x: float, target: float, digits: int = 2, at_most: bool = False) -> str:
    """``x`` with at least ``digits`` decimals, and more where rounding would carry it across
    ``target`` (0.8978 against 0.9 gives ``0.898``, never ``0.90``).

    Args:
      x: the measured value.
      target: the threshold it is compared with (met when ``x >= target``, or when
        ``x <= target`` with ``at_most``).
      digits: the fewest decimals.
      at_most: the target is an upper bound.

    Returns:
      The text.
    """
    for d in range(digits, 7):
        shown = float(f"{x:.{d}f}")
        if (shown <= target if at_most else shown >= target) == (
                x <= target if at_most else x >= target):
            return num(x, d)
    return num(x, 7)


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean.

    Args:
      xs: the values (at least one).

    Returns:
      Their mean.
    """
    return sum(xs) / len(xs)


def std(xs: Sequence[float]) -> float:
    """Population standard deviation (numpy's default, ``ddof=0``), as the scripts print.

    Args:
      xs: the values (at least one).

    Returns:
      Their standard deviation.
    """
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def pm(xs: Sequence[float], digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """``mean ± std`` of ``xs`` times ``scale``.

    Args:
      xs: the values.
      digits: decimals.
      scale: factor applied first (100 for percentages of fractions).
      unit: text after the spread (e.g. ``" %"``).

    Returns:
      The text.
    """
    return f"{num(scale * mean(xs), digits)} ± {num(scale * std(xs), digits)}{unit}"


def pair_ms(pair: Sequence[float], digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """A stored ``[mean, std]`` pair as ``mean ± std``.

    Args:
      pair: ``[mean, std]``.
      digits: decimals.
      scale: factor applied first.
      unit: text after the spread.

    Returns:
      The text.
    """
    return f"{num(scale * pair[0], digits)} ± {num(scale * pair[1], digits)}{unit}"


def ci(p: Mapping[str, float], scale: float = 100.0, digits: int = 2) -> str:
    """A paired statistic (benchmarks/paired.py) as ``mean [lo, hi]``.

    Args:
      p: the statistic's dict (``mean``, ``lo``, ``hi``).
      scale: factor applied first (100: accuracy points).
      digits: decimals.

    Returns:
      The text.
    """
    return (f"{num(scale * p['mean'], digits, True)} [{num(scale * p['lo'], digits, True)}, "
            f"{num(scale * p['hi'], digits, True)}]")


def ci_cell(p: Mapping[str, float]) -> str:
    """A paired statistic with its wins/losses and Wilcoxon p, for one table cell.

    Args:
      p: the statistic's dict.

    Returns:
      ``mean [lo, hi], wins/losses, p = ...``.
    """
    return f"{ci(p)}, {p['wins']}/{p['losses']}, p = {p['wilcoxon_p']:.3f}"


def span(values: Sequence[float], digits: int = 2, unit: str = "") -> str:
    """``lo–hi`` of some values (one value when they round alike).

    Args:
      values: the values.
      digits: decimals.
      unit: text after the range.

    Returns:
      The text.
    """
    lo, hi = num(min(values), digits), num(max(values), digits)
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


@functools.lru_cache(maxsize=None)
def t95(n: int) -> float:
    """Two-sided 95 % quantile of Student's t with ``n - 1`` degrees of freedom (scipy's
    ``t.ppf(0.975, n - 1)``), from the closed form of its CDF for whole degrees of freedom
    (Abramowitz & Stegun 26.7.3-4), by bisection.

    Args:
      n: sample size (at least 2).

    Returns:
      The quantile.
    """
    df = n - 1

    def inside(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        c2 = math.cos(theta) ** 2
        if df % 2:
            term = total = math.cos(theta)
            for k in range(1, (df - 3) // 2 + 1):
                term *= 2 * k / (2 * k + 1) * c2
                total += term
            return 2 / math.pi * (theta + (math.sin(theta) * total if df > 1 else 0.0))
        term = total = 1.0
        for k in range(1, (df - 2) // 2 + 1):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        return math.sin(theta) * total

    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if inside(mid) < 0.95 else (lo, mid)
    return (lo + hi) / 2


WIDTH = 100
# a word that would change the Markdown if it began a continuation line
LINE_START = re.compile(r"^([-+*>#|]|\d+[.)]|=+)$")  # e.g. "-", "25." or "=="


def wrap(text: str, width: int = WIDTH) -> str:
    """Prose lines of a block wrapped at ``width`` columns (tables and short lines as they
    are); a bullet's continuation lines are indented by two spaces, and no continuation line
    starts with a word that Markdown would read as a list, quote, heading or table.

    Args:
      text: the block's text.
      width: the longest line.

    Returns:
      The wrapped text.
    """
    out = []
    for line in text.split("\n"):
        if len(line) <= width or line.startswith("|"):
            out.append(line)
            continue
        indent = "  " if line.startswith("- ") else ""
        words, current = line.split(" "), ""
        for word in words:
            if current and len(current) + 1 + len(word) > width:
                head, _, last = current.rpartition(" ")
                if LINE_START.match(word) and head.strip():  # carry the word before it along
                    out.append(head)
                    current = f"{indent}{last} {word}"
                else:
                    out.append(current)
                    current = indent + word
            else:
                current = f"{current} {word}" if current else word
        out.append(current)
    return "\n".join(out)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table.

    Args:
      header: column titles.
      rows: cells, row by row.

    Returns:
      The table's lines.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def bold_if(text: str, condition: bool) -> str:
    """``**text**`` when ``condition``.

    Args:
      text: the cell.
      condition: whether to mark it.

    Returns:
      The cell.
    """
    return f"**{text}**" if condition else text


def met(ok: bool) -> str:
    """The verdict on a target.

    Args:
      ok: whether it is met.

    Returns:
      ``**met**`` or ``**not met**``.
    """
    return "**met**" if ok else "**not met**"


def listing(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``.

    Args:
      items: the parts.

    Returns:
      The text.
    """
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --- runs that end -------------------------------------------------------------------------


@block("xla_qr")
def _xla_qr(res: Results) -> str:
    by: Dict[str, Dict[int, List[str]]] = {}
    for r in res["xla_qr_deadlock"]:
        by.setdefault(r["jax"], {})[r["batch"]] = list(r["results"])
    rows = [[version] + [bold_if(" ".join(cells.get(b, [])), "hang" in cells.get(b, []))
                         for b in (1, 2)] for version, cells in by.items()]
    return table(["jax / jaxlib", "batch 1 (s per run)", "batch 2 (s per run)"], rows)


@block("soak")
def _soak(res: Results) -> str:
    soak = res["soak"]
    rows, total, hangs, errors = [], 0, 0, 0
    for kind, label in (("search", "`search --method random`"),
                        ("evolve-weights", "`evolve-weights`")):
        for host, devices in ((True, "one per core"), (False, "one")):
            mine = [r for r in soak["runs"]
                    if r["kind"].split()[0] == kind and r["host_devices"] == host]
            seconds = [r["seconds"] for r in mine]
            n_hang = sum(1 for r in mine if r["hang"])
            n_err = sum(1 for r in mine if r["status"] not in (0, 3, "timeout"))
            total, hangs, errors = total + len(mine), hangs + n_hang, errors + n_err
            rows.append([label, devices, str(len(mine)), str(n_hang), str(n_err),
                         num(statistics.median(seconds), 1), num(max(seconds), 1)])
    return (table(["runs", "host devices", "count", "hangs", "errors", "median s per run",
                   "slowest s"], rows)
            + f"\n\n**{total} runs, {hangs} hangs, {errors} errors** "
            f"(`benchmarks/results/soak.json`, jax {soak['jax']}).")


# --- throughput ----------------------------------------------------------------------------

# (column, variant, target ratio, smallest P the target is set for)
THROUGHPUT_TARGETS = (("a/b", "sequential_jax", 1.5, 32), ("a/c", "sequential_torch", 4.0, 0),
                      ("a/e", "batched_torch", 1.3, 0), ("a/d", "limit", 0.9, 32))


def _throughput(res: Results) -> Tuple[Dict[Tuple[int, str], Mapping[str, Any]], List[int]]:
    rows = {(r["P"], r["variant"]): r for r in res["throughput"]["rows"]}
    return rows, sorted({p for p, _ in rows})


@block("throughput")
def _throughput_table(res: Results) -> str:
    rows, sizes = _throughput(res)
    ratios = res["throughput"]["ratios"]
    variants = ("population", "population_1device", "sequential_jax", "sequential_torch",
                "batched_torch", "limit")
    out = []
    for p in sizes:
        cells = [str(p)] + [num(rows[p, v]["member_epochs_per_s"], 0) for v in variants]
        for _, variant, target, smallest in THROUGHPUT_TARGETS:
            r = ratios[str(p)][variant][0]
            cells.append(bold_if(vs(r, target), p >= smallest and r < target))
        out.append(cells)
    return table(["P", *variants, *(t[0] for t in THROUGHPUT_TARGETS)], out)


@block("throughput_rounds")
def _throughput_rounds(res: Results) -> str:
    rows, sizes = _throughput(res)
    ratios = res["throughput"]["ratios"]
    ranges = {col: ", ".join(f"{num(ratios[str(p)][v][1])}–{num(ratios[str(p)][v][2])}"
                             for p in sizes)
              for col, v, _, _ in THROUGHPUT_TARGETS if col in ("a/e", "a/d")}
    top = sizes[-1]
    return (f"Per-round ranges (min–max of the per-round ratios) at P = "
            f"{listing(list(map(str, sizes)))}: a/e {ranges['a/e']}; "
            f"a/d {ranges['a/d']}. Population training ran at "
            f"{num(rows[top, 'population']['gflops'], 0)} GFLOP/s at P = {top}.")


@block("throughput_targets")
def _throughput_targets(res: Results) -> str:
    rows, sizes = _throughput(res)
    ratios = res["throughput"]["ratios"]
    names = {"sequential_jax": "b", "sequential_torch": "c", "batched_torch": "the hand-batched "
             "PyTorch population (e)", "limit": "d"}
    lines = []
    for _, variant, target, smallest in THROUGHPUT_TARGETS:
        mine = [p for p in sizes if p >= smallest]
        values = {p: ratios[str(p)][variant][0] for p in mine}
        missed = [p for p in mine if values[p] < target]
        where = f" for P ≥ {smallest}" if smallest else ""
        cells = listing([f"{vs(values[p], target)}× at P = {p}" for p in mine])
        verdict = "met" if not missed else (
            "not met" if len(missed) == len(mine) else
            f"met at P = {listing([str(p) for p in mine if p not in missed])}, not at "
            f"P = {listing([str(p) for p in missed])}")
        lines.append(f"- a ≥ {target:g}× {names[variant]}{where}: **{verdict}** ({cells}).")
    big = [rows[p, "batched_torch"]["gflops"] for p in sizes if p >= 32]
    lines.append(f"- PyTorch's batched population runs at {span(big, 0)} GFLOP/s at P ≥ 32.")
    return "\n".join(lines)


@block("throughput_devices")
def _throughput_devices(res: Results) -> str:
    rows, sizes = _throughput(res)
    ratios = res["throughput"]["ratios"]
    buys = listing([f"{num(ratios[str(p)]['population_1device'][0])}×" for p in sizes])
    torch = [rows[p, "sequential_torch"]["gflops"] for p in sizes]
    return (f"- On one XLA CPU device a vmapped step runs the batched small matmuls on one core. "
            f"One host device per core (`gdl.use_host_devices()`, which the CLI and the "
            f"benchmarks call) buys {buys} at P = {listing(list(map(str, sizes)))} (median of "
            f"the per-round ratios population / population_1device).\n"
            f"- The one-by-one PyTorch loop is bound by per-step Python and dispatch overhead "
            f"({span(torch, 0)} GFLOP/s).")


# --- GDNN vs DNN ---------------------------------------------------------------------------

GDNN_LABELS = {
    "gdnn_aligned": "gdnn_aligned (greedy, pairwise, 2 sweeps)",
    "gdnn_aligned_exact": "gdnn_aligned_exact (to the best)",
    "gdnn_aligned_best1": "gdnn_aligned_best1 (greedy, to the best, every generation)",
    "gdnn_aligned_best5": "gdnn_aligned_best5 (greedy, to the best, every 5th generation: here "
                          "generation 0 only)",
    "gdnn_aligned_best_once": "gdnn_aligned_best_once (greedy, to the best, in generation 0 "
                              "only)"}
CROSS_LABELS = (("uniform", "uniform"), ("per_neuron", "per_neuron"),
                ("aligned", "aligned (greedy, pairwise, 2 sweeps: the default)"),
                ("aligned_exact", "aligned, exact, parents matched to the best member"),
                ("aligned_best", "aligned, greedy (2 sweeps), parents matched to the best member "
                                 "(`match_to=\"best\"`)"))
PAIRED_NOTES = {"gdnn_uniform - gdnn_no_crossover": " (crossover alone)",
                "gdnn_inherit - gdnn_uniform": " (keep Adam state)"}
GA_ARMS = ("gdnn_uniform", "gdnn_neuron", "gdnn_aligned", "gdnn_aligned_exact",
           "gdnn_aligned_best1", "gdnn_aligned_best5", "gdnn_aligned_best_once")


@block("gdnn_paired_arms")
def _gdnn_paired_arms(res: Results) -> str:
    run = res["gdnn_vs_dnn_paired"]
    tab = run["table"]
    arms = ("dnn", "best_of_p", "pbt", "gdnn_uniform", "gdnn_no_crossover", "gdnn_inherit",
            "gdnn_neuron", "gdnn_aligned")
    labels = {"dnn": f"dnn (1/{run['args']['population']} of the compute)",
              "best_of_p": "best_of_p (control)"}
    rows = [[labels.get(a, a)]
            + [pair_ms(tab[d][a]["test_accuracy"], scale=100, unit=" %") for d in tab]
            + [num(tab[d][a]["val_loss"][0], 4) for d in tab] for a in arms]
    return table(["arm"] + [f"{d} test acc" for d in tab]
                 + [f"{d} val loss (selection)" for d in tab], rows)


@block("gdnn_paired_diffs")
def _gdnn_paired_diffs(res: Results) -> str:
    paired = res["gdnn_vs_dnn_paired"]["paired"]
    datasets = list(paired)
    rows = []
    for key in paired[datasets[0]]:
        label = key.replace(" - ", " − ")
        if key in PAIRED_NOTES:
            label = f"**{label}**" if "crossover alone" in PAIRED_NOTES[key] else label
            label += PAIRED_NOTES[key]
        rows.append([label] + [ci_cell(paired[d][key]["accuracy"]) for d in datasets])
    return table(["comparison"] + datasets, rows)


@block("gdnn_paired_says")
def _gdnn_paired_says(res: Results) -> str:
    run = res["gdnn_vs_dnn_paired"]
    ratio = {(d, c): mean([s[c]["ratio"] for s in seeds])
             for d, seeds in run["offspring"].items() for c in ("uniform", "aligned")}
    datasets = list(run["offspring"])
    both = [k for k in run["paired"][datasets[0]]
            if all(run["paired"][d][k]["accuracy"]["wilcoxon_p"] < 0.05 for d in datasets)]
    return (f"- Aligned crossover's children start closer to their parents than uniform "
            f"crossover's (child / parents' validation loss right after crossover, mean over "
            f"the {run['args']['seeds']} seeds: "
            + "; ".join(f"{num(ratio[d, 'aligned'])} against {num(ratio[d, 'uniform'])} on {d}"
                        for d in datasets)
            + "), but the trained results do not differ from uniform crossover's (row "
            "*gdnn_aligned − gdnn_uniform*).\n"
            + ("- None of these comparisons reaches p < 0.05 on both datasets. None is a claim "
               "for the README." if not both else
               f"- p < 0.05 on both datasets: {listing(both)}."))


@block("gdnn_five_seeds")
def _gdnn_five_seeds(res: Results) -> str:
    tab = res["gdnn_vs_dnn"]["table"]
    rows = []
    for d, arms in tab.items():
        for a, r in arms.items():
            origin = ", ".join(f"{k} {v}" for k, v in r["best_origin"].items())
            rows.append([d, GDNN_LABELS.get(a, a), str(r["compute"]), pair_ms(r["val_loss"], 4),
                         pair_ms(r["val_accuracy"], scale=100, unit=" %"),
                         pair_ms(r["test_loss"], 4),
                         pair_ms(r["test_accuracy"], scale=100, unit=" %"), origin])
    return table(["dataset", "arm", "compute (net-epochs)", "val loss", "val acc", "test loss",
                  "test acc", "best member came from"], rows)


def _offspring(run: Mapping[str, Any]) -> Dict[Tuple[str, str], List[float]]:
    return {(d, c): [s[c]["ratio"] for s in seeds]
            for d, seeds in run["offspring"].items() for c, _ in CROSS_LABELS}


@block("gdnn_offspring")
def _gdnn_offspring(res: Results) -> str:
    run = res["gdnn_vs_dnn"]
    rows = []
    for d, seeds in run["offspring"].items():
        best = min(mean([s[c]["ratio"] for s in seeds]) for c, _ in CROSS_LABELS)
        for c, label in CROSS_LABELS:
            ratios = [s[c]["ratio"] for s in seeds]
            rows.append([d, label, num(mean([s[c]["child_loss"] for s in seeds]), 3),
                         num(mean([s[c]["parents_mean_loss"] for s in seeds]), 3),
                         bold_if(pm(ratios), mean(ratios) == best)])
    return table(["dataset", "crossover", "child val loss", "parents' mean",
                  "child / parents"], rows)


@block("gdnn_final")
def _gdnn_final(res: Results) -> str:
    final = res["gdnn_vs_dnn"]["final_crossover"]
    rows = []
    for d, arms in final.items():
        for a, seeds in arms.items():
            rows.append([d, a] + [pm([s[how]["ratio"] for s in seeds])
                                  for how in ("uniform_as_is", "aligned_pairwise")])
    worst = max(((s["uniform_as_is"]["ratio"], d, a, i) for d, arms in final.items()
                 for a, seeds in arms.items() for i, s in enumerate(seeds)))
    return (table(["dataset", "arm", "uniform, as the members stand", "aligned pairwise"], rows)
            + f"\n\nThe largest single ratio of uniform children as the members stand is "
            f"{num(worst[0])} ({worst[2]}, {worst[1]}, seed {worst[3]}): members of that run "
            f"were still in different unit orders.")


@block("gdnn_p128")
def _gdnn_p128(res: Results) -> str:
    run = res["gdnn_vs_dnn_p128"]
    rows = []
    for d, arms in run["table"].items():
        best = min(r["val_loss"][0] for a, r in arms.items() if a != "dnn")
        for a, r in arms.items():
            if a == "dnn":
                continue
            seeds = run["final_crossover"].get(d, {}).get(a)
            final = [pm([s[h]["ratio"] for s in seeds]) if seeds else ""
                     for h in ("uniform_as_is", "aligned_pairwise")]
            rows.append([d, a, bold_if(pair_ms(r["val_loss"], 4), r["val_loss"][0] == best),
                         pair_ms(r["test_accuracy"], scale=100, unit=" %")] + final)
    return table(["dataset", "arm", "val loss", "test acc",
                  "final population: uniform as they stand", "aligned pairwise"], rows)


@block("gdnn_p128_says")
def _gdnn_p128_says(res: Results) -> str:
    run, small = res["gdnn_vs_dnn_p128"], res["gdnn_vs_dnn"]
    tab, final = run["table"], run["final_crossover"]
    lines = []
    ranges = []
    for d, arms in tab.items():
        ga = [r["val_loss"][0] for a, r in arms.items() if a.startswith("gdnn")]
        ranges.append((d, ga, arms["best_of_p"]["val_loss"][0]))
    beats = [d for d, ga, bp in ranges if min(ga) < bp]
    lines.append(
        f"- **At P = {run['args']['population']} "
        + (f"a GA arm beats best-of-P on validation loss on {listing(beats)}** ("
           if beats else "no GA arm beats best-of-P** on validation loss (")
        + ", ".join(f"{d} {span(ga, 3)} vs {num(bp, 3)}" for d, ga, bp in ranges)
        + f"): with {run['args']['epochs']} epochs per generation most lineages are replaced by "
        f"children that start far behind and do not catch up within "
        f"{run['args']['generations']} generations. P = {small['args']['population']} favoured "
        f"the GA on digits; population size changes the verdict.")
    f = {a: (mean([s["uniform_as_is"]["ratio"] for s in v]),
             mean([s["aligned_pairwise"]["ratio"] for s in v])) for a, v in final["digits"].items()}
    gaps = []
    for d, arms in run["curves"].items():
        for i, (every, once) in enumerate(zip(arms["gdnn_aligned_best1"],
                                              arms["gdnn_aligned_best_once"])):
            gaps.append((abs(every[-1] - once[-1]), d, i, every[-1], once[-1]))
    gap = max(gaps)
    shared = f["gdnn_aligned_best_once"][0] <= f["gdnn_aligned_best1"][0]
    lines.append(
        f"- **Matching once {'keeps' if shared else 'does not keep'} one shared order at this "
        f"size** (digits). After "
        f"{run['args']['generations'] - 1} GA steps, members matched to the best in generation "
        f"0 only make uniform children {num(f['gdnn_aligned_best_once'][0])}× their parents' "
        f"loss, {num(f['gdnn_aligned_best_once'][1])}× after re-aligning them; re-matched every "
        f"generation, {num(f['gdnn_aligned_best1'][0])}× and "
        f"{num(f['gdnn_aligned_best1'][1])}×. The pairwise arm's members are in many orders "
        f"({num(f['gdnn_aligned'][0], 1)}× unaligned). The largest per-seed difference in "
        f"final validation loss between re-matching every generation and once (the JSON's "
        f"curves): {gap[1]} seed {gap[2]}, {num(gap[3], 3)} against {num(gap[4], 3)}; the "
        f"other runs differed by less. So `every` > 1 trades some offspring quality for "
        f"GA-step time at large P; at P = {small['args']['population']} (above) it made no "
        f"difference.")
    order = (("aligned", "pairwise"), ("aligned_best", "to the best"),
             ("aligned_exact", "exact to the best"), ("uniform", "uniform"))
    first = {(key, c): mean([s[c]["ratio"] for s in r["offspring"]["digits"]])
             for key, r in (("big", run), ("small", small)) for c, _ in order}
    lines.append(
        f"- First-generation children at P = {run['args']['population']} on digits: "
        + ", ".join(f"{label} {num(first['big', c])}×" for c, label in order)
        + f" (P = {small['args']['population']}: "
        + ", ".join(num(first["small", c]) for c, _ in order)
        + "). Matching everyone to one member pays more the more diverse the population.")
    return "\n".join(lines)


@block("gdnn_says")
def _gdnn_says(res: Results) -> str:
    tab = res["gdnn_vs_dnn"]["table"]
    off = _offspring(res["gdnn_vs_dnn"])

    def col(d: str, arms: Sequence[str], key: str, digits: int, scale: float = 1.0) -> str:
        return span([scale * tab[d][a][key][0] for a in arms], digits)

    def one(d: str, arm: str, key: str, digits: int, scale: float = 1.0) -> str:
        return num(scale * tab[d][arm][key][0], digits)

    children = {d: [mean(off[d, c]) for c, _ in CROSS_LABELS] for d in tab}
    return (
        f"- **At equal compute, weight crossover is not what helps.** On digits the GA arms "
        f"reach a validation loss of {col('digits', GA_ARMS, 'val_loss', 3)} against "
        f"best-of-P's {one('digits', 'best_of_p', 'val_loss', 3)} and PBT's "
        f"{one('digits', 'pbt', 'val_loss', 3)}; their test accuracy "
        f"({col('digits', GA_ARMS, 'test_accuracy', 2, 100)} %) against PBT's "
        f"{one('digits', 'pbt', 'test_accuracy', 2, 100)} %. On mnist1d the GA arms' test "
        f"accuracy is {col('mnist1d', GA_ARMS, 'test_accuracy', 2, 100)} % against best-of-P's "
        f"{one('mnist1d', 'best_of_p', 'test_accuracy', 2, 100)} % and PBT's "
        f"{one('mnist1d', 'pbt', 'test_accuracy', 2, 100)} %. The paired 10-seed run above "
        f"measures crossover alone and finds no effect.\n"
        f"- **Why.** Children of two different trained parents start "
        f"{span(children['digits'], 2)}× (digits) and {span(children['mnist1d'], 2)}× "
        f"(mnist1d) worse than their parents (offspring table): independently trained "
        f"networks sit in different basins. On digits alignment gives "
        f"{num(mean(off['digits', 'aligned']))}× against uniform crossover's "
        f"{num(mean(off['digits', 'uniform']))}×, per-neuron crossover "
        f"{num(mean(off['digits', 'per_neuron']))}×, as the permutation-symmetry argument "
        f"predicts; a child that starts at several times its parents' loss does not catch up "
        f"in {res['gdnn_vs_dnn']['args']['epochs']} epochs.")


# --- scaling -------------------------------------------------------------------------------

GA_STEP_LABELS = (
    ("uniform", "uniform crossover, gaussian mutation"),
    ("uniform+table", "uniform, mutation noise from the table"),
    ("per_neuron", "per-neuron"), ("per_neuron+table", "per-neuron, noise table"),
    ("aligned", "aligned, greedy pairwise, 2 sweeps (the default)"),
    ("aligned_1pass", "aligned, greedy pairwise, 1 sweep"),
    ("aligned_converged", "aligned, greedy pairwise, until converged"),
    ("aligned_best_matching",
     "aligned to the best (`match_to=\"best\"`), a generation that re-matches"),
    ("aligned_best_matching_converged", "the same, until converged"),
    ("aligned_best_inherited", "the same, a generation that crosses the inherited order"),
    ("aligned_best_every5", "mean, re-matching every 5th generation"),
    ("aligned_best_every10", "mean, re-matching every 10th generation"),
    ("aligned_best_every20", "mean, re-matching every 20th generation"),
    ("aligned_exact", "aligned, exact (to the best, on the host, until converged)"),
    ("aligned_exact_1pass", "aligned, exact, 1 sweep"),
    ("floor_matching_every_generation", "the floor of matching every generation (one "
     "similarity pass + one greedy pass, all members in one vmap)"))
GA_STEP_TARGET = 0.02


def _share(step: Mapping[str, float], key: str) -> float:
    return step[key] / (step["generation_s"] + step[key])


@block("scaling")
def _scaling(res: Results) -> str:
    run = res["scaling"]
    rows = [[str(r["P"]), str(r["devices"]), num(r["member_epochs_per_s"], 0),
             num(r["gflops"], 0), num(r["fraction_of_ceiling"]), num(r["peak_rss_mb"], 0)]
            for r in run["rows"]]
    return (f"Dense float32 matmul ceiling (2048³, jitted) in this run: "
            f"**{num(run['ceiling_gflops'], 0)} GFLOP/s**.\n\n"
            + table(["P", "devices", "member-epochs/s", "GFLOP/s", "of matmul ceiling",
                     "peak RSS (MB)"], rows))


@block("scaling_says")
def _scaling_says(res: Results) -> str:
    rows = res["scaling"]["rows"]
    two = sorted((r for r in rows if r["devices"] == 2), key=lambda r: r["P"])
    one = {r["P"]: r for r in rows if r["devices"] == 1}
    rising = all(a["member_epochs_per_s"] < b["member_epochs_per_s"] for a, b in zip(two, two[1:]))
    small = [one[p]["fraction_of_ceiling"] for p in sorted(one) if p <= 128]
    below = all(one[r["P"]]["fraction_of_ceiling"] < r["fraction_of_ceiling"] for r in two)
    slope = (two[-1]["peak_rss_mb"] - two[0]["peak_rss_mb"]) / (two[-1]["P"] - two[0]["P"])
    return (f"- On 2 devices throughput {'rises' if rising else 'does not rise steadily'} with "
            f"P, to {num(two[-1]['fraction_of_ceiling'])} of the matmul ceiling at "
            f"P = {two[-1]['P']}.\n"
            f"- **Against us:** on one device P = 8–128 reaches only {span(small)} of the "
            f"ceiling, {'below' if below else 'not always below'} the 2-device figures at "
            f"every P. One device is the opt-out (`GENETIC_DL_HOST_DEVICES=0`).\n"
            f"- Peak memory grows about {num(slope, 1)} MB per member on 2 devices (P = "
            f"{two[0]['P']} to {two[-1]['P']}) above {num(two[0]['peak_rss_mb'], 0)} MB at "
            f"P = {two[0]['P']} (JAX, XLA and the data); P = {two[-1]['P']} trains in "
            f"{num(two[-1]['peak_rss_mb'], 0)} MB.")


RECOMBINATION_CONTROLS = ("best_of_p", "best_of_p_shared", "pbt")


def _recombination_rows(res: Results, name: str, what: str) -> List[List[str]]:
    run = res["recombination"]
    arms = run["sets"][name]
    rows = []
    for arm, row in run["tables"][name][what].items():
        recs = list(arms[arm].values())
        cells = [arm, str(row["n"]), num(100 * row["mean"], 2),
                 num(mean([r["barrier"]["barrier"] for r in recs]), 3, sign=True)]
        for control in RECOMBINATION_CONTROLS:
            p = row.get(control)
            cells.append("" if p is None else ci(p))
        rows.append(cells)
    return rows


@block("recombination")
def _recombination(res: Results) -> str:
    run = res["recombination"]
    parts = []
    for name in run["tables"]:
        cfg = run["settings"][name]
        for what in run["tables"][name]:
            parts.append(f"**{name}** (P = {cfg['P']}, {cfg['generations']} generations "
                         f"× {cfg['epochs']} epochs), {what}: test accuracy %, loss barrier "
                         f"between the final two best members, paired difference in points "
                         f"(mean [95 % interval]):\n\n"
                         + table(["arm", "seeds", "test acc %", "barrier"]
                                 + [f"− {c}" for c in RECOMBINATION_CONTROLS],
                                 _recombination_rows(res, name, what)))
    return "\n\n".join(parts)


@block("recombination_says")
def _recombination_says(res: Results) -> str:
    run = res["recombination"]
    lines = []
    for name, tabs in run["tables"].items():
        for what, rows in tabs.items():
            seeds = min(r["n"] for r in rows.values())
            if seeds < 2:
                lines.append(f"- {name}, {what}: {seeds} seed, no interval yet.")
                continue
            above = [a for a, r in rows.items()
                     if all(c in r and r[c]["lo"] > 0 for c in ("best_of_p", "best_of_p_shared"))]
            below = [a for a, r in rows.items() if "best_of_p" in r and r["best_of_p"]["hi"] < 0]
            lines.append(f"- {name}, {what}, {seeds} seeds: "
                         + (f"interval above zero against both best-of-P controls: "
                            f"{listing(above)}" if above else
                            "no arm's interval is above zero against both best-of-P controls")
                         + (f"; below zero against best_of_p: {listing(below)}" if below else "")
                         + ".")
    return "\n".join(lines)


@block("ga_step")
def _ga_step(res: Results) -> str:
    step = res["scaling"]["ga_step"]
    rows = [[label, num(1000 * step[key], 1), f"{num(100 * _share(step, key), 1)} %"]
            for key, label in GA_STEP_LABELS]
    return (f"The GA step at P = 128 (MLP 128-128, digits), against a 5-epoch generation of "
            f"{num(step['generation_s'])} s (share = step / (generation + step)):\n\n"
            + table(["GA step at P = 128", "ms", "share of a generation"], rows))


@block("ga_step_says")
def _ga_step_says(res: Results) -> str:
    step = res["scaling"]["ga_step"]

    def share(key: str) -> str:
        return f"{vs(100 * _share(step, key), 100 * GA_STEP_TARGET, 1)} %"

    plain = [_share(step, k) for k in ("uniform", "uniform+table", "per_neuron",
                                       "per_neuron+table")]
    ok = {k: _share(step, k) < GA_STEP_TARGET for k in
          ("aligned", "aligned_best_every10", "aligned_best_every20",
           "floor_matching_every_generation")}
    return (f"- The plain GA step (uniform or per-neuron crossover, gaussian mutation) costs "
            f"{span([100 * s for s in plain], 1)} % of a generation: the 2 % target is "
            f"{met(max(plain) < GA_STEP_TARGET)}. Aligned crossover matching every generation "
            f"(the default): {share('aligned')}, {met(ok['aligned'])}. Matched to the best "
            f"member and re-matched every 10th generation it averages "
            f"{share('aligned_best_every10')} ({met(ok['aligned_best_every10'])}), every 20th "
            f"{share('aligned_best_every20')} ({met(ok['aligned_best_every20'])}). The floor "
            f"row (one pass of each matching part, every member in one vmap) takes "
            f"{share('floor_matching_every_generation')} "
            f"({met(ok['floor_matching_every_generation'])})"
            + (": per-generation matching cannot meet 2 % on this CPU."
               if not ok["floor_matching_every_generation"] else "."))


# --- search comparison ---------------------------------------------------------------------

SEARCH_METHODS = ("ga", "random", "grid", "de", "tpe")


def _search_runs(res: Results) -> List[Mapping[str, Any]]:
    return list(res["search_comparison_digits"]["runs"]) + list(res["search_comparison"]["runs"])


@block("search_table")
def _search_table(res: Results) -> str:
    runs = _search_runs(res)
    rows = []
    for d in sorted({r["dataset"] for r in runs}):
        by = {m: [r for r in runs if r["dataset"] == d and r["method"] == m]
              for m in SEARCH_METHODS}
        best = max(mean([r["test_accuracy"] for r in v]) for v in by.values() if v)
        for m, mine in by.items():
            if not mine:
                continue
            test = [r["test_accuracy"] for r in mine]
            rows.append([d, m, str(len(mine)), pm([r["val_accuracy"] for r in mine], 2, 100,
                                                  " %"),
                         bold_if(pm(test, 2, 100, " %"), mean(test) == best),
                         num(mean([r["evaluated"] for r in mine]), 0),
                         num(mean([r["wall_s"] for r in mine]), 0)])
    return table(["dataset", "method", "seeds", "val acc", "test acc", "evaluated", "wall s"],
                 rows)


@block("search_paired")
def _search_paired(res: Results) -> str:
    rows = []
    for name in ("search_comparison_digits", "search_comparison"):
        for d, pairs in res[name]["paired"].items():
            for key, p in pairs.items():
                rows.append([d, key.split(" - ")[0], ci(p), f"{p['wins']}/{p['losses']}",
                             f"{p['wilcoxon_p']:.3f}"])
    return table(["dataset", "method − random", "test acc, points: mean [95 % CI]",
                  "wins/losses", "Wilcoxon p"], rows)


@block("search_per_seed")
def _search_per_seed(res: Results) -> str:
    runs = res["search_comparison"]["runs"]
    by = {(r["method"], r["seed"]): r["test_accuracy"] for r in runs}
    seeds = sorted({s for _, s in by})
    return table(["seed", *SEARCH_METHODS],
                 [[str(s)] + [num(100 * by[m, s], 1) if (m, s) in by else "—"
                              for m in SEARCH_METHODS] for s in seeds])


@block("search_says")
def _search_says(res: Results) -> str:
    runs = _search_runs(res)
    families: Dict[str, Dict[str, int]] = {}
    for r in runs:
        fam = families.setdefault(r["dataset"], {})
        fam[r["best_config"]["family"]] = fam.get(r["best_config"]["family"], 0) + 1
    ga = {d: [r for r in runs if r["dataset"] == d and r["method"] == "ga"] for d in families}
    mn = {r["seed"]: r["test_accuracy"] for r in ga["mnist1d"]}
    rnd = {r["seed"]: r["test_accuracy"] for r in runs
           if r["dataset"] == "mnist1d" and r["method"] == "random"}
    high = sorted(s for s, v in mn.items() if v >= 0.96)
    return ("- Best network's family, all methods and seeds: "
            + "; ".join(f"{d} " + ", ".join(f"{k.upper()} {v}" for k, v in sorted(
                fam.items(), key=lambda kv: -kv[1])) + f" of {sum(fam.values())}"
                for d, fam in sorted(families.items()))
            + ".\n- The GA evaluated "
            + " and ".join(f"{num(mean([r['evaluated'] for r in v]), 0)} candidates per run on "
                           f"{d}" for d, v in sorted(ga.items()))
            + " (population 8): it is mostly its Latin-hypercube start plus one or two rounds "
            "of selection. That is the regime where random search is known to be hard to beat "
            "(Bergstra & Bengio, 2012).\n"
            f"- The GA reached ≥ 96 % test accuracy on mnist1d on {len(high)} seed(s) of "
            f"{len(mn)} at this budget ("
            + "; ".join(f"seed {s}: {num(100 * mn[s], 1)} %, random search "
                        f"{num(100 * rnd[s], 1)} %" for s in high)
            + f"); its mean is {num(100 * mean(list(mn.values())), 1)} %.")


OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "sgd": "SGD"}


def _network(c: Mapping[str, Any]) -> str:
    widths = "-".join(str(c[f"width_{i}"]) for i in range(c["layers"]))
    kernel = f", k {c['kernel_size']}" if "kernel_size" in c else ""
    return (f"{c['family'].upper()} {widths}{kernel}, {c['activation']}, "
            f"{OPTIMIZERS.get(c['optimizer'], c['optimizer'])}, {c['epochs']} ep")


@block("search_800")
def _search_800(res: Results) -> str:
    runs = res["search_comparison_digits_800"]["runs"]
    rows = []
    for s in sorted({r["seed"] for r in runs}):
        mine = [r for r in runs if r["seed"] == s]
        val, test = (max(r[k] for r in mine) for k in ("val_accuracy", "test_accuracy"))
        for r in mine:
            rows.append([str(s), r["method"],
                         bold_if(f"{num(100 * r['val_accuracy'])} %", r["val_accuracy"] == val),
                         bold_if(f"{num(100 * r['test_accuracy'])} %",
                                 r["test_accuracy"] == test),
                         str(r["evaluated"]), num(r["wall_s"], 0), _network(r["best_config"])])
    by = {m: [r for r in runs if r["method"] == m]
          for m in dict.fromkeys(r["method"] for r in runs)}
    best = max(mean([r["test_accuracy"] for r in v]) for v in by.values())
    summary = [[m, pm([r["val_accuracy"] for r in v], 2, 100, " %"),
                bold_if(pm([r["test_accuracy"] for r in v], 2, 100, " %"),
                        mean([r["test_accuracy"] for r in v]) == best),
                num(mean([r["evaluated"] for r in v]), 0), num(mean([r["wall_s"] for r in v]), 0)]
               for m, v in by.items()]
    return (table(["seed", "method", "val acc", "test acc", "evaluated", "wall s",
                   "best network"], rows) + "\n\n"
            + table(["method", "val acc (mean ± std)", "test acc", "evaluated", "wall s"],
                    summary))


# --- the outer GA's settings ---------------------------------------------------------------

GA_STUDY_ARMS = (("population", "population 4", "4"), ("population", "baseline", "8 (baseline)"),
                 ("population", "population 16", "16"),
                 ("mutation rate", "mutation 0.01", "0.01"),
                 ("mutation rate", "mutation 0.20", "0.20"),
                 ("crossover", "one-point", "one-point"), ("crossover", "two-point", "two-point"),
                 ("selection", "tournament k=2", "tournament k = 2"),
                 ("selection", "tournament k=5", "tournament k = 5"),
                 ("selection", "boltzmann", "Boltzmann (β 10, ×1.5 per generation)"),
                 ("refinement", "refine after 1", "after generation 1 (top 3)"),
                 ("refinement", "pop 4, refine after 1", "population 4, after generation 1 "
                                                         "(top 2)"))


@block("ga_study")
def _ga_study(res: Results) -> str:
    runs = res["ga_parameter_study"]["runs"]
    by = {arm: [r for r in runs if r["arm"] == arm] for _, arm, _ in GA_STUDY_ARMS}
    best = {k: max(mean([r[k] for r in v]) for v in by.values())
            for k in ("val_accuracy", "test_accuracy")}
    rows = [[factor, label] + [bold_if(pm([r[k] for r in by[arm]], 2, 100, " %"),
                                       mean([r[k] for r in by[arm]]) == best[k])
                               for k in ("val_accuracy", "test_accuracy")]
            + [num(mean([r["generations"] for r in by[arm]]), 1)]
            for factor, arm, label in GA_STUDY_ARMS]
    wall = [r["wall_s"] for r in runs]
    return (table(["factor", "setting", "val acc", "test acc", "rounds"], rows)
            + f"\n\nWall time per search: {span(wall, 0)} s.")


@block("ga_renewal")
def _ga_renewal(res: Results) -> str:
    rows: Dict[Tuple[str, int, int, float], Dict[str, Mapping[str, Any]]] = {}
    for r in res["ga_renewal"]["rows"]:
        rows.setdefault((r["problem"], r["budget"], r["population"], r["mutation_decay"]),
                        {})[r["renew"]] = r
    out = []
    for (problem, budget, population, decay), cells in rows.items():
        digits = 4 if problem == "sphere" else 2
        best = max(mean(c["best"]) for c in cells.values())
        texts = []
        for renew in ("stalled", "always", "never"):
            c = cells[renew]
            text = bold_if(pm(c["best"], digits), mean(c["best"]) == best)
            spent = mean(c["spent"])
            texts.append(text + (f", **{num(spent, 0)} spent**" if spent < budget else ""))
        out.append([problem, str(budget), str(population), num(decay, 1) if decay else "0"]
                   + texts)
    return table(["problem", "budget", "population", "mutation decay",
                  "renew = stalled (default)", "always", "never"], out)


# --- long budget ---------------------------------------------------------------------------

LONG_METHODS = ("sh_pbt", "ga_lamarckian", "ga", "random", "tpe_tuned", "tpe", "pbt")
LONG_OTHER = (("pbt - random", "`pbt − random`"), ("pbt - tpe_tuned", "`pbt − tpe_tuned`"),
              ("ga_lamarckian - ga", "`ga_lamarckian − ga` (inheritance alone)"),
              ("tpe_tuned - tpe", "`tpe_tuned − tpe`"), ("tpe_tuned - random",
                                                         "`tpe_tuned − random`"))


@block("long_runs")
def _long_runs(res: Results) -> str:
    runs = res["long_budget"]["runs"]
    return (f"The {len(runs)} runs take {num(sum(r['wall_s'] for r in runs) / 60, 0)} minutes "
            f"of wall time.")


@block("long_table")
def _long_table(res: Results) -> str:
    runs = res["long_budget"]["runs"]
    rows = []
    for d in sorted({r["dataset"] for r in runs}):
        for m in LONG_METHODS:
            mine = [r for r in runs if r["dataset"] == d and r["method"] == m]
            rows.append([d, m, str(len(mine)),
                         pm([r["test_accuracy"] for r in mine], 2, 100, " %"),
                         f"{num(100 * mean([r['val_accuracy'] for r in mine]))} %",
                         num(mean([r["wall_s"] for r in mine]), 0),
                         num(mean([r["compile_s"] for r in mine]), 0)])
    return table(["dataset", "method", "seeds", "test acc", "val acc (selection)", "wall s",
                  "compile s"], rows)


@block("long_paired")
def _long_paired(res: Results) -> str:
    paired = res["long_budget"]["paired"]
    rows = []
    for d in sorted(paired):
        for m in LONG_METHODS[1:]:
            p = paired[d][f"sh_pbt - {m}"]
            rows.append([d, m, str(p["n"]), ci(p), f"{p['wins']}/{p['losses']}",
                         f"{p['wilcoxon_p']:.3f}", "yes" if p["lo"] > 0 else "no"])
    return table(["dataset", "sh_pbt − method", "seeds", "test acc, points: mean [95 % CI]",
                  "wins/losses", "Wilcoxon p", "margin > interval"], rows)


@block("long_other")
def _long_other(res: Results) -> str:
    paired = res["long_budget"]["paired"]
    datasets = ("mnist1d", "digits")
    return table(["comparison", *datasets],
                 [[label] + [ci_cell(paired[d][key]) for d in datasets]
                  for key, label in LONG_OTHER])


@block("long_says")
def _long_says(res: Results) -> str:
    paired = res["long_budget"]["paired"]
    runs = res["long_budget"]["runs"]
    goal = ("random", "tpe_tuned", "pbt")
    clear = {d: [m for m in LONG_METHODS[1:] if paired[d][f"sh_pbt - {m}"]["lo"] > 0]
             for d in paired}
    ok = all(m in clear[d] for d in paired for m in goal)
    sh = {d: {m: paired[d][f"sh_pbt - {m}"] for m in LONG_METHODS[1:]} for d in paired}
    keep = [paired["mnist1d"]["sh_pbt - random"], paired["mnist1d"]["pbt - random"]]
    shapes: Dict[str, int] = {}
    for r in runs:
        if r["method"] == "sh_pbt":
            shape = "-".join(str(w) for w in r["best_config"]["widths"])
            shapes[shape] = shapes.get(shape, 0) + 1
    digits = [100 * mean([r["test_accuracy"] for r in runs
                          if r["dataset"] == "digits" and r["method"] == m])
              for m in LONG_METHODS]
    lam = paired["mnist1d"]["ga_lamarckian - ga"]
    return (
        f"- **The goal — a margin larger than the paired 95 % interval on both datasets, "
        f"against random search, tuned TPE and PBT — is {'met' if ok else 'not met'}.** "
        + " ".join(f"On {d} `sh_pbt` clears the interval against "
                   + (listing([f"{m} ({num(100 * sh[d][m]['mean'], 2, True)}, "
                               f"{sh[d][m]['wins']}/{sh[d][m]['losses']})" for m in clear[d]])
                      if clear[d] else "no arm") + "." for d in sorted(paired))
        + f" Against tuned TPE on mnist1d: {ci(sh['mnist1d']['tpe_tuned'])}; against plain PBT "
        f"on mnist1d: {ci(sh['mnist1d']['pbt'])}.\n"
        f"- **What wins on mnist1d is training that keeps its weights**: both PBT arms are "
        f"{span([100 * p['mean'] for p in keep])} points above random search (wins/losses "
        + " and ".join(f"{p['wins']}/{p['losses']}" for p in keep)
        + "). The successive-halving start over widths and "
        f"hyperparameters adds nothing measurable over plain PBT on the space's largest MLP "
        f"(128-128): the {sum(shapes.values())} best `sh_pbt` networks are "
        + ", ".join(f"{shape} ×{count}" for shape, count in sorted(
            shapes.items(), key=lambda sc: (-sc[1], sc[0])))
        + ".\n"
        f"- **Lamarckian inheritance helps the outer GA on mnist1d** ({ci(lam)} over the same "
        f"GA without it, {lam['wins']}/{lam['losses']}). The GA with inheritance is still "
        f"behind `sh_pbt` on mnist1d by the mean (`sh_pbt − ga_lamarckian`: "
        f"{ci(sh['mnist1d']['ga_lamarckian'])}).\n"
        f"- **Tuned TPE against default TPE**: "
        + ", ".join(f"{num(100 * paired[d]['tpe_tuned - tpe']['mean'], 2, True)} points on {d}"
                    for d in ("mnist1d", "digits"))
        + " by the mean; "
        + ("neither interval excludes zero" if all(
            paired[d]["tpe_tuned - tpe"]["lo"] <= 0 <= paired[d]["tpe_tuned - tpe"]["hi"]
            for d in paired) else "an interval excludes zero")
        + ". Tuned TPE against random search: "
        + ", ".join(f"{ci(paired[d]['tpe_tuned - random'])} on {d}" for d in ("mnist1d", "digits"))
        + ".\n"
        f"- **digits is saturated here**: every arm's mean test accuracy is within "
        f"{span(digits)} %, and {'no' if not clear['digits'] else 'some'} `sh_pbt` difference "
        f"on digits has an interval clear of zero. Validation accuracy is measured on 269 "
        f"images (one image is 0.37 points). A dataset that separates the arms is needed to say "
        f"more than \"tie\" there.")


@block("use_pbt")
def _use_pbt(res: Results) -> str:
    paired = res["long_budget"]["paired"]
    runs = res["long_budget"]["runs"]
    random = [paired["mnist1d"][k] for k in ("sh_pbt - random", "pbt - random")]
    tuned = [paired["mnist1d"][k] for k in ("sh_pbt - tpe_tuned", "pbt - tpe_tuned")]
    digits = [100 * mean([r["test_accuracy"] for r in runs
                          if r["dataset"] == "digits" and r["method"] == m])
              for m in LONG_METHODS]
    ties = all(paired["digits"][k]["lo"] <= 0 <= paired["digits"][k]["hi"]
               for k in ("sh_pbt - random", "pbt - random", "sh_pbt - tpe_tuned",
                         "pbt - tpe_tuned"))
    zero = all(p["lo"] <= 0 for p in tuned)
    return (f"- **A fixed model family and a training budget of thousands of network-epochs: "
            f"PBT-style training** (`gdl.pbt_search`, or `evolve_weights` with `rule=\"pbt\"` on "
            f"your own model). At 2,000 network-epochs on mnist1d MLPs both beat random search by "
            f"{span([100 * p['mean'] for p in random])} test points (wins/losses "
            + " and ".join(f"{p['wins']}/{p['losses']}" for p in random)
            + f"), and lead tuned TPE by {span([100 * p['mean'] for p in tuned])} points with "
            f"intervals that {'reach zero' if zero else 'exclude zero'} (long-budget paired "
            f"tables). On digits, where every arm's mean test accuracy is within "
            f"{span(digits)} %, they {'tie with' if ties else 'separate from'} random search and "
            f"tuned TPE.")


# --- black box -----------------------------------------------------------------------------

BLACKBOX_ARMS = (("ga_run_search", "GA (run_search)"), ("ga_optuna", "GA (sampler)"),
                 ("ga_optuna_p8", "sampler, P = 8"), ("ga_screen", "GA, screen 3"),
                 ("tpe", "TPE"), ("cmaes", "CMA-ES"), ("nsga2", "NSGA-II"),
                 ("random", "random"))
BLACKBOX_PAIRS = (("ga_optuna", "ga_run_search", "sampler − run_search"),
                  ("ga_optuna", "tpe", "sampler − TPE"),
                  ("ga_run_search", "tpe", "run_search − TPE"),
                  ("ga_screen", "tpe", "screen 3 − TPE"),
                  ("ga_optuna_p8", "tpe", "sampler P = 8 − TPE"),
                  ("ga_screen", "ga_run_search", "screen 3 − run_search"),
                  ("ga_optuna", "cmaes", "sampler − CMA-ES"),
                  ("ga_optuna", "nsga2", "sampler − NSGA-II"),
                  ("ga_optuna", "random", "sampler − random"))


def blackbox_pairs(res: Results, pairs: Sequence[Tuple[str, str]]
                   ) -> Dict[Tuple[str, str, int], Tuple[float, float]]:
    """Paired differences of the per-seed regret (mean over functions), computed from the
    JSON's runs as ``blackbox.py``'s ``summarise`` computes its ``paired``: the mean
    difference over seeds and its 95 % t-interval's half-width.

    Args:
      res: the loaded results.
      pairs: ``(arm, other)`` pairs, differences ``arm - other``.

    Returns:
      ``(arm, other, trials) -> (mean, half-width)``.
    """
    run = res["blackbox"]
    wanted = {a for a, _ in pairs} | {b for _, b in pairs}
    curves: Dict[Tuple[str, Any], List[Any]] = {}
    for r in run["runs"]:
        if r["arm"] in wanted:
            curves.setdefault((r["arm"], r["seed"]), []).append(r["regret"])
    out = {}
    for n in run["read_at"]:
        per_seed = {arm: [mean([c[min(n, len(c)) - 1] for c in curves[arm, s]])
                          for s in run["seeds"]] for arm in wanted}
        for a, b in pairs:
            d = [x - y for x, y in zip(per_seed[a], per_seed[b])]
            sd = math.sqrt(sum((x - mean(d)) ** 2 for x in d) / (len(d) - 1))
            out[a, b, n] = (mean(d), t95(len(d)) * sd / math.sqrt(len(d)))
    return out


def _blackbox_diffs(res: Results) -> Dict[Tuple[str, str, int], Tuple[float, float]]:
    """BLACKBOX_PAIRS: the JSON's ``paired`` where ``blackbox.py`` stored the pair, the rest
    computed from its runs (:func:`blackbox_pairs`)."""
    run = res["blackbox"]
    stored = run["paired"]
    out, missing = {}, []
    for a, b, _ in BLACKBOX_PAIRS:
        for n in run["read_at"]:
            key = f"{a}-{b}@{n}"
            if key in stored:
                out[a, b, n] = (stored[key]["mean"], stored[key]["ci95"])
            elif (a, b) not in missing:
                missing.append((a, b))
    out.update(blackbox_pairs(res, missing))
    return out


@block("blackbox")
def _blackbox(res: Results) -> str:
    run = res["blackbox"]
    tab = run["table"]
    rows = []
    for n in run["read_at"]:
        best = min(tab[f"{a}@{n}"]["mean"] for a, _ in BLACKBOX_ARMS)
        rows.append([str(n)] + [bold_if(f"{num(tab[f'{a}@{n}']['mean'], 3)} ± "
                                        f"{num(tab[f'{a}@{n}']['ci95'], 3)}",
                                        tab[f"{a}@{n}"]["mean"] == best)
                                for a, _ in BLACKBOX_ARMS])
    return table(["trials"] + [label for _, label in BLACKBOX_ARMS], rows)


@block("blackbox_paired")
def _blackbox_paired(res: Results) -> str:
    pairs = _blackbox_diffs(res)
    reads = res["blackbox"]["read_at"]
    return table(["difference", *map(str, reads)],
                 [[label] + [f"{num(pairs[a, b, n][0], 3, True)} ± {num(pairs[a, b, n][1], 3)}"
                             for n in reads] for a, b, label in BLACKBOX_PAIRS])


@block("blackbox_says")
def _blackbox_says(res: Results) -> str:
    run = res["blackbox"]
    tab, reads, pairs = run["table"], run["read_at"], _blackbox_diffs(res)

    def cell(a: str, b: str, n: int) -> str:
        m, h = pairs[a, b, n]
        return f"{num(m, 3, True)} ± {num(h, 3)}"

    def clear(a: str, b: str, n: int) -> bool:
        m, h = pairs[a, b, n]
        return abs(m) > h

    same = [pairs["ga_optuna", "ga_run_search", n] for n in reads]
    equal = not any(clear("ga_optuna", "ga_run_search", n) for n in reads)
    gap = max(same, key=lambda mh: abs(mh[0]))
    late = [n for n in reads if n >= 100]
    best_late = {n: min(tab[f"{a}@{n}"]["mean"] for a, _ in BLACKBOX_ARMS) for n in late}
    lead = [n for n in late if tab[f"ga_run_search@{n}"]["mean"] <= best_late[n]]
    early = [n for n in reads if n <= 50]
    above = {n: tab[f"ga_run_search@{n}"]["mean"] / tab[f"tpe@{n}"]["mean"] - 1 for n in early}

    def from_on(other: str) -> str:
        ok = [n for n in reads if all(clear("ga_optuna", other, k) and
                                      pairs["ga_optuna", other, k][0] < 0
                                      for k in reads if k >= n)]
        return f"from {min(ok)} trials on" if ok else "at no budget"

    return (
        f"- **The sampler is the same GA:** its regret equals `run_search`'s within the paired "
        f"interval at {'every' if equal else 'not every'} budget (largest gap "
        f"{num(gap[0], 3, True)} ± {num(gap[1], 3)}).\n"
        f"- **Goal \"best mean regret at ≥ 100 trials\" for the default GA (`run_search`): "
        f"{'met' if lead == late else 'not met'}** (lowest mean at "
        + (listing([str(n) for n in lead]) if lead else "none")
        + f" of {listing([str(n) for n in late])} trials). Against TPE: "
        + ", ".join(f"sampler {cell('ga_optuna', 'tpe', n)} and run_search "
                    f"{cell('ga_run_search', 'tpe', n)} at {n}" for n in late)
        + f". The sampler beats NSGA-II clearly {from_on('nsga2')}, random sampling "
        f"{from_on('random')}, and CMA-ES {from_on('cmaes')}.\n"
        f"- **Goal \"within 10 % of TPE at 25–50 trials\": "
        f"{'met' if all(v <= 0.10 for v in above.values()) else 'not met'}.** The default GA's "
        f"regret is "
        + " and ".join(f"{num(100 * above[n], 0)} % above TPE's at {n} trials" for n in early)
        + ". Its first generation is 15 Latin-hypercube trials and its second 15 children of "
        "them, so at 25 trials it has had one round of selection; TPE models every trial from "
        "the 11th on.\n"
        f"- Wall time per {run['trials']}-trial run (mean, in 2 worker processes): "
        + ", ".join(f"`{a}` {num(run['seconds_per_run'][a], 1)} s"
                    for a, _ in BLACKBOX_ARMS if a in run["seconds_per_run"])
        + ". The Optuna samplers' time includes Optuna's storage; the GA sampler's also the "
        "generation bookkeeping.")


# --- real-size data ------------------------------------------------------------------------

REAL_ARMS = ("population", "stream", "jax_serial", "torch_grouped", "torch_vmap", "torch_serial")


def _real(res: Results, name: str = "real_size") -> Dict[Tuple[str, int], Dict[str, Any]]:
    out: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for key, row in res[name]["table"].items():
        model, size, arm = key.split("/")
        out.setdefault((model, int(size)), {})[arm] = row
    return out


def _rate(cells: Mapping[str, Any], arm: str) -> float:
    return cells[arm]["member_epochs_per_s"]


def _batched(cells: Mapping[str, Any]) -> float:
    return max(_rate(cells, a) for a in ("torch_grouped", "torch_vmap") if a in cells)


# Goals of the real-size workloads on this CPU: population over PyTorch one by one, and
# the CNN's share of the matmul ceiling.
REAL_GOALS = {"cnn": 2.0, "frames": 1.2}
CEILING_GOAL = 40.0
STREAM_GOAL = 0.85


def _round_ratios(run: Mapping[str, Any], model: str, size: int, arm: str,
                  base: str) -> List[float]:
    """``arm`` ÷ ``base`` round by round (the rounds interleave the arms)."""
    top = run["runs"][f"{model}/{size}/{arm}"]
    bottom = run["runs"][f"{model}/{size}/{base}"]
    return [a["member_epochs_per_s"] / b["member_epochs_per_s"] for a, b in zip(top, bottom)
            if "member_epochs_per_s" in a and "member_epochs_per_s" in b]


@block("real_size")
def _real_size(res: Results) -> str:
    run = res["real_size"]
    ceiling = run["ceiling_gflops"]
    rows = []
    for (model, size), cells in _real(res).items():
        pop = cells["population"]
        ratios = _round_ratios(run, model, size, "population", "torch_serial")
        rows.append([model.upper() if model == "cnn" else model, str(size)]
                    + [num(_rate(cells, a)) if a in cells else "—" for a in REAL_ARMS]
                    + [f"{vs(statistics.median(ratios), REAL_GOALS[model])} ({span(ratios)})",
                       f"{num(100 * pop['gflops'] / ceiling, 0)} % / "
                       f"{num(100 * cells['torch_serial']['gflops'] / ceiling, 0)} %",
                       f"{num(pop['peak_rss_mb'], 0)} / "
                       f"{num(cells['torch_serial']['peak_rss_mb'], 0)}"])
    return (f"Float32 matmul ceiling (2048², one device) in this run: {num(ceiling, 0)} GFLOP/s "
            f"(median of {len(run['runs'][next(iter(run['runs']))])} rounds)."
            "\n\n" + table(["model", "P", "population", "stream", "JAX one by one",
                            "torch grouped", "torch vmap", "torch one by one",
                            "pop ÷ torch 1-by-1, median (rounds)",
                            "% of ceiling (pop / torch 1-by-1)",
                            "peak MB (pop / torch 1-by-1)"], rows))


@block("real_size_says")
def _real_size_says(res: Results) -> str:
    run, real = res["real_size"], _real(res)
    ceiling = run["ceiling_gflops"]
    lines = []
    for (model, size), cells in real.items():
        goal = REAL_GOALS[model]
        ratios = _round_ratios(run, model, size, "population", "torch_serial")
        ratio = statistics.median(ratios)
        line = (f"- **{'CNN' if model == 'cnn' else 'Frames model'} at P = {size}, ≥ {num(goal, 1)}× "
                f"PyTorch one by one: {'met' if ratio >= goal else 'not met'}** "
                f"({vs(ratio, goal)}×, rounds {span(ratios)}; "
                f"{num(_rate(cells, 'population') / _rate(cells, 'jax_serial'))}× the JAX members "
                f"one by one, {num(_rate(cells, 'population') / _batched(cells))}× the best "
                f"batched PyTorch population)")
        if model == "cnn":
            share = 100 * cells["population"]["gflops"] / ceiling
            line += (f"; **≥ {num(CEILING_GOAL, 0)} % of the ceiling: "
                     f"{'met' if share >= CEILING_GOAL else 'not met'}** "
                     f"({vs(share, CEILING_GOAL, 1)} %, against PyTorch's "
                     f"{num(100 * cells['torch_serial']['gflops'] / ceiling, 0)} %)")
        stream = _round_ratios(run, model, size, "stream", "population")
        lines.append(line + f". The stream path runs at {vs(statistics.median(stream), STREAM_GOAL)}× "
                     f"the array path (rounds {span(stream)}).")
    return ("\n".join(lines) + "\n\nThe convolutions are patches times a matrix in the "
            "forward pass, with the input gradient as one convolution of the output gradient "
            "(`genetic_dl/core/patch_conv.py`); max pooling is pairwise maxima of strided "
            "slices. On CPU a model whose step holds a convolution trains one member at a time "
            "per device, each running the member's own program in a loop "
            "(`genetic_dl/core/local_members.py`). The stream path's goal is measured by "
            "`stream_throughput.py` (below).")


@block("real_size_memory")
def _real_size_memory(res: Results) -> str:
    cnn = {p: c["population"] for (m, p), c in _real(res).items() if m == "cnn"}
    frames = [c["population"] for (m, _), c in _real(res).items() if m == "frames"]
    low = [p for p, c in cnn.items() if c["estimate_mb"] < c["peak_rss_mb"]]
    return ("**Memory.** The memory model's estimate (`genetic_dl.memory`, from shapes, before "
            "compiling) and the measured peak of the population arm: CNN "
            + " / ".join(num(c["estimate_mb"], 0) for c in cnn.values()) + " MB estimated "
            "against " + " / ".join(num(c["peak_rss_mb"], 0) for c in cnn.values())
            + f" MB measured at P = {' / '.join(map(str, cnn))}. The estimate errs high, as a "
            "guard should"
            + ("" if not low else ", except at " + listing([
                f"P = {p} ({num(100 * (1 - cnn[p]['estimate_mb'] / cnn[p]['peak_rss_mb']), 0)} "
                f"% low)" for p in low]))
            + f". For the frames model it is {span([c['estimate_mb'] for c in frames], 0)} MB "
            f"against {span([c['peak_rss_mb'] for c in frames], 0)} MB measured: the "
            "sum of a recurrent scan's values overcounts what XLA keeps.")


EVAL_FILES = (("real_size_eval", "`real_size_eval.json`"), ("real_size", "`real_size.json`"))


@block("eval_memory")
def _eval_memory(res: Results) -> str:
    rows, growth = [], []
    for name, label in EVAL_FILES:
        ev = res[name]["eval_memory"]
        sizes = sorted(ev, key=int)
        for n in sizes:
            e = ev[n]
            rows.append([label, f"{int(n) // 1000} k", num(e["estimate_mb"], 0),
                         num(e["rss_before_mb"], 0), num(e["peak_rss_mb"], 0),
                         num(e["peak_rss_mb"] - e["rss_before_mb"], 0), num(e["seconds"], 1)])
        first, last = ev[sizes[0]]["peak_rss_mb"], ev[sizes[-1]]["peak_rss_mb"]
        growth.append((label, last / first - 1, first, last, sizes))
    lines = [table(["JSON", "validation images", "estimate (MB)", "RSS before (MB)",
                    "peak RSS (MB)", "added by evaluation (MB)", "seconds"], rows), ""]
    for label, g, first, last, sizes in growth:
        lines.append(f"- {label}: peak RSS {num(100 * g, 1, True)} % from "
                     f"{int(sizes[0]) // 1000} k to {int(sizes[-1]) // 1000} k "
                     f"({num(last, 0)} vs {num(first, 0)} MB): the goal \"flat within ±10 %\" "
                     f"is {met(abs(g) <= 0.10)}.")
    return "\n".join(lines)


@block("real_size_cli")
def _real_size_cli(res: Results) -> str:
    runs = res["real_size_cli"]["runs"]
    rows = []
    for r in runs.values():
        cmd = r["command"].replace("genetic-dl ", "", 1)
        cmd = re.sub(r" --(dataset|seed|out) \S+| --quiet", "", cmd)
        cmd = re.sub(r"--space (.*?)$", r'--space "\1"', cmd)
        rows.append([f"`{cmd}`", f"{num(r['wall_s'], 0)} s", f"{num(r['peak_rss_mb'], 0)} MB",
                     f"{num(100 * r['test']['accuracy'], 1)} %"])
    search = runs["search"]
    first = next(iter(runs.values()))
    return (table(["run", "wall", "peak RSS", "test accuracy"], rows)
            + f"\n\nThe bound set for the first run, 4 GB (4096 MB), is "
            f"{met(first['peak_rss_mb'] < 4096)} ({num(first['peak_rss_mb'], 0)} MB). The search "
            f"trains {num(search['budget_used'], 0)} candidate-epochs on 60 k images in "
            f"{num(search['wall_s'] / 60, 1)} minutes, compiles included: about "
            f"{num(search['wall_s'] / search['budget_used'], 0)} s per network-epoch.")


# --- captions ------------------------------------------------------------------------------


@block("captions")
def _captions(res: Results) -> str:
    run = res["captions"]
    val, test, base = run["val"], run["test"], run["majority"]
    rows = [[name, num(test[f"f1_{s}"]), num(base["f1"][s]), num(100 * test[f"accuracy_{s}"], 1),
             num(100 * base["accuracy"][s], 1)] for s, name in enumerate(base["slots"])]
    examples = "; ".join(f"\"{e['true']}\" captioned \"{e['predicted']}\" "
                         f"({'exact' if e['exact_match'] else 'not exact'})"
                         for e in run["captions"][:2])
    below = [name for s, name in enumerate(base["slots"]) if test[f"f1_{s}"] <= base["f1"][s]]
    weakest = sorted(range(len(base["slots"])), key=lambda s: test[f"f1_{s}"])[:2]
    history = run["history"]
    says = (f"{'Every' if not below else 'Not every'} slot's test F1 is above its majority "
            f"baseline{'' if not below else ' (not: ' + ', '.join(below) + ')'}; the weakest "
            f"slots are {' and '.join(base['slots'][s] for s in weakest)}. The best validation "
            f"fitness {'still rose' if history[-1] > history[-2] else 'did not rise'} in the "
            f"last generation.")
    return (f"`{run['run']}` (`{run['command'].strip()}`, {run['machine']}, jax {base['jax']}): "
            f"{base['train']} training, {base['val']} validation and {base['test']} test clips "
            f"(the loader's default clips: 10 frames of 32×32, two digits), "
            f"{num(run['budget_used'], 0)} network-epochs in "
            f"{num(run['wall_s'] / 60, 1)} minutes, compiles included. The best {run['fitness']} "
            f"of each generation: {', '.join(num(100 * h, 1) for h in run['history'])} %. "
            f"The best member, selected "
            f"on {run['fitness']} ({num(100 * val['slot_accuracy'], 1)} %), on test: caption "
            f"exact match {num(100 * test['exact_match'], 1)} %, mean slot accuracy "
            f"{num(100 * test['slot_accuracy'], 1)} %, macro F1 averaged over slots "
            f"{num(test['f1'])} (precision {num(test['precision'])}, recall "
            f"{num(test['recall'])}, one-vs-rest AUC {num(test['auc'])}). Per slot, against "
            f"always predicting the training split's most frequent class (majority):\n\n"
            + table(["slot", "test F1", "majority F1", "test accuracy %", "majority accuracy %"],
                    rows)
            + f"\n\n{says} The first test videos: {examples}.")


# --- stream and A/B ------------------------------------------------------------------------


CONV_LAYOUT_TARGET = 1.5  # the ResNet population within 1.5x of the plain one-by-one loop
CONV_LAYOUT_ARMS = {"population": "gdl.train (canonical convolutions, one member at a time)",
                    "population_xla": "gdl.train with XLA's own layouts",
                    "jax_loop": "plain JAX, members one after another",
                    "jax_vmap": "plain JAX, one vmapped step per minibatch"}


@block("conv_layout")
def _conv_layout(res: Results) -> str:
    run = res["conv_layout"]
    rows = [[CONV_LAYOUT_ARMS[arm], str(row["rounds"]), num(row["median_s"]),
             span([row["min_s"], row["max_s"]]), f"{row['peak_mb']:.0f}"]
            for arm, row in run["table"].items()]
    ratio = run["population_over_loop"]
    return (table(["arm", "rounds", "median s / epoch", "range", "peak MB"], rows) + "\n\n"
            + wrap(f"Population ÷ one-by-one loop, per round: median "
                   f"{vs(ratio['median'], CONV_LAYOUT_TARGET, at_most=True)} (range "
                   f"{vs(ratio['min'], CONV_LAYOUT_TARGET, at_most=True)}–"
                   f"{vs(ratio['max'], CONV_LAYOUT_TARGET, at_most=True)}); target ≤ {CONV_LAYOUT_TARGET}×: "
                   f"{met(ratio['max'] <= CONV_LAYOUT_TARGET)} in every round."))


RECOMBINATION_COST_TARGET = 5.0  # % of training throughput


@block("recombination_cost")
def _recombination_cost(res: Results) -> str:
    run = res["recombination_cost"]
    by = {(r["model"], r["P"], r["arm"]): r["seconds"] for r in run["table"]}
    rows, over = [], []
    for (model, size, arm), values in by.items():
        base = by[model, size, "none"]
        costs = [100 * (v / b - 1) for v, b in zip(values, base)]
        cost = statistics.median(costs)
        rows.append([model, str(size), arm, num(statistics.median(values), 2),
                     "" if arm == "none" else
                     f"{num(cost, 1, sign=True)} % ({span(costs, 1)})"])
        if arm != "none" and cost > RECOMBINATION_COST_TARGET:
            over.append(f"{arm} on the {model}")
    rounds = len(next(iter(by.values())))
    return (table(["model", "P", "recombination", "median s", "cost, median (rounds)"], rows)
            + "\n\n" + wrap(
                f"{run['epochs']} epochs per call, {rounds} interleaved rounds ({run['machine']}). "
                f"Goal: at most {num(RECOMBINATION_COST_TARGET, 0)} % of training throughput: "
                + (f"{met(True)} by every method." if not over else
                   f"{met(False)} for {listing(over)}.")))


CONV_LOWERING_ARMS = ("one_at_a_time", "vmapped", "vmapped_shared")


@block("conv_lowering")
def _conv_lowering(res: Results) -> str:
    run = res["conv_lowering"]
    by = {(r["shape"], r["arm"]): r["ms_per_member_step"] for r in run["table"]}
    shapes = list(dict.fromkeys(shape for shape, _ in by))
    rows, fastest = [], {}
    for shape in shapes:
        base = by[shape, "one_at_a_time"]
        row = [shape]
        medians = {}
        for arm in CONV_LOWERING_ARMS:
            ratios = [t / b for t, b in zip(by[shape, arm], base)]
            medians[arm] = statistics.median(ratios)
            row.append(f"{num(statistics.median(by[shape, arm]))} ms: "
                       f"{num(medians[arm])}× ({span(ratios)})")
        rows.append(row)
        fastest[shape] = min(medians, key=lambda a: medians[a])
    rounds = len(next(iter(by.values())))
    others = [f"{arm} at {shape}" for shape, arm in fastest.items() if arm != "one_at_a_time"]
    return (table(["shape", *CONV_LOWERING_ARMS], rows) + "\n\n" + wrap(
        f"Median ms per member-step over {rounds} interleaved rounds at P = {run['size']} "
        f"({run['machine']}); each arm's ratio is the median of its per-round ratios to "
        f"one_at_a_time (range in brackets). The engine's rule on this backend, one member at a "
        f"time, is the fastest at "
        + listing([s for s, a in fastest.items() if a == "one_at_a_time"])
        + ("" if not others else "; faster: " + listing(others)) + "."))


STREAM_TARGET = 0.85  # the stream path at least 0.85x the array path
STREAM_ARMS = ("Dataset (memory)", "Dataset (mmap .npy)", "make_iter (memory)")


@block("stream")
def _stream(res: Results) -> str:
    run = res["stream_throughput"]
    by = {(r["model"], r["P"], r["arm"]): list(r["rounds"]) for r in run["table"]}
    cells = list(dict.fromkeys((m, p) for m, p, _ in by))
    rows, ratios = [], {}
    for model, p in cells:
        base = by[model, p, "array"]
        row = [model, str(p), f"{num(statistics.median(base), 1)} ({span(base, 1)})"]
        for arm in STREAM_ARMS:
            ratios[model, p, arm] = [s / a for s, a in zip(by[model, p, arm], base)]
            row.append(f"{num(statistics.median(by[model, p, arm]), 1)}: "
                       f"{vs(statistics.median(ratios[model, p, arm]), STREAM_TARGET)}× "
                       f"({span(ratios[model, p, arm])})")
        rows.append(row)
    rounds = {len(v) for v in by.values()}
    verdicts = []
    for arm in STREAM_ARMS:
        medians = [statistics.median(ratios[m, p, arm]) for m, p in cells]
        low = [f"{m} P = {p}" for m, p in cells
               if statistics.median(ratios[m, p, arm]) < STREAM_TARGET]
        verdicts.append(f"{arm} {span(medians)}× "
                        + ("(" + met(not low) + ")" if not low else
                           f"({met(False)} for {listing(low)})"))
    load = run["load_average"]
    return (table(["model", "P", "array (member-epochs/s)"] + list(STREAM_ARMS), rows)
            + "\n\n" + wrap(
                f"Member-epochs/s, medians of {listing([str(r) for r in sorted(rounds)])} "
                f"interleaved rounds of {run['epochs']} epochs per call (the array's range in "
                f"brackets); a stream arm's ratio is the median of its per-round ratios to the "
                f"array path, their range in brackets. The machine's load "
                f"average was {num(load[0], 1)} at the start and {num(load[-1], 1)} at the end "
                f"(2 cores shared with other jobs). Target ≥ {STREAM_TARGET}× the array path: "
                + listing(verdicts) + "."))


def _ab(res: Results, name: str, after: str) -> str:
    rows = [[str(r["P"]), num(r["a"], 1), num(r["b"], 1), vs(r["ratio_median"], 0.95, 3),
             f"{num(min(r['ratios']))}–{num(max(r['ratios']))}"] for r in res[name]["table"]]
    return table(["P", "before (member-epochs/s)", after, "median of per-round ratios",
                  "per-round range"], rows)


def _ab_goal(res: Results, name: str, band: Tuple[float, float] = (0.95, math.inf),
             goal: str = "at most 5 % slower than the code before (a median ratio ≥ 0.95)"
             ) -> str:
    """The verdict on an A/B's median ratios against ``band`` (met inside it)."""
    rows = res[name]["table"]
    missed = [r["P"] for r in rows if not band[0] <= r["ratio_median"] <= band[1]]
    return (f"The goal, {goal}, is "
            + (met(True) + " at every size" if not missed else
               f"{met(False)} at P = {listing([str(p) for p in missed])}")
            + " ("
            + ", ".join(f"{num(100 * (r['ratio_median'] - 1), 1, True)} % at P = {r['P']}"
                        for r in rows)
            + f"), inside per-round ranges of {span([x for r in rows for x in r['ratios']])}.")


@block("ab_learner")
def _ab_learner(res: Results) -> str:
    return (_ab(res, "ab_throughput", "with Learner") + "\n\n"
            + _ab_goal(res, "ab_throughput"))


@block("ab_library_shape")
def _ab_library_shape(res: Results) -> str:
    rows = res["ab_throughput_library_shape"]["table"]
    short = min(rows, key=lambda r: r["P"])
    call_ms = 1000 * 2 * short["P"] / short["a"]
    return (_ab(res, "ab_throughput_library_shape", "after") + "\n\n"
            + _ab_goal(res, "ab_throughput_library_shape")
            + f" P = {short['P']} is the size where a training call is shortest (2 epochs of "
            f"{short['P']} members: about {num(call_ms, 0)} ms), so per-call costs weigh most "
            f"there.")


@block("ab_layout")
def _ab_layout(res: Results) -> str:
    return (_ab(res, "ab_throughput_layout", "subpackages") + "\n\n"
            + _ab_goal(res, "ab_throughput_layout", (0.95, 1.05),
                       "throughput unchanged within ±5 % (a median ratio in [0.95, 1.05])"))


@block("ab_ga_step")
def _ab_ga_step(res: Results) -> str:
    rows = res["ab_ga_step"]["table"]
    out = [[str(r["P"]), f"`{r['arm']}`", num(r["a_ms"], 1), num(r["b_ms"], 1),
            vs(r["ratio_median"], 1.05, 3, at_most=True),
            f"{num(min(r['ratios']))}–{num(max(r['ratios']))}"] for r in rows]
    off = [f"`{r['arm']}` at P = {r['P']}" for r in rows if not r["ratio_median"] <= 1.05]
    return (table(["P", "arm", "before (ms per step)", "subpackages", "median of per-round "
                   "ratios", "per-round range"], out)
            + "\n\nThe goal, a GA step no more than 5 % slower than before (a median ratio "
            + "≤ 1.05), is " + (met(True) + " for every arm and size" if not off else
                                f"{met(False)} for {listing(off)}") + ".")


# --- the document --------------------------------------------------------------------------


def load_results(directory: Path = RESULTS_DIR) -> Dict[str, Any]:
    """Every JSON file of a folder, by file name without ``.json``.

    Args:
      directory: the folder (``benchmarks/results`` by default).

    Returns:
      The parsed files.
    """
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(directory.glob("*.json"))}


def render_blocks(results: Results, names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """The text of the generated blocks.

    Args:
      results: the loaded JSON files (:func:`load_results`).
      names: which blocks (all by default).

    Returns:
      Block name to its text (without the markers).
    """
    return {name: wrap(BLOCKS[name](results))
            for name in (names if names is not None else BLOCKS)}


def fill(markdown: str, blocks: Mapping[str, str]) -> str:
    """``markdown`` with the content of every marked block replaced.

    Args:
      markdown: the document.
      blocks: each block's new text (:func:`render_blocks`).

    Returns:
      The new document.

    Raises:
      ValueError: a marker names no block, a block has no marker, or one appears twice.
    """
    found = MARKER.findall(markdown)
    names = [name for name, _ in found]
    unknown = sorted(set(names) - set(blocks))
    missing = sorted(set(blocks) - set(names))
    twice = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or twice:
        raise ValueError(f"RESULTS.md markers: unknown {unknown}, missing {missing}, "
                         f"repeated {twice}")
    return MARKER.sub(lambda m: f"<!-- results_md: {m.group(1)} -->\n{blocks[m.group(1)]}\n"
                      f"<!-- /results_md: {m.group(1)} -->", markdown)


def render(markdown: str, results: Results) -> str:
    """The document as the JSON gives it.

    Args:
      markdown: the current document (its prose and markers are kept).
      results: the loaded JSON files.

    Returns:
      The document with every block regenerated.
    """
    return fill(markdown, render_blocks(results))


def diff(old: str, new: str, name: str = "benchmarks/RESULTS.md") -> str:
    """A unified diff of two versions of the document.

    Args:
      old: the document as it is.
      new: the document as the JSON gives it.
      name: the file name shown in the diff.

    Returns:
      The diff (empty when equal).
    """
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                        f"{name} (as committed)", f"{name} (from the JSON)"))


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder.

    Args:
      path: the file.
      text: its new content.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Rewrites RESULTS.md's blocks, or checks them.

    Args:
      argv: command-line arguments (``sys.argv[1:]`` by default).

    Returns:
      The exit status: 1 when ``--check`` finds a difference, else 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 and print a diff when RESULTS.md differs from the JSON")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="the JSON folder")
    parser.add_argument("--markdown", type=Path, default=RESULTS_MD, help="the document")
    args = parser.parse_args(argv)
    old = args.markdown.read_text(encoding="utf-8")
    new = render(old, load_results(args.results))
    if args.check:
        if new != old:
            sys.stdout.write(diff(old, new))
            print(f"{args.markdown} differs from what {args.results} gives: run "
                  "python benchmarks/results_md.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        write_atomic(args.markdown, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
