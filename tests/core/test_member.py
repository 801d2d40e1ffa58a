"""A member out of its population: its arrays, and scores equal to the population's."""
import dataclasses

import jax
import numpy as np
import pytest

import genetic_dl as gdl


@pytest.fixture(scope="module")
def trained(iris):
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 3, "adam",
                              {"learning_rate": [1e-3, 1e-2, 3e-2]})
    return gdl.train(pop, iris, 2, batch_size=16)[0]


def test_population_member_holds_its_arrays_on_the_host(trained):
    member = gdl.population_member(trained, 2)
    for a, b in zip(jax.tree_util.tree_leaves(member.params),
                    jax.tree_util.tree_leaves(trained.params)):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, np.asarray(b)[2])
    assert float(member.hparams["learning_rate"]) == pytest.approx(3e-2)
    assert member.learner is trained.learner and member.feature_shape == (4,)
    assert member.out_dim == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        member.params = {}


def test_a_member_scores_and_predicts_what_it_did_in_its_population(trained, iris):
    whole = gdl.evaluate(trained, iris, "test")
    outputs = np.asarray(gdl.predict(trained, iris.x_test))
    for i in range(trained.size):
        member = gdl.population_member(trained, i)
        alone = member.evaluate(iris, "test")
        assert set(alone) == set(whole)
        assert alone["accuracy"] == float(whole["accuracy"][i])
        assert alone["loss"] == pytest.approx(float(whole["loss"][i]), rel=1e-6)
        np.testing.assert_allclose(member.predict(iris.x_test), outputs[i], rtol=1e-5,
                                   atol=1e-6)
    assert len({gdl.population_member(trained, i).evaluate(iris, "test")["loss"]
                for i in range(3)}) == 3  # each member its own arrays


def test_a_member_refuses_features_of_another_shape_and_a_missing_learner(trained, iris):
    member = gdl.population_member(trained, 0)
    with pytest.raises(ValueError, match=r"features of shape \(5,\) do not fit"):
        member.predict(np.zeros((2, 5)))
    bare = dataclasses.replace(member, learner=None)
    with pytest.raises(ValueError, match="with_learner"):
        bare.evaluate(iris)
    assert bare.with_learner(trained.learner).evaluate(iris) == member.evaluate(iris)
