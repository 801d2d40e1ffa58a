"""The ``--soups`` entry of an ``evolve-weights`` run's result.json."""
from __future__ import annotations

import argparse
from typing import Any, Dict

from ..data import Dataset
from ..weights import WeightGAResult
from ..weights.soups import soups


def soup_entry(args: argparse.Namespace, res: WeightGAResult, data: Dataset,
               label: str) -> Dict[str, Any]:
    """The ``--soups`` entry of result.json: the final population's soups, chosen on
    validation, and the chosen model's test metrics (evaluated once).

    Args:
      args: the options (``--fitness``, ``--batch-size``, ``--quiet``).
      res: the run's result.
      data: the dataset.
      label: what the fitness is called (``-val_loss``...).

    Returns:
      ``{"fitness": {candidate: validation fitness}, "chosen", "repair", "val", "test",
      "ingredients": {candidate: member ids}}``.
    """
    made = soups(res, data, fitness=args.fitness, batch_size=args.batch_size,
                 repair=bool(args.soup_repair))
    if not args.quiet:
        print(f"soups: chose {made.chosen_name}, {label} "
              f"{made.fitness[made.chosen_name]:.4f} on validation")
    return {"fitness": dict(made.fitness), "chosen": made.chosen_name,
            "repair": bool(args.soup_repair),
            "val": made.chosen_metrics, "test": made.test_metrics(data),
            "ingredients": {k: list(v) for k, v in made.ingredients.items()}}
