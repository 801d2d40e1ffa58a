"""Image and video datasets generated offline from scikit-learn's 8x8 digits.

Real-size workloads without a download: :func:`digit_images` makes MNIST-size
uint8 images (digits upscaled, shifted and noised), :func:`moving_digits`
Moving-MNIST-style sequences (Srivastava et al., 2015, "Unsupervised learning
of video representations using LSTMs"): digits that move and bounce off the
frame's edges. Both are seeded and deterministic.
"""
from __future__ import annotations

import functools
from typing import Tuple

import numpy as np

from ..errors import check_choice

LABELS = ("sum", "class")


@functools.lru_cache(maxsize=8)
def _glyphs(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as ``size x size`` uint8 glyphs (bilinear upscaling)."""
    # scipy and scikit-learn take about a second to import: only the generators need them
    from scipy.ndimage import zoom  # pylint: disable=import-outside-toplevel
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    raw = load_digits()
    images = raw.images.astype(np.float32) * (255.0 / 16.0)
    big = zoom(images, (1, size / 8, size / 8), order=1)
    return np.clip(big, 0, 255).astype(np.uint8), raw.target.astype(np.int32)


def digit_images(n: int, *, size: int = 28, channels: int = 0, noise: float = 16.0,
                 seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` MNIST-like uint8 images of digits and their classes.

    Each image is a random digit upscaled to ``size * 5 // 7`` pixels (20 of 28,
    as MNIST's digits sit in a 20-pixel box), placed at a random offset, with
    gaussian pixel noise of std ``noise``.

    Args:
      n: number of images.
      size: image height and width.
      channels: 0 for ``(n, size, size)``, else ``(n, size, size, channels)``
        (CIFAR-like; every channel is the digit with its own noise).
      noise: pixel noise std (0..255 scale).
      seed: the seed.

    Returns:
      ``(images, labels)``: uint8 images and int32 classes 0..9.
    """
    if n < 1 or size < 8:
        raise ValueError(f"digit_images needs n >= 1 and size >= 8, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    box = max(8, size * 5 // 7)
    glyphs, classes = _glyphs(box)
    pick = rng.integers(0, len(glyphs), n)
    out = np.zeros((n, size, size) + ((channels,) if channels else ()), np.uint8)
    top, left = (rng.integers(0, size - box + 1, n) for _ in range(2))
    rows = top[:, None, None] + np.arange(box)[None, :, None]
    cols = left[:, None, None] + np.arange(box)[None, None, :]
    for start in range(0, n, 4096):  # bounded float memory for 60 k images
        part = slice(start, min(n, start + 4096))
        img = np.zeros((part.stop - part.start, size, size) + out.shape[3:], np.float32)
        idx = np.arange(part.stop - part.start)[:, None, None]
        glyph = glyphs[pick[part]].astype(np.float32)
        img[idx, rows[part], cols[part]] = glyph[..., None] if channels else glyph
        img += rng.normal(0.0, noise, img.shape).astype(np.float32)
        out[part] = np.clip(img, 0, 255).astype(np.uint8)
    return out, classes[pick]


def _bounce(start: np.ndarray, velocity: np.ndarray, steps: int, room: int) -> np.ndarray:
    """Positions ``(n, steps)`` moving at ``velocity`` and reflecting off 0 and ``room``."""
    raw = start[:, None] + velocity[:, None] * np.arange(steps)[None, :]
    if room == 0:
        return np.zeros_like(raw)
    period = 2 * room
    phase = np.mod(raw, period)
    return np.where(phase <= room, phase, period - phase)


def moving_digits(n: int, *, frames: int = 10, size: int = 32, digits: int = 2,
                  label: str = "sum", seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Moving-MNIST-style sequences of ``digits`` bouncing digits, and their labels.

    Digits (scikit-learn's, upscaled to ``size * 7 // 16`` pixels: 28 of 64
    as in Moving MNIST) start at random positions with random velocities of
    ``size / 32`` to ``size / 16`` pixels per frame and bounce off the edges;
    overlapping digits combine by their maximum.

    Args:
      n: number of sequences.
      frames: frames per sequence.
      size: frame height and width.
      digits: digits per sequence.
      label: ``"sum"`` (the sum of the digits' classes, ``9 * digits + 1``
        classes) or ``"class"`` (the classes as one base-10 number, first digit
        first: ``10 ** digits`` classes).
      seed: the seed.

    Returns:
      ``(sequences, labels)``: uint8 ``(n, frames, size, size)`` and int32 ``(n,)``.
    """
    check_choice("label", label, LABELS)
    if n < 1 or frames < 1 or digits < 1 or size < 16:
        raise ValueError(f"moving_digits needs n, frames, digits >= 1 and size >= 16, got "
                         f"n={n}, frames={frames}, digits={digits}, size={size}")
    rng = np.random.default_rng(seed)
    box = max(8, size * 7 // 16)
    glyphs, classes = _glyphs(box)
    out = np.zeros((n, frames, size, size), np.uint8)
    labels = np.zeros(n, np.int64)
    room = size - box
    tracks = []
    for _ in range(digits):  # all random draws first: chunking below cannot change them
        pick = rng.integers(0, len(glyphs), n)
        speed = rng.uniform(size / 32, size / 16, n)
        angle = rng.uniform(0, 2 * np.pi, n)
        ys = _bounce(rng.uniform(0, room, n), speed * np.sin(angle), frames, room)
        xs = _bounce(rng.uniform(0, room, n), speed * np.cos(angle), frames, room)
        tracks.append((pick, np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)))
        labels = labels + classes[pick] if label == "sum" else labels * 10 + classes[pick]
    window = np.arange(box)
    for start in range(0, n, 512):  # bounded index memory for 10 k x 20 x 64 x 64
        part = slice(start, min(n, start + 512))
        seq = np.arange(part.stop - part.start)[:, None, None, None]
        step = np.arange(frames)[None, :, None, None]
        view = out[part]
        for pick, ys, xs in tracks:
            rows = ys[part][:, :, None, None] + window[None, None, :, None]
            cols = xs[part][:, :, None, None] + window[None, None, None, :]
            view[seq, step, rows, cols] = np.maximum(view[seq, step, rows, cols],
                                                     glyphs[pick[part]][:, None])
    return out, labels.astype(np.int32)
