"""reset_statistics: after each generation's training, BatchNorm statistics are recomputed
from the members' own weights (REPAIR's reset), so crossed or averaged members are scored
with statistics that belong to them."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl


class _NormMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x)))
        return nn.Dense(10)(x)


def _xent(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


@pytest.fixture(scope="module")
def setup():
    raw = gdl.load_dataset("digits")
    data = gdl.Dataset.from_arrays(
        x_train=raw.x_train[:256].reshape(256, -1), y_train=raw.y_train[:256],
        x_val=raw.x_val[:128].reshape(128, -1), y_val=raw.y_val[:128])
    learner = gdl.Learner.from_linen(
        _NormMLP(), loss=_xent, metrics={"accuracy": lambda o, b: jnp.mean(
            jnp.argmax(o, -1) == b["y"])},
        train_kwargs={"train": True}, eval_kwargs={"train": False}, mutable=("batch_stats",),
        rngs=())
    return data, gdl.init_population(jax.random.key(0), learner, data, 4)


def _run(setup, reset):
    data, pop = setup
    config = gdl.WeightGAConfig(crossover="arithmetic", reset_statistics=reset)
    return gdl.evolve_weights(jax.random.key(1), pop, data, generations=2, epochs=1,
                              batch_size=32, config=config)


def test_the_evaluated_population_has_statistics_of_its_own_weights(setup):
    data, _ = setup
    final = _run(setup, 4).population
    fresh = gdl.recompute_statistics(final, data, batches=4, batch_size=32)
    for a, b in zip(jax.tree_util.tree_leaves(final.collections),
                    jax.tree_util.tree_leaves(fresh.collections)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    plain = _run(setup, 0).population  # without it, training's running averages remain
    stale = gdl.recompute_statistics(plain, data, batches=4, batch_size=32)
    assert not all(np.allclose(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(plain.collections),
        jax.tree_util.tree_leaves(stale.collections)))


def test_bad_values_and_streams_are_refused_in_one_line(setup):
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="reset_statistics is a number of training"):
            gdl.WeightGAConfig(reset_statistics=bad)
    data, pop = setup
    stream = gdl.Stream.from_dataset(data, 32)
    with pytest.raises(ValueError, match="reset_statistics needs a Dataset"):
        gdl.evolve_weights(jax.random.key(1), pop, stream, generations=1, epochs=1,
                           batch_size=32, config=gdl.WeightGAConfig(reset_statistics=2))
