"""Model families: shapes on 1-D and 2-D inputs, spec round trips, input checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genetic_dl as gdl

SPECS = [gdl.MLPSpec((16, 8), "gelu"), gdl.MLPSpec((), "relu"), gdl.MLPSpec((8,), blocks=2),
         gdl.CNNSpec((4, 8), 3, "max", (16,)), gdl.CNNSpec((4,), 5, "avg", ()),
         gdl.CNNSpec((4,), 3, "none", (8,), "tanh", dropout=0.1),
         gdl.RNNSpec("gru", 8), gdl.RNNSpec("lstm", 8, 2), gdl.RNNSpec("simple", 8, dropout=0.2)]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@pytest.mark.parametrize("shape", [(40,), (8, 8)])
def test_output_shape_and_dropout(spec, shape):
    model = gdl.build_model(spec, shape, 10)
    x = jax.random.normal(jax.random.key(0), (5,) + shape)
    params = model.init(jax.random.key(1), x)
    out = model.apply(params, x)
    assert out.shape == (5, 10) and jnp.all(jnp.isfinite(out))
    train_out = model.apply(params, x, 0.5, True, rngs={"dropout": jax.random.key(2)})
    assert train_out.shape == (5, 10)
    # dropout rate 0 in train mode is the identity
    same = model.apply(params, x, 0.0, True, rngs={"dropout": jax.random.key(2)})
    assert jnp.allclose(same, out, atol=1e-5)
    assert (spec.dropout > 0) == (not jnp.allclose(train_out, out))


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_spec_round_trip_and_hashable(spec):
    again = gdl.spec_from_dict(gdl.spec_to_dict(spec))
    assert again == spec and hash(again) == hash(spec)


def test_wrong_dimensionality_is_refused():
    with pytest.raises(ValueError, match="RNN takes sequences"):
        gdl.build_model(gdl.RNNSpec(), (4, 4, 4), 3)
    with pytest.raises(ValueError, match="CNN takes"):
        gdl.build_model(gdl.CNNSpec(), (2, 2, 2, 2), 3)


@pytest.mark.parametrize("bad,message", [
    (lambda: gdl.MLPSpec((0,)), "positive"), (lambda: gdl.MLPSpec(activation="foo"), "activation"),
    (lambda: gdl.CNNSpec(pool="median"), "pool"), (lambda: gdl.RNNSpec("transformer"), "cell"),
    (lambda: gdl.MLPSpec(dropout=1.0), "dropout"),
    (lambda: gdl.MLPSpec((), blocks=1), "hidden layer"), (lambda: gdl.CNNSpec(blocks=-1), "blocks"),
    (lambda: gdl.spec_from_dict({"family": "mlp", "widths": [3]}), "unknown mlp option"),
])
def test_bad_specs(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


FRAMES = gdl.FramesSpec(filters=(4, 8), embed=8, hidden=8)


@pytest.mark.parametrize("shape", [(5, 12, 12), (5, 12, 12, 3)])
def test_frames_model_shares_its_cnn_over_frames_and_reads_them_in_order(shape):
    model = gdl.build_model(FRAMES, shape, 7)
    x = jax.random.normal(jax.random.key(0), (3,) + shape)
    params = model.init(jax.random.key(1), x)
    out = model.apply(params, x)
    assert out.shape == (3, 7) and jnp.all(jnp.isfinite(out))
    # one CNN for every frame: its params do not grow with the sequence length
    longer = model.init(jax.random.key(1), jnp.concatenate([x, x], axis=1))
    assert gdl.count_params(longer) == gdl.count_params(params)
    # examples are independent, and time order matters (a recurrent layer, not a pool)
    np.testing.assert_allclose(model.apply(params, x[:1]), out[:1], rtol=1e-5, atol=1e-6)
    assert not jnp.allclose(model.apply(params, x[:, ::-1]), out, atol=1e-4)
    assert gdl.spec_from_dict(gdl.spec_to_dict(FRAMES)) == FRAMES


def test_sequence_models_refuse_non_sequence_data(digits):
    with pytest.raises(ValueError, match="not a sequence of images"):
        gdl.init_population(jax.random.key(0), FRAMES, digits, 2)
    with pytest.raises(ValueError, match="RNN takes sequences"):
        gdl.build_model(gdl.RNNSpec(), (10, 16, 16), 3)


def test_moving_digits_are_seeded_bouncing_digits_with_their_labels():
    x, y = gdl.synthetic.moving_digits(64, frames=12, size=24, digits=1, label="class", seed=3)
    again, y_again = gdl.synthetic.moving_digits(64, frames=12, size=24, digits=1,
                                                 label="class", seed=3)
    other, _ = gdl.synthetic.moving_digits(64, frames=12, size=24, digits=1, label="class",
                                           seed=4)
    assert x.shape == (64, 12, 24, 24) and x.dtype == np.uint8
    assert np.array_equal(x, again) and np.array_equal(y, y_again) and not np.array_equal(x, other)
    assert set(np.unique(y)) <= set(range(10)) and len(np.unique(y)) >= 8
    ink = x.reshape(64, 12, -1).sum(-1)
    # a lone digit never leaves the frame (it bounces), so every frame keeps its ink
    np.testing.assert_array_equal(ink, np.repeat(ink[:, :1], 12, axis=1))
    assert np.mean(np.any(x[:, 0] != x[:, -1], axis=(1, 2))) > 0.9  # and it moves
    two, sums = gdl.synthetic.moving_digits(64, frames=4, size=24, digits=2, seed=3)
    _, first = gdl.synthetic.moving_digits(64, frames=4, size=24, digits=1, label="class", seed=3)
    assert np.all(sums >= first) and sums.max() <= 18 and np.all(two >= 0)


def test_frames_model_learns_moving_digits():
    data = gdl.load_dataset("moving_digits:count=600,frames=4,size=16,digits=1,label=class")
    assert data.raw_inputs and data.feature_shape == (4, 16, 16) and data.out_dim == 10
    pop = gdl.init_population(jax.random.key(0), gdl.FramesSpec(filters=(8,), embed=32,
                                                                hidden=32), data, 2,
                              hparams={"learning_rate": 3e-3})
    _, hist = gdl.train(pop, data, 8, batch_size=32)
    assert float(np.max(hist["val_score"][:, -1])) > 0.3  # chance: 0.1
