"""The examples/ scripts of three models written as flax's own examples (MNIST CNN, a
BatchNorm ResNet with skip connections, an embedding + LSTM on tokens): each derives its
permutation spec, evolves with per-neuron and aligned crossover, and its derived spec
keeps the trained network's function on real data."""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genetic_dl as gdl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ties(spec, path, axis):
    """The group of ``path``'s ``axis`` (``None``: not permuted)."""
    return spec.as_dict().get(path, (None,) * (axis + 1))[axis]


def _residual(spec):
    stem = _ties(spec, "params/Conv_0/kernel", 3)
    assert stem is not None
    for block in ("Block_0", "Block_1"):  # both ends of each skip connection: one group
        assert _ties(spec, f"params/{block}/Conv_1/kernel", 3) == stem
        assert _ties(spec, f"batch_stats/{block}/BatchNorm_1/mean", 0) == stem
        assert _ties(spec, f"params/{block}/Conv_0/kernel", 3) not in (None, stem)


def _cnn(spec):
    conv = _ties(spec, "params/Conv_1/kernel", 3)
    assert conv is not None and _ties(spec, "params/Dense_0/kernel", 0) == conv  # flattened


def _tokens(spec):
    feature = _ties(spec, "params/Embed_0/embedding", 1)
    hidden = _ties(spec, "params/Dense_0/kernel", 0)
    assert None not in (feature, hidden) and feature != hidden
    assert _ties(spec, "params/Embed_0/embedding", 0) is None  # rows: indexed by tokens
    assert _ties(spec, "params/LSTMCell_0/ii/kernel", 0) == feature
    for gate in "ifgo":  # the gates' units and the carried state: one group
        assert _ties(spec, f"params/LSTMCell_0/h{gate}/kernel", 0) == hidden
        assert _ties(spec, f"params/LSTMCell_0/h{gate}/kernel", 1) == hidden


@pytest.mark.parametrize("name, check", [("mnist_cnn", _cnn), ("resnet_bn", _residual),
                                         ("token_lstm", _tokens)])
def test_an_example_model_evolves_with_unit_moving_crossovers_on_a_derived_spec(
        name, check, capsys):
    results = _example(name).main(["--quick"])
    printed = capsys.readouterr().out
    assert "units, tying" in printed and "aligned: best validation accuracy" in printed
    assert set(results) == {"per_neuron", "aligned"}
    for result in results.values():
        assert np.isfinite(result.best_fitness)
        assert any(a != b for _, _, a, b in result.lineage)  # children of two parents
    pop = results["aligned"].population
    spec = gdl.permutation.spec_of(pop)
    check(spec)
    # the trained member, permuted at random by the derived spec, computes the same outputs
    variables = {**pop.member(0), **jax.tree_util.tree_map(lambda v: v[0], pop.collections)}
    sizes = gdl.permutation.group_sizes(spec, variables)
    keys = jax.random.split(jax.random.key(5), len(sizes))
    perms = {g: jax.random.permutation(k, n) for k, (g, n) in zip(keys, sorted(sizes.items()))}
    moved = gdl.permutation.permute(variables, spec, perms)
    data = _example(name).dataset() if name == "token_lstm" else gdl.load_dataset("digits")
    x = jnp.asarray(data.model_inputs(data.x_val[:64]))
    hp = jax.tree_util.tree_map(lambda v: v[0], pop.hparams)

    def outputs(v):
        rest = {k: v[k] for k in v if k != "params"}
        return np.asarray(pop.learner.apply_eval({"params": v["params"]}, rest, x, hp))
    assert not np.allclose(moved["params"]["Dense_0"]["kernel"],
                           variables["params"]["Dense_0"]["kernel"])
    np.testing.assert_allclose(outputs(moved), outputs(variables), rtol=1e-4, atol=1e-4)


def test_the_recombination_example_pulls_its_members_into_one_network_and_soups_it(capsys):
    results, tests, soups = _example("recombination").main(["--quick", "--rate", "1"])
    printed = capsys.readouterr().out
    assert f"soups of the pull run: chose {soups.chosen_name}" in printed
    assert set(tests) == {"pull", "none"} and all(0 <= a <= 1 for a in tests.values())
    assert [r.history[-1]["network_epochs"] for r in results.values()] == [8, 8]  # equal compute

    def one_network(pop):
        return all(np.array_equal(x, np.broadcast_to(x[0], x.shape))
                   for x in jax.tree_util.tree_leaves(pop.params))
    # a full pull after the last epoch leaves every member the mean, so every soup is it
    assert one_network(results["pull"].population) and not one_network(results["none"].population)
    assert soups.fitness["uniform"] == soups.fitness["best"] == soups.fitness["greedy"]
    for x, y in zip(jax.tree_util.tree_leaves(soups.uniform.params),
                    jax.tree_util.tree_leaves(results["pull"].population.params)):
        np.testing.assert_allclose(x, y[0], rtol=1e-6, atol=1e-7)
    # the soup's reported validation accuracy is what gdl.evaluate measures of it
    measured = gdl.evaluate(soups.chosen.population(), gdl.load_dataset("digits"), "val")
    assert soups.chosen_metrics["accuracy"] == pytest.approx(float(measured["accuracy"][0]))
