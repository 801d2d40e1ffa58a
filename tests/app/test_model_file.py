"""gdl.save_model / gdl.load_model: a user's model with BatchNorm scores exactly what the
run measured; weight-GA checkpoints keep every collection and resume bit-identically."""
import dataclasses
import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization

import genetic_dl as gdl
from genetic_dl.app import checkpoint


class BatchNormNet(nn.Module):
    """Dense + BatchNorm + Dense: its evaluation reads the running statistics."""
    width: int = 16

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(self.width)(x.reshape((x.shape[0], -1)))
        return nn.Dense(10)(nn.relu(nn.BatchNorm(use_running_average=not train)(x)))


def _loss(outputs, batch):
    return optax.softmax_cross_entropy_with_integer_labels(outputs, batch["y"]).mean()


def _learner(width=16):
    return gdl.Learner.from_linen(
        BatchNormNet(width), loss=_loss,
        metrics={"accuracy": lambda o, b: jnp.mean(jnp.argmax(o, -1) == b["y"])},
        mutable=("batch_stats",), train_kwargs={"train": True}, eval_kwargs={"train": False})


LEARNER = _learner()


@pytest.fixture(scope="module")
def data(digits):
    return gdl.Dataset.from_arrays(x_train=digits.x_train[:256], y_train=digits.y_train[:256],
                                   x_val=digits.x_val[:128], y_val=digits.y_val[:128],
                                   x_test=digits.x_test[:128], y_test=digits.y_test[:128])


@pytest.fixture(scope="module")
def run(data):
    pop = gdl.init_population(jax.random.key(0), LEARNER, data, 4, "adam",
                              {"learning_rate": np.geomspace(1e-3, 3e-2, 4)})
    states = []
    res = gdl.evolve_weights(jax.random.key(1), pop, data, generations=3, epochs=1,
                             batch_size=32, fitness="accuracy", on_state=states.append)
    return pop, res, states


def _same(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) and np.asarray(x).dtype ==
                                      np.asarray(y).dtype for x, y in zip(la, lb))


def test_a_saved_user_model_scores_exactly_the_runs_best_member(run, data, tmp_path):
    _, res, _ = run
    # the reference: the library's evaluation of a one-member population of the best arrays
    one = gdl.take(res.population, np.array([0]))
    one = one.replace(params=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None],
                                                    res.best_params),
                      collections=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None],
                                                         res.best_collections),
                      hparams={k: jnp.asarray(v)[None] for k, v in res.best_hparams.items()})
    reference = {k: float(v[0]) for k, v in gdl.evaluate(one, data, "test").items()}
    path = gdl.save_model(str(tmp_path / "best.msgpack"), res)
    loaded = gdl.load_model(path, learner=LEARNER)
    assert isinstance(loaded, gdl.Member) and loaded.learner is LEARNER
    scored = loaded.evaluate(data, "test")
    assert scored["accuracy"] == reference["accuracy"] and scored == reference
    assert loaded.evaluate(data, "val")["accuracy"] == pytest.approx(res.best_fitness, abs=1e-6)
    assert _same(loaded.params, res.best_params)
    assert _same(loaded.collections, res.best_collections)
    assert set(loaded.collections) == {"batch_stats"}
    assert {k: float(v) for k, v in loaded.hparams.items()} == \
        {k: float(v) for k, v in res.best_hparams.items()}
    logits = loaded.predict(data.x_test)
    assert logits.shape == (128, 10)
    assert float(np.mean(logits.argmax(-1) == data.y_test)) == pytest.approx(
        scored["accuracy"], abs=1e-6)


def test_a_member_saves_too_and_a_zoo_model_loads_without_its_learner(iris, tmp_path):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 2)
    pop, _ = gdl.train(pop, iris, 2, batch_size=16)
    member = gdl.population_member(pop, 1)
    path = gdl.save_model(str(tmp_path / "zoo.msgpack"), member)
    loaded = gdl.load_model(path)
    assert loaded.learner.spec == pop.spec and _same(loaded.params, member.params)
    assert loaded.evaluate(iris, "test") == member.evaluate(iris, "test")


def test_a_user_model_without_its_learner_or_with_another_is_refused_in_one_line(run, tmp_path):
    path = gdl.save_model(str(tmp_path / "best.msgpack"), run[1])
    for call, message in (
            (lambda: gdl.load_model(path), "pass the learner it was trained with"),
            (lambda: gdl.load_model(path, learner=_learner(32)),
             "variable batch_stats/BatchNorm_0/mean is float32[16] in the file but "
             "float32[32] in the learner"),
            (lambda: gdl.load_model(str(tmp_path / "none.msgpack"), learner=LEARNER),
             "no model file"),
            (lambda: gdl.save_model(str(tmp_path), run[1]), "is a folder")):
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            call()
        assert "\n" not in str(err.value)
    (tmp_path / "garbage.msgpack").write_bytes(b"\x00garbage")
    (tmp_path / "other.msgpack").write_bytes(serialization.msgpack_serialize(
        {"meta": json.dumps({"kind": "something else"})}))
    for name in ("garbage.msgpack", "other.msgpack"):
        with pytest.raises(ValueError, match="not a model file written by gdl.save_model"):
            gdl.load_model(str(tmp_path / name), learner=LEARNER)


def test_a_checkpoint_keeps_every_collection_and_resumes_bit_identically(run, data, tmp_path):
    pop, full, states = run
    path = checkpoint.save(str(tmp_path), states[0], {"seed": 1})
    loaded, _ = checkpoint.load(path, pop)
    for key in ("params", "collections", "hparams"):
        assert _same(loaded.best[key], states[0].best[key]), key
        for a, b in zip(loaded.hall, states[0].hall):
            assert _same(a[key], b[key]), key
    assert loaded.best["collections"]["batch_stats"]
    resumed = gdl.evolve_weights(jax.random.key(9), pop, data, generations=3, epochs=1,
                                 batch_size=32, fitness="accuracy", resume=loaded)
    assert _same(resumed.best_collections, full.best_collections)
    assert _same(resumed.best_params, full.best_params)
    assert _same(resumed.population.collections, full.population.collections)
    assert resumed.hall_of_fame and all(h["collections"]["batch_stats"]
                                        for h in resumed.hall_of_fame)


def test_a_checkpoint_of_another_format_is_refused_in_one_line(run, tmp_path):
    pop, _, states = run
    path = checkpoint.save(str(tmp_path), states[0], {})
    with open(path, "rb") as f:
        tree = serialization.msgpack_restore(f.read())
    meta = json.loads(tree["meta"])
    tree["meta"] = json.dumps(dict(meta, format=2))
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(tree))
    with pytest.raises(ValueError, match="has format 2, this version reads format 3") as err:
        checkpoint.load(path, pop)
    assert "\n" not in str(err.value)
    bad = dataclasses.replace(states[0], best=dict(states[0].best, collections={}))
    with pytest.raises(ValueError, match="corrupt"):  # a member without its batch_stats
        checkpoint.load(checkpoint.save(str(tmp_path / "b"), bad, {}), pop)
