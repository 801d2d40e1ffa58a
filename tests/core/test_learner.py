"""The open engine: a user's own flax module, loss, metrics and optax optimizer."""
import dataclasses
import importlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.weights.rules.ga import ga_step

train_mod = importlib.import_module("genetic_dl.core.train")


class Block(nn.Module):
    """A residual block: conv -> BatchNorm -> relu, added to its input."""
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.features, (3, 3), use_bias=False)(x)  # BatchNorm centres
        y = nn.BatchNorm(use_running_average=not train)(y)
        return x + nn.relu(y)


class Net(nn.Module):
    """A small CNN with BatchNorm, a residual block and dropout."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(8, (3, 3), use_bias=False)(x[..., None])
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = Block(8)(x, train)
        x = nn.Dropout(0.1, deterministic=not train)(x.mean(axis=(1, 2)))
        return nn.Dense(10)(x)


def smoothed_xent(logits, batch):
    labels = optax.smooth_labels(jax.nn.one_hot(batch["y"], 10), 0.1)
    return optax.softmax_cross_entropy(logits, labels).mean()


def top2(logits, batch):
    top = jnp.argsort(logits, -1)[:, -2:]
    return jnp.mean(jnp.any(top == batch["y"][:, None], -1))


SCHEDULE = optax.warmup_cosine_decay_schedule(0.0, 1.0, 5, 200)
TOP2_CHANCE = 2 / 10  # top-2 accuracy of a guess among digits' 10 classes


def clipped_adamw(hp):
    return optax.chain(optax.clip_by_global_norm(hp["clip"]),
                       optax.adamw(lambda step: hp["peak_lr"] * SCHEDULE(step),
                                   weight_decay=1e-4))


LEARNER = gdl.Learner.from_linen(Net(), loss=smoothed_xent, metrics={"top2": top2},
                                 train_kwargs={"train": True}, eval_kwargs={"train": False},
                                 mutable=("batch_stats",))


@pytest.fixture(scope="module")
def data(digits):
    return gdl.Dataset.from_arrays(x_train=digits.x_train[:256], y_train=digits.y_train[:256],
                                   x_val=digits.x_val[:128], y_val=digits.y_val[:128],
                                   x_test=digits.x_test[:64], y_test=digits.y_test[:64])


def _pop(data, peak_lr, seed=0):
    return gdl.init_population(jax.random.key(seed), LEARNER, data, len(peak_lr),
                               optimizer=clipped_adamw,
                               hparams={"peak_lr": np.asarray(peak_lr), "clip": 1.0})


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                    jax.tree_util.tree_leaves(b)))


def test_user_model_trains_updates_batch_stats_and_reports_its_metrics(data):
    pop = _pop(data, [3e-3, 1e-2])
    assert set(pop.collections) == {"batch_stats"} and pop.spec is None
    trained, hist = gdl.train(pop, data, 2, batch_size=32)
    assert np.all(np.isfinite(np.asarray(hist["train_loss"])))
    assert not _leaves_equal(pop.collections, trained.collections)  # running statistics moved
    metrics = gdl.evaluate(trained, data, "val")
    assert set(metrics) == {"loss", "top2"}
    # val_score is the learner's score metric (top2), evaluated with running averages
    np.testing.assert_allclose(np.asarray(hist["val_score"])[:, -1], metrics["top2"], atol=1e-6)
    losses = np.asarray(hist["train_loss"])
    assert np.all(losses[:, -1] < losses[:, 0])  # the clipped, scheduled AdamW learns


def test_member_results_do_not_depend_on_the_population_or_a_diverging_neighbour(data):
    diverging, _ = gdl.train(_pop(data, [3e-3, 1e-2, 1e9, 1e-3]), data, 1, batch_size=32)
    calm, _ = gdl.train(_pop(data, [3e-3, 1e-2, 1e-3, 1e-3]), data, 1, batch_size=32)
    two, _ = gdl.train(_pop(data, [3e-3, 1e-2]), data, 1, batch_size=32)
    assert np.array_equal(diverging.failed, [False, False, True, False])
    for field in ("params", "collections", "opt_state"):
        first = jax.tree_util.tree_map(lambda x: x[:2], getattr(diverging, field))
        # bit-identical beside a NaN member; to float tolerance in another population
        # size (a vmapped conv's code depends on how many members a device holds)
        assert _leaves_equal(first, jax.tree_util.tree_map(lambda x: x[:2],
                                                           getattr(calm, field)))
        for x, y in zip(jax.tree_util.tree_leaves(first),
                        jax.tree_util.tree_leaves(getattr(two, field))):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_changing_traced_optimizer_hparams_never_recompiles(data):
    gdl.train(_pop(data, [3e-3, 1e-2]), data, 1, batch_size=32)
    size = train_mod._train._cache_size()  # pylint: disable=protected-access
    pop = _pop(data, [5e-4, 2e-2]).replace(hparams={"peak_lr": jnp.array([5e-4, 2e-2]),
                                                    "clip": jnp.array([0.5, 2.0])})
    gdl.train(pop, data, 1, batch_size=32)
    assert train_mod._train._cache_size() == size  # pylint: disable=protected-access


def test_evolve_weights_on_a_user_metric_with_ga_and_pbt(data):
    pop, _ = gdl.train(_pop(data, [1e-3, 3e-3, 1e-2, 3e-2]), data, 1, batch_size=32)
    fit = gdl.fitness_from_metrics(gdl.evaluate(pop, data), "top2", pop.failed,
                                   LEARNER.maximize("top2"))
    new, parents = ga_step(jax.random.key(0), pop, fit, 0, gdl.WeightGAConfig())
    rows = np.asarray(parents)[:, 0]
    # children's BatchNorm statistics are their first parent's, never crossed or mutated
    assert _leaves_equal(new.collections,
                         jax.tree_util.tree_map(lambda x: x[rows], pop.collections))
    for rule, crossover in (("ga", "uniform"), ("pbt", "uniform"), ("ga", "aligned")):
        config = gdl.WeightGAConfig(rule=rule, crossover=crossover,
                                    pbt_bounds=(("peak_lr", (1e-4, 1e-1)),))
        res = gdl.evolve_weights(jax.random.key(1), pop.replace(learner=SPEC_LEARNER), data,
                                 generations=2, epochs=1, batch_size=32, config=config,
                                 fitness="top2")
        best = max(h["best"] for h in res.history)
        assert res.best_fitness == best and 0.0 < best <= 1.0  # maximised, not negated
        lr = np.asarray(res.population.hparams["peak_lr"])
        assert np.all((lr >= 1e-4) & (lr <= 1e-1))


def test_metric_directions():
    assert not gdl.metric(lambda o, b: 0.0, name="val_error").maximize
    assert gdl.metric(top2).maximize
    learner = gdl.Learner.from_linen(Net(), loss=smoothed_xent,
                                     metrics={"ece": gdl.metric(top2, maximize=False)})
    assert not learner.maximize("ece") and not learner.maximize("loss")
    values = {"ece": jnp.array([0.1, 0.3])}
    np.testing.assert_allclose(gdl.fitness_from_metrics(values, "ece",
                                                        maximize=learner.maximize("ece")),
                               [-0.1, -0.3])


def test_bad_user_input_is_a_clear_value_error(data):
    with pytest.raises(ValueError, match="'clip'"):
        gdl.init_population(jax.random.key(0), LEARNER, data, 2, optimizer=clipped_adamw,
                            hparams={"peak_lr": 1e-3})
    per_example = gdl.Learner.from_linen(
        Net(), loss=lambda out, batch: optax.softmax_cross_entropy_with_integer_labels(
            out, batch["y"]), train_kwargs={"train": True}, eval_kwargs={"train": False},
        mutable=("batch_stats",))
    with pytest.raises(ValueError, match="scalar"):
        gdl.init_population(jax.random.key(0), per_example, data, 2)
    wrong_width = gdl.Learner.from_linen(nn.Dense(3), loss=smoothed_xent)
    with pytest.raises(ValueError, match="do not fit"):
        gdl.init_population(jax.random.key(0), wrong_width, data, 2)
    with pytest.raises(ValueError, match="Learner.from_linen"):
        gdl.init_population(jax.random.key(0), Net(), data, 2)


def _residual_spec():
    """The test Net's explicit spec: the skip connection ties the block's channels
    to the first conv's, so every hidden axis is one group."""
    conv, bn, block = "params/Conv_0", "params/BatchNorm_0", "params/Block_0"
    spec = {f"{conv}/kernel": (None, None, None, "C"), f"{block}/Conv_0/kernel": (None, None, "C", "C"),
            "params/Dense_0/kernel": ("C", None), "params/Dense_0/bias": (None,)}
    for norm in (bn, f"{block}/BatchNorm_0"):
        stats = norm.replace("params/", "batch_stats/")
        spec.update({f"{norm}/scale": ("C",), f"{norm}/bias": ("C",),
                     f"{stats}/mean": ("C",), f"{stats}/var": ("C",)})
    return spec


