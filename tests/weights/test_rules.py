"""Every generation rule follows the Rule protocol with an immutable state, and the loop
goes through the protocol alone (a rule may replace training itself)."""
import dataclasses

import jax
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.weights import WeightGAConfig, evolve_weights
from genetic_dl.weights.rules import RULE_CLASSES, Rule, RuleBase, rule_of


@pytest.mark.parametrize("name", sorted(RULE_CLASSES))
def test_every_rule_follows_the_protocol_and_its_state_is_frozen(name, iris):
    config = WeightGAConfig(rule=name, self_adaptive=name == "ga")
    rule = rule_of(config)
    assert isinstance(rule, Rule) and rule.config == config
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 6)
    fit = jax.numpy.linspace(0.0, 1.0, 6)
    metrics = {"loss": -fit}
    state = rule.init(jax.random.key(1), pop)
    pop, fit, metrics = rule.evaluated(state, pop, fit, metrics)
    _, state, info = rule.step(jax.random.key(2), state, pop, fit, metrics, 0)
    if state is not None:
        assert dataclasses.is_dataclass(state)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(state, dataclasses.fields(state)[0].name, None)
    assert info.get("parents") is None or np.asarray(info["parents"]).shape == (6, 2)


@dataclasses.dataclass(frozen=True)
class _NoTraining(RuleBase):
    """A rule that replaces the generation's training by nothing, and changes nothing."""

    def train(self, state, population, data, epochs, *, batch_size, mesh):
        del state, data, epochs, batch_size, mesh
        return population

    def step(self, key, state, population, fitness, metrics, generation):
        del key, fitness, metrics, generation
        return population, state, {}


def test_the_loop_trains_through_the_rule(iris, monkeypatch):
    monkeypatch.setitem(RULE_CLASSES, "none", _NoTraining)
    pop = gdl.init_population(jax.random.key(0), gdl.MLPSpec((8,)), iris, 4)
    result = evolve_weights(jax.random.key(1), pop, iris, generations=2, epochs=1,
                            config=WeightGAConfig(rule="none"))
    for got, want in zip(jax.tree_util.tree_leaves(result.population.params),
                         jax.tree_util.tree_leaves(pop.params)):
        np.testing.assert_array_equal(got, want)  # untrained: the rule's train ran, not SGD
