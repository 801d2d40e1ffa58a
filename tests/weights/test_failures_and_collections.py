"""What a run keeps of its members and when it stops: every collection of the best and
hall-of-fame members, and an all-failed generation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl


class BatchNormNet(nn.Module):
    """Dense + BatchNorm: its evaluation reads the running statistics."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
        return nn.Dense(10)(nn.relu(nn.BatchNorm(use_running_average=not train)(x)))


LEARNER = gdl.Learner.from_linen(
    BatchNormNet(), loss=lambda o, b: optax.softmax_cross_entropy_with_integer_labels(
        o, b["y"]).mean(),
    metrics={"accuracy": lambda o, b: jnp.mean(jnp.argmax(o, -1) == b["y"])},
    mutable=("batch_stats",), train_kwargs={"train": True}, eval_kwargs={"train": False})


@pytest.fixture(scope="module")
def data(digits):
    return gdl.Dataset.from_arrays(x_train=digits.x_train[:256], y_train=digits.y_train[:256],
                                   x_val=digits.x_val[:128], y_val=digits.y_val[:128],
                                   x_test=digits.x_test[:128], y_test=digits.y_test[:128])


def _same(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) > 0 and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_best_and_hall_of_fame_members_carry_their_batch_stats(data):
    pop = gdl.init_population(jax.random.key(0), LEARNER, data, 4, "adam",
                              {"learning_rate": np.geomspace(1e-3, 3e-2, 4)})
    seen = {}

    def keep(gen, population, _):
        seen[gen] = population
        return False
    res = gdl.evolve_weights(jax.random.key(1), pop, data, generations=3, epochs=1,
                             batch_size=32, fitness="accuracy", callbacks=[keep],
                             config=gdl.WeightGAConfig(hall_of_fame=3))
    kept = [(res.best_id, res.best_generation, res.best_params, res.best_collections,
             res.best_hparams)]
    kept += [(h["id"], h["generation"], h["params"], h["collections"], h["hparams"])
             for h in res.hall_of_fame]
    for member_id, gen, params, collections, hparams in kept:
        i = int(np.flatnonzero(np.asarray(seen[gen].ids) == member_id)[0])
        assert _same(params, jax.tree_util.tree_map(lambda x, i=i: x[i], seen[gen].params))
        assert _same(collections, jax.tree_util.tree_map(lambda x, i=i: x[i],
                                                         seen[gen].collections))
        assert float(hparams["learning_rate"]) == float(seen[gen].hparams["learning_rate"][i])
    assert set(res.best_collections) == {"batch_stats"}
    # the running statistics are what the score depends on: the best member with its own
    # scores its fitness, with the initial ones it does not
    best = res.best_member
    assert best.evaluate(data, "val")["accuracy"] == pytest.approx(res.best_fitness, abs=1e-6)
    initial = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], pop.collections)
    fresh = gdl.Member(best.params, initial, best.hparams, LEARNER, best.feature_shape,
                       best.out_dim)
    assert fresh.evaluate(data, "val")["loss"] != best.evaluate(data, "val")["loss"]


def test_a_generation_in_which_every_member_fails_stops_the_run_with_its_cause(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4, "sgd",
                              {"learning_rate": 1e9})
    with pytest.raises(gdl.AllMembersFailed) as err:
        gdl.evolve_weights(jax.random.key(1), pop, iris, generations=3, epochs=1, batch_size=16)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert message.startswith("generation 0: every member failed (4 of 4 diverged in training")
    assert "0 had non-finite validation metrics" in message and "lower the learning" in message
    assert (err.value.generation, err.value.diverged, err.value.non_finite) == (0, 4, 0)
    assert len(err.value.state.history) == 1 and err.value.state.history[0]["failed"] == 4


def test_non_finite_validation_metrics_are_counted_apart_from_divergence(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 3)
    with pytest.raises(gdl.AllMembersFailed, match=r"0 of 3 diverged .* 3 had non-finite"):
        gdl.evolve_weights(jax.random.key(1), pop, iris, generations=2, epochs=1,
                           batch_size=16, fitness=lambda m: m["loss"] * jnp.nan)


def test_one_diverging_member_is_ranked_last_and_the_run_goes_on(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4, "sgd",
                              {"learning_rate": [1e9, 0.1, 0.1, 0.1]})
    res = gdl.evolve_weights(jax.random.key(1), pop, iris, generations=2, epochs=1,
                             batch_size=16)
    assert len(res.history) == 2 and res.history[0]["failed"] == 1
    assert np.isnan(res.history[0]["member_fitness"][0]) and res.best_id != 0
    assert np.isfinite(res.best_fitness)