SPEC_LEARNER = dataclasses.replace(LEARNER, permutation_spec=gdl.PermutationSpec.of(
    _residual_spec()))


def _variables(pop, i):
    return {**pop.member(i), **jax.tree_util.tree_map(lambda c: c[i], pop.collections)}


def _eval(pop, variables, x):
    return pop.learner.apply_eval({"params": variables["params"]},
                                  {"batch_stats": variables["batch_stats"]}, x, {})


def _partition(spec):
    return {frozenset(spec.occurrences(g)) for g in spec.groups}


def test_permutation_spec_preserves_a_residual_bn_network_and_is_derived_from_it(data):
    pop, _ = gdl.train(_pop(data, [1e-2, 1e-2]), data, 1, batch_size=32)  # real statistics
    v = _variables(pop, 0)
    perms = {"C": jax.random.permutation(jax.random.key(5), 8)}
    moved = gdl.permutation.permute(v, SPEC_LEARNER.permutation_spec, perms)
    x = jnp.asarray(data.x_val[:32])
    assert not np.allclose(moved["params"]["Conv_0"]["kernel"], v["params"]["Conv_0"]["kernel"])
    np.testing.assert_allclose(_eval(pop, moved, x), _eval(pop, v, x), rtol=1e-5, atol=1e-5)
    # derived from the traced computation: the hand-written groups, whatever their names
    assert _partition(gdl.permutation.spec_of(pop)) == _partition(SPEC_LEARNER.permutation_spec)
    # a wrong explicit spec is caught by the same permuted forward pass
    bad = dict(_residual_spec(), **{"params/Block_0/Conv_0/kernel": (None, None, "C", None)})
    bad_pop = pop.replace(learner=dataclasses.replace(
        LEARNER, permutation_spec=gdl.PermutationSpec.of(bad)))
    with pytest.raises(ValueError, match="does not preserve"):
        gdl.evolve_weights(jax.random.key(1), bad_pop, data, generations=2, epochs=1,
                           batch_size=32, config=gdl.WeightGAConfig(crossover="aligned"))


