"""A researcher's own model on the first try: token inputs end to end, and a loss that is
NaN at initialisation (an output layer narrower than the classes) refused with its cause."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.core import memory

VOCAB, LENGTH = 16, 6


class Bag(nn.Module):
    """Embedding, mean over the sequence, a linear classifier; refuses non-int32 inputs."""

    @nn.compact
    def __call__(self, x):
        if x.dtype != jnp.int32:  # a float would have been cast: tokens must arrive as given
            raise TypeError(f"tokens arrived as {x.dtype}")
        return nn.Dense(2)(nn.Embed(VOCAB, 8)(x).mean(1))


def xent(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def accuracy(logits, batch):
    return jnp.mean(jnp.argmax(logits, -1) == batch["y"])


BAG = gdl.Learner.from_linen(Bag(), loss=xent, metrics={"accuracy": accuracy})


def _tokens(n, seed=0):
    """int64 tokens (numpy's default) labelled by whether most of them are in the low half."""
    x = np.random.default_rng(seed).integers(0, VOCAB, (n, LENGTH))
    return x, ((x < VOCAB // 2).sum(1) > LENGTH // 2).astype(np.int64)


@pytest.fixture(scope="module")
def tokens():
    x, y = _tokens(320)
    return gdl.Dataset.from_arrays(x_train=x[:256], y_train=y[:256], x_val=x[256:],
                                   y_val=y[256:], inputs="tokens")


def test_an_embedding_model_trains_evaluates_and_predicts_on_int_tokens(tokens):
    assert tokens.x_train.dtype == np.int64 and tokens.feature_dtype == "int32"
    assert tokens.model_inputs(tokens.x_val).dtype == np.int32  # never standardised
    pop = gdl.init_population(jax.random.key(0), BAG, tokens, 3,
                              hparams={"learning_rate": [1e-2, 3e-2, 1e-1]})
    assert pop.feature_dtype == "int32"
    trained, hist = gdl.train(pop, tokens, 3, batch_size=32)
    losses = np.asarray(hist["train_loss"])
    assert np.all(losses[:, -1] < losses[:, 0]) and not np.any(trained.failed)
    acc = np.asarray(gdl.evaluate(trained, tokens)["accuracy"])
    assert acc.max() > 0.75  # learned the rule, not the majority class (~0.66)
    out = gdl.predict(trained, tokens.x_val)
    assert out.shape == (3, 64, 2)
    np.testing.assert_allclose(np.asarray(jnp.mean(jnp.argmax(out, -1) == tokens.y_val, 1)),
                               acc, atol=1e-6)
    with pytest.raises(ValueError, match="int32 token indices but x is float32"):
        gdl.predict(trained, tokens.x_val.astype(np.float32))
    res = gdl.evolve_weights(jax.random.key(1), pop, tokens, generations=2, epochs=1,
                             batch_size=32, fitness="accuracy",
                             config=gdl.WeightGAConfig(crossover="uniform"))
    assert 0.5 < res.best_fitness <= 1


def test_a_float_population_refuses_tokens_and_a_zoo_spec_refuses_them(tokens):
    floats = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), ((LENGTH,), 2), 2)
    assert floats.feature_dtype == "float32"
    with pytest.raises(ValueError, match="built for float32 features .* has int32"):
        gdl.train(floats, tokens, 1)
    with pytest.raises(ValueError, match="zoo spec takes float features"):
        gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), tokens, 2)
    shaped = gdl.init_population(jax.random.key(0), BAG, ((LENGTH,), 2, "int32"), 2)
    assert shaped.feature_dtype == "int32"
    with pytest.raises(ValueError, match="unknown feature dtype 'float64'"):
        gdl.init_population(jax.random.key(0), BAG, ((LENGTH,), 2, np.float64), 2)


def test_the_memory_estimate_counts_int32_tokens(tokens):
    pop = gdl.init_population(jax.random.key(0), BAG, tokens, 2)
    est = memory.estimate(pop, tokens, 32)
    # int64 on the host, int32 on the devices: 4 bytes a token, 4 a label
    assert est.data == (256 + 64) * (LENGTH * 4 + 4)
    assert est.train_activations > 0 and est.eval_activations > 0


