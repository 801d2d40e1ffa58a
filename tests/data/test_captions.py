"""Captioned moving digits: caption targets that agree with the clips, and their dataset."""
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.data import synthetic as syn
from genetic_dl.data.dataset import make_multi_slot_dataset


def _corners(clips):
    """Top-left corner ``(n, frames, 2)`` of the ink of single-digit clips: the glyph's
    position plus a constant offset, since a lone glyph is never clipped."""
    ink = clips > 0
    rows = np.argmax(ink.any(3), 2)
    cols = np.argmax(ink.any(2), 2)
    return np.stack([rows, cols], -1)


def test_clips_are_moving_digits_with_targets_in_their_vocabularies():
    x, targets, captions = syn.captioned_moving_digits(200, frames=6, size=24, digits=2, seed=3)
    same, _ = syn.moving_digits(200, frames=6, size=24, digits=2, seed=3)
    assert x.dtype == np.uint8 and x.shape == (200, 6, 24, 24) and np.array_equal(x, same)
    assert targets.dtype == np.int32 and targets.shape == (200, 8) and len(captions) == 200
    slots = targets.reshape(200, 2, 4)
    for field, vocab in enumerate(syn.CAPTION_VOCAB):
        assert set(np.unique(slots[..., field])) == set(range(vocab))  # all used, none beyond
    assert syn.CAPTION_FIELDS == ("digit", "direction", "wall", "overlap")
    assert syn.WALLS[0] == "none" and syn.CAPTION_VOCAB[-1] == 2
    assert all(syn.render_caption(t) == c for t, c in zip(targets, captions))
    assert syn.render_captions(targets) == captions
    # the slots hold the drawn digits (moving_digits' "class" label lists them in draw order)
    _, drawn = syn.moving_digits(200, frames=1, size=24, digits=2, label="class", seed=3)
    np.testing.assert_array_equal(np.sort(slots[..., 0], 1),
                                  np.sort(np.stack([drawn // 10, drawn % 10], 1), 1))


def test_same_seed_same_data_other_seed_other_data():
    a = syn.captioned_moving_digits(16, frames=4, size=16, seed=5)
    b = syn.captioned_moving_digits(16, frames=4, size=16, seed=5)
    c = syn.captioned_moving_digits(16, frames=4, size=16, seed=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1]) and a[2] != c[2]


def test_direction_and_walls_agree_with_the_rendered_tracks():
    x, targets, captions = syn.captioned_moving_digits(300, frames=6, size=64, digits=1, seed=0)
    track = _corners(x)
    step = np.diff(track, axis=1)
    calm = targets[:, 2] == 0
    assert 20 < calm.sum() < 280  # both kinds are drawn
    for i in np.flatnonzero(calm):
        # no bounce: each coordinate moves one way only, and the whole move is in the sector
        assert all(np.all(step[i, :, a] >= 0) or np.all(step[i, :, a] <= 0) for a in (0, 1))
        dy, dx = track[i, -1] - track[i, 0]
        length = np.hypot(dy, dx)
        angle = np.degrees(np.arctan2(-dy, dx))
        centre = 45.0 * targets[i, 1]
        slack = 22.5 + np.degrees(np.arcsin(min(1.0, np.sqrt(2) / length)))
        assert abs((angle - centre + 180) % 360 - 180) <= slack, (captions[i], dy, dx)
        words = set(syn.DIRECTIONS[targets[i, 1]].split())  # a named side is moved towards
        for word, moved in (("right", dx), ("left", -dx), ("down", dy), ("up", -dy)):
            assert word not in words or moved > 0, (captions[i], dy, dx)
    far = _corners(x[:, :, ::-1, ::-1])  # distances of the ink to the bottom and right edges
    box = 64 * 7 // 16
    for i in np.flatnonzero(~calm):
        wall = syn.WALLS[targets[i, 2]]
        assert captions[i].endswith(f"bounces off the {wall}")
        axis = 0 if wall in ("top", "bottom") else 1
        gap = (track if wall in ("top", "left") else far)[i, :, axis]
        margins = box - (64 - track[i, 0, axis] - far[i, 0, axis])  # blank rows (cols) of the box
        # some frame shows the glyph's box within half a step (<= 2 px) and rounding of that wall
        assert gap.min() <= margins + 2.5, (captions[i], gap, margins)


def test_a_clip_built_to_bounce_off_the_top_says_so():
    # one digit 3 moving straight up from row 2, one digit 7 moving right (no wall in reach)
    x, targets, captions = syn.captioned_clips(
        [[3, 7]], [[[2.0, 0.0], [10.0, 6.0]]], [[[-1.0, 0.0], [0.0, 1.0]]], frames=8, size=32)
    assert captions == ["the 3 moves up and bounces off the top; the 7 moves right"]
    np.testing.assert_array_equal(targets[0], [3, 2, 1, 0, 7, 0, 0, 0])
    alone, _, _ = syn.captioned_clips([[3]], [[[2.0, 0.0]]], [[[-1.0, 0.0]]], frames=8, size=32)
    rows = _corners(alone)[0, :, 0]
    assert rows[2] == rows.min() < rows[0] and rows[-1] > rows[2]  # up, then back down


@pytest.mark.parametrize("start,velocity,frames,caption", [
    ((9.0, 9.0), (0.0, 1.0), 6, "the 5 moves right"),
    ((9.0, 9.0), (0.0, -1.0), 6, "the 5 moves left"),
    ((9.0, 9.0), (1.0, 1.0), 6, "the 5 moves down and right"),
    ((9.0, 9.0), (-1.0, -1.0), 6, "the 5 moves up and left"),
    ((9.0, 9.0), (-1.0, 0.0), 12, "the 5 moves up and bounces off the top"),
    ((9.0, 9.0), (1.0, 0.0), 12, "the 5 moves down and bounces off the bottom"),
    # left wall at t=3, top wall at t=6: the left one comes first; the initial direction stays
    ((12.0, 6.0), (-2.0, -2.0), 10, "the 5 moves up and left and bounces off the left"),
    ((12.0, 13.0), (0.0, 0.5), 11, "the 5 moves right"),  # at the wall on the last frame only
    ((12.0, 13.0), (0.0, 0.5), 12, "the 5 moves right and bounces off the right"),
])
def test_explicit_motions_give_their_captions(start, velocity, frames, caption):
    _, _, captions = syn.captioned_clips([[5]], [[start]], [[velocity]], frames=frames, size=32)
    assert captions == [caption]


def test_slots_are_ordered_left_to_right_then_top_to_bottom():
    starts = [[[10.0, 12.0], [0.0, 3.0], [4.0, 12.0]]]
    _, targets, captions = syn.captioned_clips([[1, 2, 3]], starts, np.zeros((1, 3, 2)) + 0.1,
                                               frames=2, size=32)
    np.testing.assert_array_equal(targets[0, ::4], [2, 3, 1])
    assert captions[0].startswith("the 2 moves") and "; the 3 moves" in captions[0]


def test_overlap_is_ink_meeting_ink_in_some_frame():
    rng = np.random.default_rng(1)
    n, size, frames = 60, 32, 6
    room = size - size * 7 // 16
    classes = rng.integers(0, 10, (n, 2))
    starts = rng.uniform(0, room, (n, 2, 2))
    velocities = rng.uniform(-2, 2, (n, 2, 2))
    _, targets, captions = syn.captioned_clips(classes, starts, velocities, frames=frames,
                                               size=size)
    alone = [syn.captioned_clips(classes[:, d:d + 1], starts[:, d:d + 1],
                                 velocities[:, d:d + 1], frames=frames, size=size)[0]
             for d in (0, 1)]
    meet = ((alone[0] >= syn.INK) & (alone[1] >= syn.INK)).any((1, 2, 3))
    assert 5 < meet.sum() < n - 5  # both kinds are drawn
    np.testing.assert_array_equal(targets[:, 3], meet)  # symmetric: both slots say it
    np.testing.assert_array_equal(targets[:, 7], meet)
    assert all(("overlaps another digit" in c) == m for c, m in zip(captions, meet))


def test_a_sentence_names_the_wall_and_the_overlap():
    assert syn.render_caption(np.array([3, 3, 1, 1, 7, 0, 0, 1])) == (
        "the 3 moves up and left, bounces off the top and overlaps another digit; "
        "the 7 moves right and overlaps another digit")


@pytest.mark.parametrize("row,message", [
    ([3, 2, 1], "4 integers per digit"),
    ([3.0, 2.0, 1.0, 0.0], "4 integers per digit"),
    ([3, 8, 0, 0], "out of their vocabularies"),
    ([10, 0, 0, 0], "out of their vocabularies"),
    ([1, 0, 5, 0], "out of their vocabularies"),
    ([1, 0, 0, 2], "out of their vocabularies"),
])
def test_render_caption_rejects_bad_rows(row, message):
    with pytest.raises(ValueError, match=message):
        syn.render_caption(np.asarray(row))


def test_captioned_clips_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"starts must be in \[0, 18\]"):
        syn.captioned_clips([[1]], [[[0.0, 19.0]]], [[[0.0, 1.0]]], size=32)
    with pytest.raises(ValueError, match="needs digit_classes"):
        syn.captioned_clips([1], [[[0.0, 0.0]]], [[[0.0, 1.0]]])
    with pytest.raises(ValueError, match="0-9"):
        syn.captioned_clips([[12]], [[[0.0, 0.0]]], [[[0.0, 1.0]]])


def test_loader_name_gives_multi_slot_labels_whose_captions_render():
    data = gdl.load_dataset("captioned_moving_digits:count=40,frames=3,size=16,digits=2")
    assert data.task == "classification" and data.slots == 8 and data.num_classes == 10
    assert data.slot_classes == syn.CAPTION_VOCAB * 2 == (10, 8, 5, 2, 10, 8, 5, 2)
    assert data.out_dim == 80 and data.feature_shape == (3, 16, 16) and data.raw_inputs
    assert data.y_train.dtype == np.int32 and data.y_train.shape == (len(data.x_train), 8)
    assert len(data.y_train) + len(data.y_val) == 32 and len(data.y_test) == 8
    x, _, captions = syn.captioned_moving_digits(40, frames=3, size=16, digits=2, seed=0)
    np.testing.assert_array_equal(data.x_test, x[:8])  # the test split is the first clips
    assert syn.render_captions(data.y_test) == captions[:8]
    assert "captioned_moving_digits" in gdl.DATASETS
    with pytest.raises(ValueError, match="unknown captioned_moving_digits option 'label'"):
        gdl.load_dataset("captioned_moving_digits:label=sum")


def test_make_dataset_multi_slot_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = rng.integers(0, 5, (30, 3))
    d = make_multi_slot_dataset("slots", x, y, x[:6], y[:6])
    assert d.slots == 3 and d.num_classes == 5 and d.out_dim == 15 and d.y_val.shape[1] == 3
    assert len(d.y_train) + len(d.y_val) == 30 and "slots=3" in repr(d)
    with pytest.raises(ValueError, match="make_multi_slot_dataset, or slot_classes in an .npz"):
        gdl.make_dataset("slots", x, y, x[:6], y[:6])  # not by default
    with pytest.raises(ValueError, match="classes are 0..3"):
        make_multi_slot_dataset("slots", x, y, x[:6], y[:6], num_classes=4)
    with pytest.raises(ValueError, match="different width in each split"):
        make_multi_slot_dataset("slots", x, y, x[:6], y[:6, :2])
    with pytest.raises(ValueError, match=r"\(examples, slots\) classes"):
        make_multi_slot_dataset("slots", x, y[:, 0], x[:6], y[:6, 0])
    with pytest.raises(ValueError, match="non-integer values"):
        make_multi_slot_dataset("slots", x, y + 0.5, x[:6], y[:6])


def test_a_zoo_model_on_caption_slots_is_refused_in_one_line(tmp_path):
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    proc = subprocess.run(
        [sys.executable, "-m", "genetic_dl", "evolve-weights", "--dataset",
         "captioned_moving_digits:count=40,frames=4,size=16", "--model", "frames",
         "--population", "2", "--generations", "1", "--epochs", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "caption slots" in proc.stderr and "--model caption" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