@pytest.mark.parametrize("spec, message", [
    ({"params/Conv_9/kernel": (None, None, None, "C")}, "does not have"),
    ({"params/Conv_0/kernel": ("C",)}, "1 axes for a variable of shape"),
    ({"params/Conv_0/kernel": (None, None, None, "C"), "params/Dense_0/bias": ("C",)},
     "cannot hold group"),
])
def test_a_spec_that_does_not_match_the_params_is_a_clear_error(data, spec, message):
    pop = _pop(data, [1e-3, 1e-3]).replace(learner=dataclasses.replace(
        LEARNER, permutation_spec=gdl.PermutationSpec.of(spec)))
    with pytest.raises(ValueError, match=message):
        gdl.permutation.spec_of(pop)


def test_per_neuron_children_take_each_unit_whole_with_its_statistics(data):
    pop, _ = gdl.train(_pop(data, [1e-2, 3e-2]), data, 1, batch_size=32)
    spec = SPEC_LEARNER.permutation_spec
    a, b = _variables(pop, 0), _variables(pop, 1)
    child = gdl.permutation.per_neuron(jax.random.key(3), a, b, spec)
    flat_a, flat_b, flat_c = (gdl.permutation.flatten(t) for t in (a, b, child))
    from_b = np.all(flat_c["params/Conv_0/kernel"] == flat_b["params/Conv_0/kernel"],
                    axis=(0, 1, 2))
    assert 0 < from_b.sum() < 8  # both parents contribute units
    for path, axes in spec.axes:
        last = max(i for i, g in enumerate(axes) if g is not None) if any(axes) else None
        if last is None:
            np.testing.assert_array_equal(flat_c[path], flat_a[path])
            continue
        want = np.where(np.expand_dims(from_b, tuple(range(1, flat_c[path].ndim))),
                        np.moveaxis(flat_b[path], last, 0), np.moveaxis(flat_a[path], last, 0))
        np.testing.assert_array_equal(np.moveaxis(flat_c[path], last, 0), want, err_msg=path)


