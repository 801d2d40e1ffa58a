"""The caption family: the frames encoder with one head per caption slot, on slot data only."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.core.learner import zoo_learner

VOCAB = (10, 8, 5, 2)
SPEC = gdl.CaptionSpec((4, 8), embed=8, hidden=8, slot_classes=VOCAB)


def _data():
    return gdl.load_dataset("captioned_moving_digits:count=40,frames=3,size=16,digits=1")


def test_one_head_per_slot_padded_to_slot_major_logits():
    model = gdl.build_model(SPEC, (3, 16, 16), 40)
    x = jax.random.normal(jax.random.key(0), (5, 3, 16, 16))
    params = model.init(jax.random.key(1), x)
    out = np.asarray(model.apply(params, x))
    assert out.shape == (5, 40) and np.isfinite(out).all()
    heads = {k: v["kernel"].shape for k, v in params["params"].items() if k.startswith("Slot_")}
    assert heads == {f"Slot_{s}": (8, v) for s, v in enumerate(VOCAB)}
    per_slot = out.reshape(5, 4, 10)
    beyond = np.arange(10)[None, :] >= np.asarray(VOCAB)[:, None]
    assert np.all(per_slot[:, beyond] == 0) and np.all(per_slot[:, ~beyond] != 0)
    # the encoder is the frames model's: the same layers, the same values from the same key
    frames = gdl.build_model(gdl.FramesSpec((4, 8), embed=8, hidden=8), (3, 16, 16), 7)
    encoder = {k: v for k, v in params["params"].items() if not k.startswith("Slot_")}
    twin = frames.init(jax.random.key(1), x)["params"]
    assert set(twin) == set(encoder) | {"Dense_1"}  # Dense_0 embeds, Dense_1 is the head
    assert twin["Dense_1"]["kernel"].shape == (8, 7) and twin["Dense_0"]["kernel"].shape[1] == 8
    for name, leaf in encoder.items():
        jax.tree_util.tree_map(np.testing.assert_array_equal, leaf, twin[name])


def test_caption_spec_round_trip_and_refusals():
    assert gdl.spec_from_dict(gdl.spec_to_dict(SPEC)) == SPEC and SPEC.out_dim == 40
    assert gdl.spec_to_dict(SPEC)["family"] == "caption" and SPEC != gdl.FramesSpec((4, 8))
    with pytest.raises(ValueError, match="slot_classes=data.slot_classes"):
        gdl.CaptionSpec()
    with pytest.raises(ValueError, match="has 40 outputs, not 30"):
        gdl.build_model(SPEC, (3, 16, 16), 30)
    with pytest.raises(ValueError, match="not a sequence of images"):
        gdl.build_model(SPEC, (16, 16), 40)


def test_the_learner_scores_mean_slot_accuracy_and_selects_on_it_by_default():
    learner = zoo_learner(SPEC, (3, 16, 16), 40)
    assert learner.default_fitness() == "slot_accuracy" and learner.score == "slot_accuracy"
    assert zoo_learner(gdl.FramesSpec(), (3, 16, 16), 7).default_fitness() == "loss"
    assert learner == zoo_learner(SPEC, (3, 16, 16), 40)  # equal learners share programs
    y = jnp.asarray([[3, 7, 4, 1]])
    logits = jax.nn.one_hot(y, 10).reshape(1, 40) * 5
    assert learner.score_of(logits, {"y": y}) == 1.0
    assert set(learner.evaluate(logits, {"y": y})) >= {"exact_match", "slot_accuracy", "f1_3"}


def test_populations_pair_the_caption_family_with_slot_data_only(digits):
    data = _data()
    pop = gdl.init_population(jax.random.key(0), _spec_with(data.slot_classes), data, 2)
    assert pop.out_dim == 40 and pop.learner.default_fitness() == "slot_accuracy"
    with pytest.raises(ValueError, match="use --model caption"):
        gdl.init_population(jax.random.key(0), gdl.FramesSpec(), data, 2)
    with pytest.raises(ValueError, match="not the dataset's"):
        gdl.init_population(jax.random.key(0), _spec_with((10, 8, 5, 3)), data, 2)
    with pytest.raises(ValueError, match="one label per example: use --model frames"):
        gdl.init_population(jax.random.key(0), SPEC, digits, 2)


def _spec_with(slot_classes):
    """:data:`SPEC` with other slot classes."""
    return gdl.CaptionSpec((4,), embed=8, hidden=8, slot_classes=slot_classes)
