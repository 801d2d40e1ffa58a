"""Example captions of a caption model's run: a few test videos with their true and
predicted captions, for ``result.json`` and the report (``captions.png``)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ..core.caption_metrics import slot_predictions
from ..core.pytree import Params
from ..data import Dataset
from ..data.synthetic import CAPTION_VOCAB, render_caption

EXAMPLES = 4  # test videos shown
MOST_FRAMES = 10  # frames shown per video (evenly spaced when a video has more)


def _sentence(row: np.ndarray, slot_classes: Sequence[int]) -> str:
    """The caption of one row of slot classes: a sentence when the slots are
    :data:`~genetic_dl.data.synthetic.CAPTION_VOCAB`'s, else the class indices."""
    fields = len(CAPTION_VOCAB)
    if len(slot_classes) % fields == 0 and \
            tuple(slot_classes) == CAPTION_VOCAB * (len(slot_classes) // fields):
        return render_caption(row.tolist())
    return "slots " + " ".join(str(int(v)) for v in row)


def caption_examples(model: nn.Module, params: Params, data: Dataset,
                     count: int = EXAMPLES) -> List[Dict[str, Any]]:
    """The first ``count`` test videos' true and predicted captions.

    Args:
      model: the caption model (a zoo module).
      params: its params.
      data: a dataset with ``slot_classes``.
      count: how many videos.

    Returns:
      ``[{"index", "true", "predicted", "exact_match"}]``: the video's row of the
      test split, its captions and whether every slot was predicted right.
    """
    x, y = data.split("test")
    x, y = x[:count], np.asarray(y[:count])
    outputs = model.apply(params, jnp.asarray(data.model_inputs(x)))
    predicted = np.asarray(slot_predictions(jnp.asarray(outputs), data.slot_classes))
    return [{"index": i, "true": _sentence(t, data.slot_classes),
             "predicted": _sentence(p, data.slot_classes), "exact_match": bool(np.all(t == p))}
            for i, (t, p) in enumerate(zip(y, predicted))]


def write_caption_strip(path: str, data: Dataset, examples: Sequence[Dict[str, Any]]) -> bool:
    """Draws each example's frames in a row under its true and predicted captions.

    Args:
      path: the PNG to write.
      data: the dataset the examples index (its test split).
      examples: :func:`caption_examples`' output.

    Returns:
      Whether the image was written (not without matplotlib).
    """
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        return False
    clips = np.asarray(data.split("test")[0][[e["index"] for e in examples]])
    steps = clips.shape[1]
    shown = np.unique(np.linspace(0, steps - 1, min(steps, MOST_FRAMES)).round().astype(int))
    fig, axes = plt.subplots(len(examples), len(shown), squeeze=False,
                             figsize=(0.9 * len(shown), 1.25 * len(examples)))
    for row, (example, clip) in enumerate(zip(examples, clips)):
        for col, t in enumerate(shown):
            frame = clip[t] if clip[t].ndim == 2 else clip[t][..., 0]
            axes[row, col].imshow(frame, cmap="gray")
            axes[row, col].set_axis_off()
        mark = "=" if example["exact_match"] else "≠"
        axes[row, 0].set_title(f"true:      {example['true']}\npredicted: {example['predicted']}"
                               f"  ({mark})", loc="left", fontsize=6, family="monospace")
    fig.subplots_adjust(hspace=0.7, wspace=0.05)  # room for two lines of captions per row
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True