@pytest.mark.parametrize("crossover_kw", [(("base", "per_neuron"),),
                                          (("base", "uniform"), ("match_to", "best"))])
def test_aligned_crossover_of_permuted_twins_keeps_their_function(data, crossover_kw):
    """Member 1 is member 0 with its channels shuffled: aligned crossover must undo
    the shuffle, so every child (no mutation) computes member 0's function."""
    pop, _ = gdl.train(_pop(data, [1e-2, 1e-2]), data, 1, batch_size=32)
    pop = pop.replace(learner=SPEC_LEARNER)
    v = _variables(pop, 0)
    twin = jax.jit(gdl.permutation.permute, static_argnums=1)(
        v, SPEC_LEARNER.permutation_spec, {"C": jax.random.permutation(jax.random.key(7), 8)})
    stacked = jax.tree_util.tree_map(lambda x, y: jnp.stack([x, y]), v, twin)
    pop = pop.replace(params={"params": stacked["params"]},
                      collections={"batch_stats": stacked["batch_stats"]})
    x = jnp.asarray(data.x_val[:32])
    want = _eval(pop, v, x)
    np.testing.assert_allclose(_eval(pop, twin, x), want, rtol=1e-5, atol=1e-5)
    config = gdl.WeightGAConfig(crossover="aligned", crossover_kw=crossover_kw,
                                mutation_rate=0.0, elitism=0, distinct_parents=True)
    new, parents = ga_step(jax.random.key(0), pop, jnp.asarray([0.9, 0.8]), 0, config)
    assert set(np.asarray(parents).ravel().tolist()) == {0, 1}
    for i in range(new.size):
        np.testing.assert_allclose(_eval(new, _variables(new, i), x), want, rtol=1e-4,
                                   atol=1e-4)


def test_dataset_from_arrays_keeps_labels_and_features_as_given():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    soft = rng.dirichlet(np.ones(4), size=20).astype(np.float32)
    d = gdl.Dataset.from_arrays(x_train=x[:12], y_train=soft[:12], x_val=x[12:], y_val=soft[12:])
    assert np.array_equal(d.x_train, x[:12]) and d.y_val.shape == (8, 4) and d.out_dim == 4
    with pytest.raises(ValueError, match="no test split"):
        d.split("test")
    with pytest.raises(ValueError, match="one label per example"):
        gdl.Dataset.from_arrays(x_train=x, y_train=soft[:5], x_val=x, y_val=soft)