def test_a_stream_of_token_batches_trains_and_evaluates(tokens):
    def make_iter(epoch, seed):
        del epoch
        order = np.random.default_rng(seed).permutation(256)
        for i in range(0, 256, 32):
            rows = order[i:i + 32]
            yield {"x": tokens.x_train[rows].astype(np.uint8), "y": tokens.y_train[rows]}
    stream = gdl.Stream(make_iter, val={"x": tokens.x_val, "y": tokens.y_val})
    pop = gdl.init_population(jax.random.key(0), BAG, stream, 2,
                              hparams={"learning_rate": 3e-2})
    assert pop.feature_dtype == "int32"
    trained, hist = gdl.train(pop, stream, 3)
    losses = np.asarray(hist["train_loss"])
    assert np.all(losses[:, -1] < losses[:, 0])
    predicted = jnp.argmax(gdl.predict(trained, tokens.x_val), -1) == tokens.y_val
    np.testing.assert_allclose(gdl.evaluate(trained, stream)["accuracy"],
                               np.asarray(predicted).mean(1), atol=1e-6)
    from_dataset = gdl.Stream.from_dataset(tokens, 32)
    assert next(from_dataset.make_iter(0, 0))["x"].dtype == np.int32
    gdl.train(pop, from_dataset, 1)


def _classes(n=48, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 4)).astype(np.float32), rng.permutation(n) % classes
    return gdl.Dataset.from_arrays(x_train=x[:32], y_train=y[:32], x_val=x[32:], y_val=y[32:])


def test_an_output_layer_narrower_than_the_classes_is_refused_with_its_shape():
    data = _classes()
    narrow = gdl.Learner.from_linen(nn.Dense(5), loss=xent)
    with pytest.raises(ValueError, match=r"loss is NaN .* outputs of shape \(\d+, 5\) for labels "
                                         r"up to 9 \(10 classes\).*nn\.Dense\(10\)"):
        gdl.init_population(jax.random.key(0), narrow, data, 2)
    stream = gdl.Stream(lambda epoch, seed: iter([]), val={"x": data.x_val, "y": data.y_val})
    with pytest.raises(ValueError, match=r"shape \(\d+, 5\) for labels up to 9"):
        gdl.init_population(jax.random.key(0), narrow, stream, 2)
    pop = gdl.init_population(jax.random.key(0), gdl.Learner.from_linen(nn.Dense(10), loss=xent),
                              data, 2)
    assert pop.size == 2


def test_regression_and_two_head_models_pass_the_loss_check():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 4)), rng.normal(size=(40, 3))
    targets = gdl.Dataset.from_arrays(x_train=x[:30], y_train=y[:30], x_val=x[30:], y_val=y[30:])
    mse = gdl.Learner.from_linen(nn.Dense(3), loss=lambda o, b: jnp.mean((o - b["y"]) ** 2))
    assert gdl.init_population(jax.random.key(0), mse, targets, 2).size == 2

    class TwoHeads(nn.Module):
        @nn.compact
        def __call__(self, x):
            return {"cls": nn.Dense(10)(x), "box": nn.Dense(2)(x)}

    def both(out, batch):
        return xent(out["cls"], batch) + jnp.mean(out["box"] ** 2)
    heads = gdl.Learner.from_linen(TwoHeads(), loss=both)
    assert gdl.init_population(jax.random.key(0), heads, _classes(), 2).size == 2
    # a loss that reads a head narrower than the classes is refused, naming every head
    narrow = gdl.Learner.from_linen(TwoHeads(), loss=lambda o, b: xent(o["box"], b))
    with pytest.raises(ValueError, match=r"'box': \(\d+, 2\).*labels up to 9"):
        gdl.init_population(jax.random.key(0), narrow, _classes(), 2)


def test_float_labels_guessed_as_regression_say_so_when_the_loss_needs_classes():
    data = _classes()
    as_floats = dict(x_train=data.x_train, y_train=data.y_train.astype(np.float64),
                     x_val=data.x_val, y_val=data.y_val.astype(np.float64))
    with pytest.warns(UserWarning, match="float64 with whole-number values"):
        guessed = gdl.Dataset.from_arrays(**as_floats)
    learner = gdl.Learner.from_linen(nn.Dense(10), loss=xent)
    with pytest.raises(ValueError, match=r"y_train is float64 \(float32 on the device\).*"
                                         r"regression targets.*task='classification'"):
        gdl.init_population(jax.random.key(0), learner, guessed, 2)
    chosen = gdl.Dataset.from_arrays(**as_floats, task="classification")
    assert chosen.y_train.dtype == np.int32 and chosen.num_classes == 10
    assert gdl.init_population(jax.random.key(0), learner, chosen, 2).size == 2
