"""Image and video datasets generated offline from scikit-learn's 8x8 digits.

Real-size workloads without a download: :func:`digit_images` makes MNIST-size
uint8 images (digits upscaled, shifted and noised), :func:`moving_digits`
Moving-MNIST-style sequences (Srivastava et al., 2015, "Unsupervised learning
of video representations using LSTMs"): digits that move and bounce off the
frame's edges, and :func:`captioned_moving_digits` the same clips with
structured caption targets (each digit's identity, direction, first wall and
whether it overlaps another digit) and the sentences :func:`render_caption`
writes from them. All are seeded and
deterministic.
"""
from __future__ import annotations

import functools
from typing import List, Sequence, Tuple

import numpy as np

from ..errors import check, check_choice

LABELS = ("sum", "class")
# Caption vocabularies. Directions are compass sectors of 45 degrees centred on
# each name, of the digit's INITIAL velocity on screen (up is towards row 0);
# walls name the edge a digit bounces off first during the clip ("none": it
# bounces off none); overlap is 1 when the digit's ink meets another digit's
# ink in some frame. A caption target row holds CAPTION_FIELDS per digit slot.
DIRECTIONS = ("right", "up and right", "up", "up and left", "left", "down and left", "down",
              "down and right")
WALLS = ("none", "top", "bottom", "left", "right")
CAPTION_FIELDS = ("digit", "direction", "wall", "overlap")
CAPTION_VOCAB = (10, len(DIRECTIONS), len(WALLS), 2)
# A glyph pixel at least this bright is ink: overlaps are of ink, not of glyph boxes.
INK = 128


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


