"""Model families: shapes on 1-D and 2-D inputs, spec round trips, input checks."""
import jax
import jax.numpy as jnp
import pytest

import genetic_dl as gdl

SPECS = [gdl.MLPSpec((16, 8), "gelu"), gdl.MLPSpec((), "relu"),
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
    (lambda: gdl.spec_from_dict({"family": "mlp", "widths": [3]}), "unknown mlp option"),
])
def test_bad_specs(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()
