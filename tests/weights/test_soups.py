"""Model soups, the best member and the ensemble, chosen on validation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.core.statistics import recompute_statistics
from genetic_dl.operators.averaging import uniform_average


class DeepNorm(nn.Module):
    """Three Dense + BatchNorm + ReLU blocks: averaged weights need new statistics."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = x.reshape((x.shape[0], -1))
        for _ in range(3):
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(32)(x)))
        return nn.Dense(10)(x)


LEARNER = gdl.Learner.from_linen(
    DeepNorm(), loss=lambda o, b: optax.softmax_cross_entropy_with_integer_labels(
        o, b["y"]).mean(),
    metrics={"accuracy": lambda o, b: jnp.mean(jnp.argmax(o, -1) == b["y"])},
    mutable=("batch_stats",), train_kwargs={"train": True}, eval_kwargs={"train": False})


def _shared_init(pop):
    """Every member starts from member 0's weights (soups need one basin)."""
    return pop.replace(params=jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x[:1], x.shape), pop.params))


@pytest.fixture(scope="module")
def data(digits):
    return gdl.Dataset.from_arrays(x_train=digits.x_train[:256], y_train=digits.y_train[:256],
                                   x_val=digits.x_val[:128], y_val=digits.y_val[:128],
                                   x_test=digits.x_test[:128], y_test=digits.y_test[:128])


@pytest.fixture(scope="module")
def trained(data):
    pop = _shared_init(gdl.init_population(jax.random.key(0), LEARNER, data, 3, "adam",
                                           {"learning_rate": 1e-2}))
    return gdl.train(pop, data, 3, batch_size=32)[0]


@pytest.fixture(scope="module")
def soup(trained, data):
    return gdl.soups(trained, data, fitness="accuracy", batch_size=32)


def _same(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) > 0 and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_the_uniform_soup_of_identical_members_is_that_member(iris):
    pop = _shared_init(gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 3))
    s = gdl.soups(pop, iris)
    member = gdl.population_member(pop, 0)
    assert _same(s.uniform.params, member.params)
    assert s.uniform_metrics == member.evaluate(iris, "val")
    assert s.ingredients["uniform"] == (0, 1, 2)


def test_reported_metrics_are_what_evaluate_gives_for_each_network(soup, data):
    for name in ("best", "uniform", "greedy"):
        network = getattr(soup, name)
        got = {k: float(v[0]) for k, v in gdl.evaluate(network.population(), data).items()}
        assert got == getattr(soup, f"{name}_metrics")
        assert soup.fitness[name] == got["accuracy"]
    assert soup.chosen_metrics == getattr(soup, f"{soup.chosen_name}_metrics")
    assert soup.test_metrics(data) == soup.chosen.evaluate(data, "test")


def test_the_greedy_soup_is_never_worse_than_the_best_member(soup, trained, data):
    member_accuracy = np.asarray(gdl.evaluate(trained, data)["accuracy"])
    assert soup.best_metrics["accuracy"] == pytest.approx(member_accuracy.max(), abs=1e-6)
    assert soup.fitness["greedy"] >= soup.fitness["best"]
    assert soup.ingredients["greedy"][0] == soup.ingredients["best"][0]
    assert len(soup.ingredients["greedy"]) > 1  # on this seed the soup helps
    chosen = max(soup.fitness[n] for n in ("best", "uniform", "greedy"))
    assert soup.fitness[soup.chosen_name] == chosen


def test_recomputed_statistics_beat_the_members_averaged_ones(soup, trained, data):
    averaged = gdl.Member(soup.uniform.params, jax.device_get(uniform_average(
        trained.collections)), soup.uniform.hparams, LEARNER, soup.uniform.feature_shape,
        soup.uniform.out_dim).evaluate(data, "val")
    assert soup.uniform_metrics["loss"] < averaged["loss"] - 0.1
    assert soup.uniform_metrics["accuracy"] > averaged["accuracy"]
    # and they are a direct recompute of the soup's statistics
    direct = recompute_statistics(soup.uniform.population(), data, batch_size=32)
    assert _same(jax.tree_util.tree_map(lambda v: v[0], direct.collections),
                 soup.uniform.collections)


def test_the_ensemble_averages_the_members_logits(soup, trained, data):
    logits = np.asarray(gdl.predict(trained, data.model_inputs(data.x_val))).mean(0)
    want = optax.softmax_cross_entropy_with_integer_labels(logits, data.y_val).mean()
    assert soup.ensemble_metrics["loss"] == pytest.approx(float(want), rel=1e-5)
    assert soup.ensemble_metrics["accuracy"] == pytest.approx(
        float(np.mean(logits.argmax(-1) == data.y_val)), abs=1e-6)
    assert soup.fitness["ensemble"] == soup.ensemble_metrics["accuracy"]


def test_a_failed_member_is_left_out_of_every_soup(trained, data):
    nan_params = jax.tree_util.tree_map(lambda x: x.at[1].set(jnp.nan), trained.params)
    broken = trained.replace(params=nan_params, failed=trained.failed.at[1].set(True))
    s = gdl.soups(broken, data, batch_size=32)
    for name in ("uniform", "greedy", "ensemble", "best"):
        assert 1 not in s.ingredients[name]
    assert all(np.isfinite(v) for v in s.fitness.values())
    kept = gdl.soups(gdl.take(trained, np.array([0, 2])), data, batch_size=32)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
                           s.uniform.params, kept.uniform.params)
    assert s.uniform_metrics["loss"] == pytest.approx(kept.uniform_metrics["loss"], rel=1e-5)


def test_a_weight_ga_result_gives_its_population_and_all_failed_is_refused(soup, trained, data):
    result = gdl.WeightGAResult(population=trained, best_params=None, best_fitness=0.0,
                                best_id=0, best_generation=0, best_metrics={}, history=[],
                                lineage=[])
    again = gdl.soups(result, data, fitness="accuracy", batch_size=32)
    assert again.fitness == soup.fitness and again.ingredients == soup.ingredients
    with pytest.raises(ValueError, match="every member failed"):
        gdl.soups(trained.replace(failed=jnp.ones(3, bool)), data)


def test_repair_gives_a_norm_free_soup_its_members_statistics(data):
    """Independent starts trained apart: the plain uniform soup has collapsed units;
    with ``repair`` its validation loss is lower, and its reported metrics are what
    ``evaluate`` gives for it."""
    pop = gdl.init_population(jax.random.key(1), gdl.MLPSpec((32, 32)), data, 3, "adam",
                              {"learning_rate": 1e-2})
    pop = gdl.train(pop, data, 4, batch_size=32)[0]
    plain = gdl.soups(pop, data, batch_size=32)
    fixed = gdl.soups(pop, data, batch_size=32, repair=True)
    assert fixed.uniform_metrics["loss"] < plain.uniform_metrics["loss"]
    assert _same(fixed.best.params, plain.best.params)  # a single member is not repaired
    got = fixed.uniform.evaluate(data, "val")
    assert got["loss"] == pytest.approx(fixed.uniform_metrics["loss"], rel=1e-5)
