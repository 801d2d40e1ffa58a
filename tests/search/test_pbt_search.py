"""Successive halving then PBT over widths and hyperparameters (pbt_search)."""
import jax
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.search.pbt_search import PBTSearch, _fitness
from genetic_dl.core.train import split_metrics

OPTIONS = {"widths": (4, 8), "population": 4, "start": 16, "rung_epochs": 2, "ready": 2,
           "batch_size": 16}
BOUNDS = {"learning_rate": (1e-3, 3e-2), "weight_decay": (1e-6, 1e-3), "dropout": (0.0, 0.3)}


@pytest.fixture(scope="module")
def searched(iris):
    return gdl.pbt_search(jax.random.key(0), iris, 100, bounds=tuple(BOUNDS.items()), **OPTIONS)


def test_budget_is_the_rungs_plus_the_pbt_generations(searched):
    halving = [h for h in searched.history if h["phase"] == "halving"]
    pbt = [h for h in searched.history if h["phase"] == "pbt"]
    assert [h["members"] for h in halving] == [16, 8]
    assert [h["network_epochs"] for h in halving] == [32, 48]
    assert len(pbt) == (100 - 48) // (4 * 2) and all(h["members"] == 4 for h in pbt)
    assert [h["network_epochs"] for h in pbt] == [48 + 8 * (g + 1) for g in range(len(pbt))]
    assert searched.network_epochs == pbt[-1]["network_epochs"] <= 100


def test_the_best_network_at_its_true_widths_scores_the_reported_fitness(searched, iris):
    assert set(searched.best_spec.hidden) <= {4, 8} and len(searched.best_spec.hidden) == 2
    model = gdl.build_model(searched.best_spec, iris.feature_shape, iris.out_dim)
    val = split_metrics(model, searched.best_params, iris, "val")["accuracy"]
    assert val == pytest.approx(searched.best_fitness, abs=1e-6)
    assert searched.best_fitness == max(h["best"] for h in searched.history)
    for name, value in searched.best_hparams.items():
        lo, hi = BOUNDS[name]
        assert lo * (1 - 1e-6) <= value <= hi * (1 + 1e-6), name


def test_a_seeded_search_repeats_exactly(searched, iris):
    again = gdl.pbt_search(jax.random.key(0), iris, 100, bounds=tuple(BOUNDS.items()), **OPTIONS)
    assert again.best_fitness == searched.best_fitness and again.history == searched.history
    for x, y in zip(jax.tree_util.tree_leaves(again.best_params),
                    jax.tree_util.tree_leaves(searched.best_params)):
        np.testing.assert_array_equal(x, y)


def test_each_rung_keeps_the_better_half(iris):
    search = PBTSearch(bounds=tuple(BOUNDS.items()), **{**OPTIONS, "start": 8})
    pop = gdl.init_population(jax.random.key(1), search.spec(), iris, 8, "adam", {
        "widths": np.tile(np.array([[4, 8], [8, 4], [8, 8], [4, 4]], np.float32), (2, 1)),
        "learning_rate": np.geomspace(1e-4, 3e-2, 8).astype(np.float32),
        "dropout": np.zeros(8, np.float32)})
    survivors, best, history = search._halve(pop, iris)  # pylint: disable=protected-access
    trained, _ = gdl.train(pop, iris, 2, batch_size=16)
    fit = _fitness(trained, iris, "accuracy")
    assert len(set(fit.tolist())) > 2  # the rung separates the members
    top = np.argsort(-fit, kind="stable")[:4]
    assert sorted(np.asarray(survivors.ids).tolist()) == sorted(top.tolist())
    for x, y in zip(jax.tree_util.tree_leaves(survivors.params),
                    jax.tree_util.tree_leaves(trained.params)):  # survivors keep their weights
        np.testing.assert_array_equal(x, np.asarray(y)[np.asarray(survivors.ids)])
    assert best[0] == history[0]["best"] == fit.max()


@pytest.mark.parametrize("options, message", [
    ({"start": 12}, "power of two"), ({"population": 2, "start": 8}, "at least 4"),
    ({"bounds": (("momentum", (0.1, 0.9)),)}, "unknown bounds")])
def test_bad_options_say_what_to_change(options, message):
    with pytest.raises(ValueError, match=message):
        PBTSearch(**{**OPTIONS, **options})


def test_a_budget_below_the_rungs_is_refused(iris):
    with pytest.raises(ValueError, match="does not cover"):
        gdl.pbt_search(jax.random.key(0), iris, 40, **OPTIONS)


def test_a_pbt_phase_whose_members_all_fail_keeps_the_rungs_best(iris, monkeypatch):
    from genetic_dl.search import pbt_search as module
    real = module.evolve_weights

    def nan_fitness(*args, **kwargs):  # the real loop, every member's fitness NaN
        return real(*args, **dict(kwargs, fitness=lambda m: m["loss"] * np.nan))
    monkeypatch.setattr(module, "evolve_weights", nan_fitness)
    res = gdl.pbt_search(jax.random.key(0), iris, 100, bounds=tuple(BOUNDS.items()), **OPTIONS)
    halving = [h for h in res.history if h["phase"] == "halving"]
    assert res.best_fitness == max(h["best"] for h in halving) and np.isfinite(res.best_fitness)
    assert res.network_epochs == 48 + 4 * 2  # the rungs, then the one generation that failed