def test_custom_model_example_runs_and_learns():
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    from conftest import ROOT  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "custom_model.py")],
                          capture_output=True, text=True, timeout=900, check=False,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = float(proc.stdout.split("best validation accuracy ")[1].split()[0])
    assert best > 0.8  # digits: a CNN from 8 members after 8 epochs


def test_resume_of_a_user_model_run_is_bit_identical(data, tmp_path):
    from genetic_dl.app import checkpoint  # pylint: disable=import-outside-toplevel
    pop = _pop(data, [1e-3, 3e-3, 1e-2, 3e-2])
    kw = dict(generations=3, epochs=1, batch_size=32, fitness="top2")
    full = gdl.evolve_weights(jax.random.key(1), pop, data, **kw)
    saved = []

    def save(state):
        if state.generation == 1:
            saved.append(checkpoint.save(str(tmp_path), state, {}))
    gdl.evolve_weights(jax.random.key(1), pop, data, **dict(kw, generations=2), on_state=save)
    state, _ = checkpoint.load(saved[0], pop)
    resumed = gdl.evolve_weights(jax.random.key(1), pop, data, **kw, resume=state)
    assert resumed.best_fitness == full.best_fitness
    for field in ("params", "collections", "opt_state"):
        assert _leaves_equal(getattr(resumed.population, field), getattr(full.population, field))


class Wide(nn.Module):
    """An MLP whose width is a search gene."""
    width: int

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))
        return nn.Dense(10)(nn.Dropout(0.1, deterministic=not train)(x))


def _build(config):
    return (gdl.Learner.from_linen(Wide(int(config["width"])), loss=smoothed_xent,
                                   metrics={"top2": top2}, train_kwargs={"train": True},
                                   eval_kwargs={"train": False}), clipped_adamw)


def test_outer_search_over_a_user_model_family(data):
    space = gdl.space({"peak_lr": gdl.Float(1e-3, 3e-2, log=True), "clip": gdl.Float(0.5, 2.0),
                       "width": gdl.Choice((8, 32)), "epochs": gdl.Choice((1, 2)),
                       "batch_size": gdl.Choice((32,))})
    objective = gdl.TrainerObjective(data, metric="top2", build=_build)
    result = gdl.run_search("random", space, objective, 12, 0)
    fits = [e["fitness"] for e in result.evaluations]
    assert result.best_fitness == max(fits) <= 1  # top2 maximised
    assert result.best_fitness > 3 * TOP2_CHANCE  # trained, not a guess (digits: ~0.84)
    assert objective.groups_trained <= 2 * len(result.history)  # one group per width and round
    test = objective.test_metrics()
    assert set(test) == {"loss", "top2"} and test["top2"] > 2.5 * TOP2_CHANCE
    restored = gdl.TrainerObjective(data, metric="top2", build=_build)
    restored.load_state_dict(objective.state_dict())
    assert restored.test_metrics() == test
    with pytest.raises(ValueError, match="zoo's configs only"):
        gdl.TrainerObjective(data, build=_build, lamarckian=True)


def _nnx_mlp(rngs):
    from flax import nnx  # pylint: disable=import-outside-toplevel

    class MLP(nnx.Module):  # pylint: disable=too-few-public-methods
        def __init__(self, rngs):
            self.dense = nnx.Linear(64, 32, rngs=rngs)
            self.norm = nnx.BatchNorm(32, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)
            self.out = nnx.Linear(32, 10, rngs=rngs)

        def __call__(self, x):
            x = self.norm(self.dense(x.reshape((x.shape[0], -1))))
            return self.out(self.drop(nnx.relu(x)))
    return MLP(rngs)


NNX_LEARNER = gdl.Learner.from_nnx(_nnx_mlp, loss=smoothed_xent, metrics={"top2": top2})


