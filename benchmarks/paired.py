"""Paired comparisons of two arms that share seeds (and so starts): the per-seed
difference, its mean with a 95 % bootstrap interval, and two tests of no difference.

    from paired import paired
    paired(control_scores, arm_scores)  # differences are arm - control
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def paired(control: Sequence[float], arm: Sequence[float], n_boot: int = 10000,
           seed: int = 0) -> Dict[str, float]:
    """Per-seed differences ``arm - control`` summarised.

    Args:
      control, arm: one score per seed, in the same seed order.
      n_boot: bootstrap resamples of the seeds.
      seed: seed of the bootstrap.

    Returns:
      ``{"n", "mean", "lo", "hi", "wins", "losses", "ties", "wilcoxon_p", "sign_p"}``:
      the mean difference and its 95 % percentile-bootstrap interval, how many
      seeds the arm won and lost, the two-sided Wilcoxon signed-rank and sign
      tests' p-values (1.0 when every difference is zero).
    """
    from scipy import stats  # pylint: disable=import-outside-toplevel
    d = np.asarray(arm, np.float64) - np.asarray(control, np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("paired() needs one score per seed for both arms")
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    nonzero = d[d != 0]
    wilcoxon = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) else 1.0
    sign = float(stats.binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0
    return {"n": int(len(d)), "mean": float(d.mean()), "lo": float(lo), "hi": float(hi),
            "wins": wins, "losses": losses, "ties": int(len(d) - wins - losses),
            "wilcoxon_p": wilcoxon, "sign_p": sign}
