"""Running statistics recomputed on training batches (REPAIR): the batch statistics'
mean, for any momentum, every member with its own."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.core.statistics import recompute_statistics

EPS = 1e-5  # flax BatchNorm's epsilon


def _loss(o, b):
    return optax.softmax_cross_entropy_with_integer_labels(o, b["y"]).mean()


class FirstNorm(nn.Module):
    """BatchNorm on the raw features, then Dense + ReLU + BatchNorm (per-member params)."""
    momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum)(x)
        h = nn.relu(nn.Dense(5)(x))
        h = nn.BatchNorm(use_running_average=not train, momentum=self.momentum)(h)
        return nn.Dense(3)(h)


def _learner(module, mutable=("batch_stats",)):
    return gdl.Learner.from_linen(module, loss=_loss, mutable=mutable,
                                  train_kwargs={"train": True}, eval_kwargs={"train": False})


def _normalized(x):
    """Per-batch standardisation of (batches, rows, features), as BatchNorm in training."""
    return (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + EPS)


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_statistics_are_the_mean_of_the_batches_statistics_for_any_momentum(iris, momentum):
    pop = gdl.init_population(jax.random.key(0), _learner(FirstNorm(momentum)), iris, 3)
    out = recompute_statistics(pop, iris, batches=4, batch_size=16)
    stats = jax.device_get(out.collections["batch_stats"])
    x = np.asarray(iris.x_train[:64], np.float64).reshape(4, 16, 4)
    for i in range(3):  # the first BatchNorm sees the features: every member the same
        np.testing.assert_allclose(stats["BatchNorm_0"]["mean"][i], x.mean(1).mean(0),
                                   rtol=1e-4, atol=1e-6)
        # flax stores the biased batch variance
        np.testing.assert_allclose(stats["BatchNorm_0"]["var"][i], x.var(1).mean(0),
                                   rtol=1e-4, atol=1e-6)
    dense = jax.device_get(pop.params["params"]["Dense_0"])
    for i in range(3):  # the second one sees each member's own hidden units
        h = np.maximum(_normalized(x) @ dense["kernel"][i] + dense["bias"][i], 0)
        np.testing.assert_allclose(stats["BatchNorm_1"]["mean"][i], h.mean(1).mean(0),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats["BatchNorm_1"]["var"][i], h.var(1).mean(0),
                                   rtol=1e-4, atol=1e-5)
    assert not np.allclose(stats["BatchNorm_1"]["mean"][0], stats["BatchNorm_1"]["mean"][1])
    # only the collections change
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, out.params, pop.params))


def test_shuffled_batches_cover_the_training_split(iris):
    pop = gdl.init_population(jax.random.key(0), _learner(FirstNorm()), iris, 2)
    out = recompute_statistics(pop, iris, batch_size=21, key=jax.random.key(3))  # 4 batches
    first = jax.device_get(out.collections["batch_stats"]["BatchNorm_0"])
    x = np.asarray(iris.x_train, np.float64)
    np.testing.assert_allclose(first["mean"][0], x.mean(0), rtol=1e-4, atol=1e-6)
    # the mean within-batch variance is the total variance less that of the batch means
    assert np.all(first["var"][0] <= x.var(0) + 1e-6)
    ordered = recompute_statistics(pop, iris, batch_size=21)
    assert not np.allclose(ordered.collections["batch_stats"]["BatchNorm_0"]["var"],
                           out.collections["batch_stats"]["BatchNorm_0"]["var"])


def test_a_population_without_collections_is_returned_as_it_is(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((4,)), iris, 2)
    assert recompute_statistics(pop, iris) is pop


class Frozen(nn.Module):
    """A BatchNorm of momentum 1: its statistics never move in training."""

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(3)(nn.BatchNorm(use_running_average=not train, momentum=1.0)(x))


def test_statistics_that_training_never_updates_are_kept(iris):
    pop = gdl.init_population(jax.random.key(0), _learner(Frozen()), iris, 2)
    marked = jax.tree_util.tree_map(lambda v: v + 0.5, pop.collections)
    out = recompute_statistics(pop.replace(collections=marked), iris, batch_size=16)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, out.collections,
                                                         marked))


class Counter(nn.Module):
    """A collection that counts training calls: not a running average."""

    @nn.compact
    def __call__(self, x, train: bool):
        seen = self.variable("counts", "calls", lambda: jnp.zeros((), jnp.float32))
        if train:
            seen.value = seen.value + 1
        return nn.Dense(3)(x)


class TwoMomenta(nn.Module):
    """One leaf whose entries move with two different momenta."""

    @nn.compact
    def __call__(self, x, train: bool):
        ra = self.variable("stats", "mean", lambda: jnp.zeros((2,), jnp.float32))
        if train:
            ra.value = jnp.array([0.9, 0.5]) * ra.value + x[:, :2].mean(0)
        return nn.Dense(3)(x)


@pytest.mark.parametrize("module,collection,message", [
    (Counter(), "counts", "not as a running average"),
    (TwoMomenta(), "stats", "not a running average of one momentum")])
def test_collections_that_are_not_running_averages_are_refused(iris, module, collection,
                                                               message):
    pop = gdl.init_population(jax.random.key(0), _learner(module, (collection,)), iris, 2)
    with pytest.raises(ValueError, match=message) as err:
        recompute_statistics(pop, iris, batch_size=16)
    assert "\n" not in str(err.value)


def test_more_batches_than_the_split_holds_are_refused(iris):
    pop = gdl.init_population(jax.random.key(0), _learner(FirstNorm()), iris, 2)
    with pytest.raises(ValueError, match=r"batches must be an int in \[1, 5\]"):
        recompute_statistics(pop, iris, batches=6, batch_size=16)