def test_nnx_model_trains_evolves_and_streams(data):
    pop = gdl.init_population(jax.random.key(0), NNX_LEARNER, data, 3, optimizer=clipped_adamw,
                              hparams={"peak_lr": np.array([3e-3, 1e-2, 3e-2]), "clip": 1.0})
    kernels = np.asarray(pop.params["params"]["dense"]["kernel"])
    assert kernels.shape == (3, 64, 32) and not np.allclose(kernels[0], kernels[1])
    assert set(pop.collections) == {"batch_stats"}
    trained, hist = gdl.train(pop, data, 2, batch_size=32)
    losses = np.asarray(hist["train_loss"])
    assert np.all(losses[:, 1] < losses[:, 0])
    assert not _leaves_equal(trained.collections, pop.collections)
    # evaluation runs in eval mode: deterministic, with the running statistics
    first, again = gdl.evaluate(trained, data), gdl.evaluate(trained, data)
    np.testing.assert_array_equal(first["loss"], again["loss"])
    res = gdl.evolve_weights(jax.random.key(1), pop, data, generations=2, epochs=1,
                             batch_size=32, fitness="top2")
    assert 0 < res.best_fitness <= 1
    stream = gdl.Stream(lambda epoch, seed: iter([{"x": data.x_train[i:i + 32],
                                                   "y": data.y_train[i:i + 32]}
                                                  for i in range(0, 256, 32)]),
                        val={"x": data.x_val, "y": data.y_val})
    streamed, _ = gdl.train(pop, stream, 1)
    assert np.all(np.isfinite(np.asarray(gdl.evaluate(streamed, stream)["loss"])))
    # the derived spec (Linear -> BatchNorm -> Linear) keeps the function: aligned crossover on a
    # stream, the statistics moving with their units
    spec = gdl.permutation.spec_of(pop)
    assert spec.as_dict()["batch_stats/norm/var"] == ("P0",)
    res = gdl.evolve_weights(jax.random.key(2), pop, stream, generations=2, epochs=1,
                             fitness="top2", config=gdl.WeightGAConfig(
                                 crossover="aligned", crossover_kw=(("base", "per_neuron"),)))
    assert 0 < res.best_fitness <= 1 and len(res.lineage) == 2


def test_outer_search_over_an_nnx_model_keeps_its_best_with_statistics(data):
    space = gdl.space({"peak_lr": gdl.Float(1e-3, 3e-2, log=True), "clip": gdl.Float(0.5, 2.0),
                       "epochs": gdl.Choice((1, 2)), "batch_size": gdl.Choice((32,))})
    objective = gdl.TrainerObjective(data, metric="top2",
                                     build=lambda config: (NNX_LEARNER, clipped_adamw))
    result = gdl.run_search("random", space, objective, 6, 1)
    assert objective.groups_trained <= len(result.history)  # one learner: one group per round
    best = objective.trained()
    assert best["fitness"] == result.best_fitness == max(e["fitness"] for e in result.evaluations)
    assert 3 * TOP2_CHANCE < best["fitness"] <= 1  # trained, not a guess (digits: ~0.89)
    assert set(best["params"]["collections"]) == {"batch_stats"}  # statistics kept with it
    # the kept parameters and running statistics are the trained ones: the test split agrees
    assert objective.test_metrics()["top2"] > 2.5 * TOP2_CHANCE


def test_save_and_load_a_user_population(data, tmp_path):
    trained, _ = gdl.train(_pop(data, [3e-3, 1e-2]), data, 1, batch_size=32)
    path = gdl.save_population(str(tmp_path / "pop.msgpack"), trained)
    loaded = gdl.load_population(path, LEARNER, optimizer=clipped_adamw)
    for field in ("params", "collections", "opt_state", "hparams", "keys", "ids"):
        assert _leaves_equal(getattr(loaded, field), getattr(trained, field))
    np.testing.assert_array_equal(gdl.evaluate(loaded, data)["top2"],
                                  gdl.evaluate(trained, data)["top2"])
    with pytest.raises(ValueError, match="optimizer=fn"):
        gdl.load_population(path, LEARNER)
    with pytest.raises(ValueError, match="does not fit"):
        gdl.load_population(path, NNX_LEARNER, optimizer=clipped_adamw)
    (tmp_path / "bad.msgpack").write_bytes(b"not a population")
    with pytest.raises(ValueError, match="unreadable"):
        gdl.load_population(str(tmp_path / "bad.msgpack"), LEARNER, optimizer=clipped_adamw)


