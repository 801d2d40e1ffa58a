"""Population training: learning, determinism, member independence, failures, devices."""
from conftest import run_python
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

import genetic_dl as gdl
train_mod = importlib.import_module("genetic_dl.core.train")  # the package exports the function


def _tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("optimizer", sorted(gdl.OPTIMIZERS))
def test_every_optimizer_learns_digits(digits, optimizer):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((32,)), digits, 4,
                              optimizer=optimizer)
    pop, hist = gdl.train(pop, digits, 4)
    assert hist["val_loss"].shape == (4, 4)
    assert np.all(hist["val_loss"][:, -1] < hist["val_loss"][:, 0])
    assert np.all(hist["val_score"][:, -1] > 0.5)  # chance is 0.1
    assert not np.any(pop.failed)


@pytest.mark.parametrize("spec", [gdl.CNNSpec((8,), 3, "max", (16,)), gdl.RNNSpec("gru", 16)],
                         ids=["cnn", "rnn"])
def test_cnn_and_rnn_learn_better_than_chance(digits, spec):
    pop = gdl.init_population(jax.random.key(0), spec, digits, 2, hparams={"learning_rate": 3e-3})
    pop, _ = gdl.train(pop, digits, 3)
    assert np.all(gdl.evaluate(pop, digits)["accuracy"] > 0.3)


def test_regression_and_binary_auc(friedman, binary):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((32, 32)), friedman, 2)
    pop, _ = gdl.train(pop, friedman, 10, batch_size=32)
    m = gdl.evaluate(pop, friedman, "test")
    assert np.all(m["r2"] > 0.5) and set(m) == {"loss", "mse", "mae", "r2"}
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((32,)), binary, 2)
    pop, _ = gdl.train(pop, binary, 3)
    assert np.all(gdl.evaluate(pop, binary)["auc"] > 0.7)  # chance is 0.5


def test_evaluate_matches_sklearn_on_real_predictions(digits):
    pop = gdl.init_population(jax.random.key(1), gdl.MLPSpec((32,)), digits, 3)
    pop, _ = gdl.train(pop, digits, 2)
    m = gdl.evaluate(pop, digits, "test")
    logits = np.asarray(gdl.predict(pop, digits.x_test), np.float64)
    for i in range(3):
        pred = logits[i].argmax(-1)
        probs = np.exp(logits[i] - logits[i].max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        assert np.isclose(m["accuracy"][i], skm.accuracy_score(digits.y_test, pred))
        assert np.isclose(m["f1"][i], skm.f1_score(digits.y_test, pred, average="macro"),
                          atol=1e-6)
        assert np.isclose(m["auc"][i], skm.roc_auc_score(digits.y_test, probs, multi_class="ovr"),
                          atol=1e-5)


def test_same_seed_is_bit_identical(iris):
    def run():
        pop = gdl.init_population(jax.random.key(7), gdl.MLPSpec((16,), dropout=0.1), iris, 4)
        return gdl.train(pop, iris, 3, batch_size=16)
    (a, ha), (b, hb) = run(), run()
    assert _tree_equal(a.params, b.params) and _tree_equal(ha, hb)
    assert _tree_equal(a.keys, b.keys)
    c = gdl.init_population(jax.random.key(8), gdl.MLPSpec((16,), dropout=0.1), iris, 4)
    assert not _tree_equal(a.params, gdl.train(c, iris, 3, batch_size=16)[0].params)


def test_member_trained_alone_matches_member_in_population(digits):
    lrs = np.geomspace(1e-4, 1e-2, 8).astype(np.float32)
    pop = gdl.init_population(jax.random.key(3), gdl.MLPSpec((32,), dropout=0.2), digits, 8,
                              hparams={"learning_rate": lrs, "dropout": 0.2})
    trained, hist = gdl.train(pop, digits, 2)
    for i in (0, 5):
        alone, hist_alone = gdl.train(gdl.take(pop, [i]), digits, 2)
        for a, b in zip(jax.tree_util.tree_leaves(trained.member(i)),
                        jax.tree_util.tree_leaves(alone.member(0))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(hist["val_loss"][i], hist_alone["val_loss"][0], rtol=1e-4)
    # member i's network depends on (key, i) only, not on the population size
    small = gdl.init_population(jax.random.key(3), gdl.MLPSpec((32,), dropout=0.2), digits, 2)
    assert _tree_equal(small.member(1), pop.member(1))


def test_diverging_member_fails_alone(iris):
    def run(lr1):
        lrs = np.array([0.05, lr1, 0.05, 0.05], np.float32)
        pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16,)), iris, 4,
                                  optimizer="sgd", hparams={"learning_rate": lrs})
        pop, hist = gdl.train(pop, iris, 4, batch_size=16)
        return pop, hist, gdl.evaluate(pop, iris)
    bad, hist_bad, m_bad = run(1e3)
    good, hist_good, m_good = run(0.05)
    assert bad.failed.tolist() == [False, True, False, False]
    fit = gdl.fitness_from_metrics(m_bad, "accuracy", bad.failed)
    assert np.isnan(fit[1]) and np.all(np.isfinite(np.asarray(fit)[[0, 2, 3]]))
    keep = np.array([0, 2, 3])
    for a, b in zip(jax.tree_util.tree_leaves(bad.params), jax.tree_util.tree_leaves(good.params)):
        np.testing.assert_array_equal(np.asarray(a)[keep], np.asarray(b)[keep])
    for k in hist_bad:
        np.testing.assert_array_equal(np.asarray(hist_bad[k])[keep], np.asarray(hist_good[k])[keep])
    for k in m_bad:
        np.testing.assert_array_equal(np.asarray(m_bad[k])[keep], np.asarray(m_good[k])[keep])