def _draw_motions(rng: np.random.Generator, n: int, size: int, digits: int, box: int,
                  glyphs: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random glyphs, starts and velocities of ``digits`` digits in ``n`` clips.

    Returns:
      ``(picks, starts, velocities)``: glyph indices ``(n, digits)`` and float
      ``(n, digits, 2)`` top-left corners and velocities as ``(y, x)`` pixels.
    """
    room = size - box
    picks = np.zeros((n, digits), np.int64)
    starts = np.zeros((n, digits, 2))
    velocities = np.zeros((n, digits, 2))
    for d in range(digits):  # the draws of moving_digits since its first version
        picks[:, d] = rng.integers(0, glyphs, n)
        speed = rng.uniform(size / 32, size / 16, n)
        angle = rng.uniform(0, 2 * np.pi, n)
        starts[:, d, 0] = rng.uniform(0, room, n)
        velocities[:, d, 0] = speed * np.sin(angle)
        starts[:, d, 1] = rng.uniform(0, room, n)
        velocities[:, d, 1] = speed * np.cos(angle)
    return picks, starts, velocities


def _tracks(starts: np.ndarray, velocities: np.ndarray, frames: int, room: int) -> np.ndarray:
    """Pixel positions ``(n, digits, frames, 2)`` (int64, ``(y, x)``) of bouncing digits."""
    n, digits = starts.shape[:2]
    out = np.zeros((n, digits, frames, 2), np.int64)
    for d in range(digits):
        for axis in (0, 1):
            path = _bounce(starts[:, d, axis], velocities[:, d, axis], frames, room)
            out[:, d, :, axis] = np.rint(path).astype(np.int64)
    return out


def _render(glyphs: np.ndarray, picks: np.ndarray, tracks: np.ndarray, size: int) -> np.ndarray:
    """uint8 clips ``(n, frames, size, size)`` of glyphs ``picks`` at pixel ``tracks``;
    overlapping digits combine by their maximum."""
    n, digits, frames = tracks.shape[:3]
    window = np.arange(glyphs.shape[-1])
    out = np.zeros((n, frames, size, size), np.uint8)
    for start in range(0, n, 512):  # bounded index memory for 10 k x 20 x 64 x 64
        part = slice(start, min(n, start + 512))
        seq = np.arange(part.stop - part.start)[:, None, None, None]
        step = np.arange(frames)[None, :, None, None]
        view = out[part]
        for d in range(digits):
            rows = tracks[part, d, :, 0][:, :, None, None] + window[None, None, :, None]
            cols = tracks[part, d, :, 1][:, :, None, None] + window[None, None, None, :]
            view[seq, step, rows, cols] = np.maximum(view[seq, step, rows, cols],
                                                     glyphs[picks[part, d]][:, None])
    return out


def _box(size: int) -> int:
    """Glyph size of a ``size``-pixel frame: 28 of 64, as in Moving MNIST."""
    return max(8, size * 7 // 16)


def _check_clip_args(what: str, n: int, frames: int, size: int, digits: int) -> None:
    if n < 1 or frames < 1 or digits < 1 or size < 16:
        raise ValueError(f"{what} needs n, frames, digits >= 1 and size >= 16, got "
                         f"n={n}, frames={frames}, digits={digits}, size={size}")


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
    _check_clip_args("moving_digits", n, frames, size, digits)
    box = _box(size)
    glyphs, classes = _glyphs(box)
    picks, starts, velocities = _draw_motions(np.random.default_rng(seed), n, size, digits,
                                              box, len(glyphs))
    labels = np.zeros(n, np.int64)
    for d in range(digits):  # in the order they were drawn
        labels = labels + classes[picks[:, d]] if label == "sum" else \
            labels * 10 + classes[picks[:, d]]
    out = _render(glyphs, picks, _tracks(starts, velocities, frames, size - box), size)
    return out, labels.astype(np.int32)


def _directions(velocities: np.ndarray) -> np.ndarray:
    """Index in :data:`DIRECTIONS` of each ``(y, x)`` velocity's 45-degree sector."""
    angle = np.arctan2(-velocities[..., 0], velocities[..., 1])  # rows grow downwards
    return np.mod(np.rint(angle / (np.pi / 4)), 8).astype(np.int32)


def _first_walls(starts: np.ndarray, velocities: np.ndarray, frames: int,
                 room: int) -> np.ndarray:
    """Index in :data:`WALLS` of the first wall each digit reaches before the last frame.

    A digit moving at ``v`` from ``s`` reaches its wall on an axis at time
    ``(room - s) / v`` (``v > 0``) or ``-s / v`` (``v < 0``); it bounces during
    the clip when that time is below ``frames - 1``, so that a later frame shows
    it coming back. Of two walls the earlier wins (the vertical one on a tie).
    """
    times = []
    for axis in (0, 1):
        s, v = starts[..., axis], velocities[..., axis]
        safe = np.where(v == 0, 1.0, v)
        times.append(np.where(v > 0, (room - s) / safe, np.where(v < 0, -s / safe, np.inf)))
    vertical = np.where(velocities[..., 0] < 0, WALLS.index("top"), WALLS.index("bottom"))
    horizontal = np.where(velocities[..., 1] < 0, WALLS.index("left"), WALLS.index("right"))
    first = np.where(times[0] <= times[1], vertical, horizontal)
    return np.where(np.minimum(*times) < frames - 1, first, 0).astype(np.int32)


def _overlaps(glyphs: np.ndarray, picks: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """Whether each digit's ink meets another digit's ink in some frame: bool ``(n, digits)``.

    Pixel ``i`` of digit a's glyph box is pixel ``i - shift`` of digit b's, where
    ``shift`` is b's corner minus a's; a pair meets where both are :data:`INK`.
    """
    n, digits = tracks.shape[:2]
    box = glyphs.shape[-1]
    ink = glyphs >= INK
    window = np.arange(box)
    out = np.zeros((n, digits), bool)
    for start in range(0, n, 512):  # bounded index memory, as _render
        part = slice(start, min(n, start + 512))
        seq = np.arange(part.stop - part.start)[:, None, None, None]
        for a in range(digits):
            for b in range(a + 1, digits):
                shift = tracks[part, b] - tracks[part, a]  # (m, frames, 2)
                rows = window[None, None, :] - shift[..., :1]  # b's row at a's row i
                cols = window[None, None, :] - shift[..., 1:]
                inside = (((rows >= 0) & (rows < box))[..., :, None]
                          & ((cols >= 0) & (cols < box))[..., None, :])
                other = ink[picks[part, b]][seq, np.clip(rows, 0, box - 1)[..., :, None],
                                            np.clip(cols, 0, box - 1)[..., None, :]]
                meet = (other & inside & ink[picks[part, a]][:, None]).any((1, 2, 3))
                out[part, a] |= meet
                out[part, b] |= meet
    return out


def _captioned(glyphs: np.ndarray, classes: np.ndarray, picks: np.ndarray, starts: np.ndarray,
               velocities: np.ndarray, frames: int, size: int
               ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Clips, caption targets and captions of given glyphs, starts and velocities."""
    room = size - glyphs.shape[-1]
    tracks = _tracks(starts, velocities, frames, room)
    n, digits = picks.shape
    # slots: by the left edge in the first frame, then the top edge, then the draw order
    order = np.stack([np.lexsort((np.arange(digits), tracks[i, :, 0, 0], tracks[i, :, 0, 1]))
                      for i in range(n)])
    fields = (classes[picks], _directions(velocities),
              _first_walls(starts, velocities, frames, room), _overlaps(glyphs, picks, tracks))
    targets = np.stack([np.take_along_axis(f, order, 1) for f in fields], -1)
    targets = targets.reshape(n, digits * len(CAPTION_FIELDS)).astype(np.int32)
    return _render(glyphs, picks, tracks, size), targets, render_captions(targets)


def captioned_moving_digits(count: int, *, frames: int = 10, size: int = 32, digits: int = 2,
                            seed: int = 0) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """:func:`moving_digits`'s clips with structured caption targets and their sentences.

    The clips are those of ``moving_digits(count, frames=frames, size=size,
    digits=digits, seed=seed)``. Each digit is a slot of four targets,
    :data:`CAPTION_FIELDS`: its class (0-9), the :data:`DIRECTIONS` sector of
    its initial velocity (after a bounce it keeps its initial direction), the
    first of :data:`WALLS` it bounces off during the clip (0: none) and whether
    its ink meets another digit's in some frame (1: overlaps; pixels of at least
    :data:`INK`). Slots are ordered by the digit's left edge in the first frame,
    ties by its top edge, then by the order the digits were drawn.

    Args:
      count: number of clips.
      frames: frames per clip.
      size: frame height and width.
      digits: digits per clip.
      seed: the seed.

    Returns:
      ``(clips, targets, captions)``: uint8 ``(count, frames, size, size)``, int32
      ``(count, 4 * digits)`` and ``render_caption(targets[i])`` for each clip,
      e.g. ``"the 3 moves up and left, bounces off the top and overlaps another
      digit; the 7 moves right and overlaps another digit"``.
    """
    _check_clip_args("captioned_moving_digits", count, frames, size, digits)
    box = _box(size)
    glyphs, classes = _glyphs(box)
    picks, starts, velocities = _draw_motions(np.random.default_rng(seed), count, size, digits,
                                              box, len(glyphs))
    return _captioned(glyphs, classes, picks, starts, velocities, frames, size)


def captioned_clips(digit_classes: np.ndarray, starts: np.ndarray, velocities: np.ndarray, *,
                    frames: int = 10, size: int = 32
                    ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Captioned clips of chosen digits from chosen positions at chosen velocities.

    Each digit is drawn with the first scikit-learn glyph of its class; targets
    and captions are as in :func:`captioned_moving_digits`.

    Args:
      digit_classes: int ``(n, digits)`` classes 0-9.
      starts: ``(n, digits, 2)`` top-left corners ``(y, x)`` in pixels, each in
        ``[0, size - size * 7 // 16]`` (the glyph fits in the frame).
      velocities: ``(n, digits, 2)`` ``(y, x)`` pixels per frame (y grows downwards).
      frames: frames per clip.
      size: frame height and width.

    Returns:
      ``(clips, targets, captions)`` as :func:`captioned_moving_digits` returns them.
    """
    digit_classes = np.asarray(digit_classes)
    starts, velocities = (np.asarray(a, np.float64) for a in (starts, velocities))
    n, digits = digit_classes.shape if digit_classes.ndim == 2 else (0, 0)
    check(starts.shape == velocities.shape == (n, digits, 2) and n > 0,
          f"captioned_clips needs digit_classes (n, digits) and starts, velocities "
          f"(n, digits, 2), got {digit_classes.shape}, {starts.shape}, {velocities.shape}")
    _check_clip_args("captioned_clips", n, frames, size, digits)
    box = _box(size)
    check(bool(np.all((starts >= 0) & (starts <= size - box))),
          f"captioned_clips starts must be in [0, {size - box}] (the glyph of {box} pixels fits "
          f"a frame of {size}), got [{starts.min()}, {starts.max()}]")
    check(bool(np.all((digit_classes >= 0) & (digit_classes <= 9))),
          f"captioned_clips digit_classes must be 0-9, got [{digit_classes.min()}, "
          f"{digit_classes.max()}]")
    glyphs, classes = _glyphs(box)
    picks = np.argmax(classes[None, :] == digit_classes.reshape(-1, 1), 1).reshape(n, digits)
    return _captioned(glyphs, classes, picks, starts, velocities, frames, size)


def render_caption(target_row: Sequence[int]) -> str:
    """The sentence of one caption target row (true or predicted).

    Args:
      target_row: ``4 * digits`` class indices, :data:`CAPTION_FIELDS` per slot.

    Returns:
      e.g. ``"the 3 moves up and left and bounces off the top; the 7 moves right"``
      or ``"the 3 moves up, bounces off the top and overlaps another digit; ..."``.
    """
    row = np.asarray(target_row)
    check(row.ndim == 1 and row.size > 0 and row.size % len(CAPTION_FIELDS) == 0
          and np.issubdtype(row.dtype, np.integer),
          f"a caption target row is {len(CAPTION_FIELDS)} integers per digit "
          f"({', '.join(CAPTION_FIELDS)}), got shape {row.shape} of {row.dtype}")
    slots = row.reshape(-1, len(CAPTION_FIELDS))
    check(bool(np.all((slots >= 0) & (slots < np.asarray(CAPTION_VOCAB)))),
          f"caption targets out of their vocabularies {dict(zip(CAPTION_FIELDS, CAPTION_VOCAB))}: "
          f"{row.tolist()}")
    parts = []
    for digit, direction, wall, overlap in slots.tolist():
        extra = ([f"bounces off the {WALLS[wall]}"] if wall else []) + \
            (["overlaps another digit"] if overlap else [])
        tail = f", {extra[0]} and {extra[1]}" if len(extra) == 2 else \
            "".join(f" and {e}" for e in extra)
        parts.append(f"the {digit} moves {DIRECTIONS[direction]}{tail}")
    return "; ".join(parts)


def render_captions(targets: np.ndarray) -> List[str]:
    """:func:`render_caption` of each row of ``(n, 4 * digits)`` targets, e.g. a
    ``captioned_moving_digits`` dataset's ``y_test`` (or a model's predictions)."""
    return [render_caption(row) for row in np.asarray(targets)]