@pytest.mark.parametrize("spec", [gdl.CNNSpec((4, 8)), gdl.MLPSpec((32,))])
def test_minibatched_evaluation_equals_whole_split(digits, spec, monkeypatch):
    pop, hist = gdl.train(gdl.init_population(jax.random.key(0), spec, digits, 3), digits, 1)
    whole = gdl.evaluate(pop, digits, "val")  # 360 rows: one batch
    whole_out = gdl.predict(pop, digits.x_val)
    monkeypatch.setattr(train_mod, "EVAL_BATCH", 64)  # 6 batches, the last one padded
    jax.clear_caches()
    batched = gdl.evaluate(pop, digits, "val")
    _, batched_hist = gdl.train(gdl.init_population(jax.random.key(0), spec, digits, 3),
                                digits, 1)
    jax.clear_caches()
    for k in whole:
        np.testing.assert_allclose(batched[k], whole[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched_hist["val_loss"], hist["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(gdl.predict(pop, digits.x_val[:5]).shape, (3, 5, 10))
    # splits longer than HOST_CHUNK rows go to the devices one chunk at a time
    monkeypatch.setattr(train_mod, "HOST_CHUNK", 100)  # 4 chunks, the last one short
    chunked = gdl.evaluate(pop, digits, "val")
    for k in whole:
        np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gdl.predict(pop, digits.x_val), whole_out, rtol=1e-5, atol=1e-5)


USER_RUN = r"""
import json, os, sys
sys.path.insert(0, os.path.join(os.environ["PYTHONPATH"].split(os.pathsep)[0], "tests", "core"))
import jax, numpy as np
import genetic_dl as gdl
from test_learner import SPEC_LEARNER, clipped_adamw
raw = gdl.load_dataset("digits")
data = gdl.Dataset.from_arrays(x_train=raw.x_train[:256], y_train=raw.y_train[:256],
                               x_val=raw.x_val[:128], y_val=raw.y_val[:128])
pop = gdl.init_population(jax.random.key(0), SPEC_LEARNER, data, 4, optimizer=clipped_adamw,
                          hparams={"peak_lr": np.array([1e-3, 3e-3, 1e-2, 3e-2]), "clip": 1.0})
config = gdl.WeightGAConfig(crossover="aligned", crossover_kw=(("base", "per_neuron"),))
res = gdl.evolve_weights(jax.random.key(1), pop, data, generations=3, epochs=1, batch_size=32,
                         config=config, fitness="top2")
print(json.dumps({"devices": jax.device_count(), "best": res.best_fitness,
                  "history": [h["best"] for h in res.history], "lineage": res.lineage,
                  "stats": np.asarray(res.population.collections["batch_stats"]["BatchNorm_0"]
                                      ["var"]).tolist()}))
"""


def test_a_user_model_evolves_alike_on_one_and_two_devices():
    from conftest import run_python  # pylint: disable=import-outside-toplevel
    one, two = (json.loads(run_python(USER_RUN, devices=d).strip().splitlines()[-1])
                for d in (1, 2))
    assert (one["devices"], two["devices"]) == (1, 2)
    assert one["lineage"] == two["lineage"] and len(one["lineage"]) == 2 * 3
    np.testing.assert_allclose(one["history"], two["history"], rtol=1e-5)
    np.testing.assert_allclose(one["stats"], two["stats"], rtol=1e-4, atol=1e-6)