def test_new_hyperparameter_values_do_not_recompile(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 2, optimizer="adamw")
    gdl.train(pop, iris, 1, batch_size=16)
    before = train_mod._train._cache_size()  # pylint: disable=protected-access
    for lr, wd, mom in [(1e-2, 0.1, 0.5), (3e-4, 0.0, 0.99)]:
        hp = dict(pop.hparams, learning_rate=jnp.full(2, lr), weight_decay=jnp.full(2, wd),
                  momentum=jnp.full(2, mom))
        gdl.train(pop.replace(hparams=hp), iris, 1, batch_size=16)
    assert train_mod._train._cache_size() == before  # pylint: disable=protected-access


def test_hyperparameters_change_the_result(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 2,
                              hparams={"learning_rate": np.array([1e-3, 1e-1], np.float32)})
    _, hist = gdl.train(pop, iris, 3, batch_size=16)
    assert hist["train_loss"][1, -1] < hist["train_loss"][0, -1]


@pytest.mark.parametrize("bad,message", [
    (dict(optimizer="lion"), "unknown optimizer"),
    (dict(hparams={"lr": 0.1}), "unknown hyperparameter"),
    (dict(hparams={"learning_rate": np.ones(3)}), "one value per member"),
    (dict(hparams={"dropout": 0.3}), "needs dropout layers"),
    (dict(hparams={"learning_rate": -1.0}), "positive"),
    (dict(size=0), "at least 1"),
])
def test_bad_population_arguments(iris, bad, message):
    kwargs = dict(size=2)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=message):
        gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, **kwargs)


def test_bad_train_arguments(iris, digits):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 2)
    with pytest.raises(ValueError, match="exceeds"):
        gdl.train(pop, iris, 1, batch_size=10_000)
    with pytest.raises(ValueError, match="build it from this dataset"):
        gdl.train(pop, digits, 1)
    with pytest.raises(ValueError, match="epochs"):
        gdl.train(pop, iris, 0)


MULTI_DEVICE = """
import jax, numpy as np, genetic_dl as gdl
from genetic_dl.core import sharding
from genetic_dl.weights import WeightGAConfig
from genetic_dl.weights.rules.ga import ga_step
assert jax.device_count() == 8, jax.devices()
d = gdl.load_dataset("iris")
cfg = WeightGAConfig(crossover="aligned", opt_state="average")  # greedy pairwise matching
for size in (6,):  # 6 divides 2 devices, not 4 or 8: padded, then trimmed
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((16,)), d, size,
                              hparams={"learning_rate": np.geomspace(1e-3, 1e-1, size)})
    b, hb = gdl.train(pop, d, 3, batch_size=16, mesh=None)
    mb = gdl.evaluate(b, d, mesh=None)
    for n in (2, 4, 8):  # meshes over the first n devices: results equal one device's
        mesh = gdl.population_mesh(jax.devices()[:n])
        a, ha = gdl.train(pop, d, 3, batch_size=16, mesh=mesh)
        assert a.size == size
        assert len(a.params["params"]["Dense_0"]["kernel"].sharding.device_set) == n  # padded
        for k in ha:
            np.testing.assert_allclose(ha[k], hb[k], rtol=1e-4, atol=1e-5)
        ma = gdl.evaluate(a, d, mesh=mesh)
        for k in ma:
            np.testing.assert_allclose(ma[k], mb[k], rtol=1e-4, atol=1e-5)
# the GA step on a sharded population equals the same step on one device
fit = gdl.fitness_from_metrics(gdl.evaluate(b, d, mesh=None))
pop8 = gdl.take(b, np.arange(6).tolist() + [0, 1])
fit8 = np.concatenate([np.asarray(fit), np.asarray(fit)[:2]])
scales8 = np.geomspace(0.05, 0.2, 8).astype(np.float32)
best = WeightGAConfig(crossover="aligned", crossover_kw=(("match_to", "best"),))
for cfg, counts in ((cfg, (8,)), (best, (4,)),  # one count each: CI time
                    (WeightGAConfig(crossover="per_neuron", opt_state="inherit", noise_table=True,
                                    self_adaptive=True, crossover_prob=0.5,
                                    distinct_parents=True), (2,))):
    one = ga_step(jax.random.key(1), jax.device_put(pop8, jax.devices()[0]), fit8, 0, cfg,
                  scales8)
    for n in counts:
        many = ga_step(jax.random.key(1), sharding.shard_members(
            pop8, gdl.population_mesh(jax.devices()[:n])), fit8, 0, cfg, scales8)
        assert len(jax.tree_util.tree_leaves(many[0].params)[0].sharding.device_set) == n
        for x, y in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(many)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
# members sliced from a sharded population align eagerly (exact matching runs on the host)
a, b, units = many[0].member(0), many[0].member(3), gdl.permutation.spec_of(many[0])
for x, y in zip(jax.tree_util.tree_leaves(gdl.matching.align(a, b, units, matcher="exact")),
                jax.tree_util.tree_leaves(gdl.matching.align(*jax.device_get((a, b)), units,
                                                              matcher="exact"))):
    np.testing.assert_array_equal(x, y)
print("ok")
"""


def test_devices_match_one_device():
    """1, 2, 4 and 8 devices (meshes over 8 forced host devices) give the same numbers."""
    assert run_python(MULTI_DEVICE, devices=8).strip().endswith("ok")


def test_training_in_member_chunks_equals_training_all_at_once(digits, monkeypatch):
    # On CPU members train in cache-sized chunks (lax.map over vmapped chunks) at
    # benchmark sizes; small test populations fit one chunk. Force both paths.
    from genetic_dl.core import sharding  # pylint: disable=import-outside-toplevel
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((64, 64)), digits, 8,
                              hparams={"learning_rate": np.geomspace(1e-3, 1e-2, 8)})
    per_member = sum(x[0].size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(
        (pop.params, pop.opt_state)) if x.ndim)
    results = {}
    for chunk in (8, 2, 1):
        jax.clear_caches()  # the chunk is fixed when the program is traced
        monkeypatch.setattr(sharding, "CHUNK_BYTES", chunk * per_member + 1)
        assert train_mod.chunk_members(pop, 8) == chunk
        results[chunk] = gdl.train(pop, digits, 2, batch_size=32)
    jax.clear_caches()
    for chunk in (2, 1):
        (trained, hist), (whole, whole_hist) = results[chunk], results[8]
        for x, y in zip(jax.tree_util.tree_leaves((trained.params, trained.opt_state, hist)),
                        jax.tree_util.tree_leaves((whole.params, whole.opt_state, whole_hist))):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)
    assert not _tree_equal(results[8][0].params, pop.params)  # it did train
