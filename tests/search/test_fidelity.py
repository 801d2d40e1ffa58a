"""Multi-fidelity generations: promotion by rung, continued training, costs and resume."""
import time

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import genetic_dl as gdl
from genetic_dl.search import driver as search
from genetic_dl.search.fidelity import Fidelity, ranked_fitness
from genetic_dl.search.paused import candidate_key
from genetic_dl.search.space import Choice, Float, space
from genetic_dl.search.trainer_objective import TrainerObjective

SPACE = space({"a": Float(0.0, 1.0), "width": Choice((1, 2)), "epochs": Choice((9, 27))})


def curve(config, epochs):
    """Known fitness after ``epochs`` epochs: ``a`` decides early, width late, so the
    ranking changes between rungs."""
    return config["a"] * np.log1p(epochs) + 0.3 * config["width"] * np.sqrt(epochs)


class Curve(gdl.Objective):
    """A network that 'trains' along :func:`curve`, continuing from the epochs it
    reached; FLOP-epochs are epochs times its width (the reference's is 1)."""

    def __init__(self):
        self.reached, self.spent = {}, 0.0

    def _start(self, config):
        done = self.reached.get(candidate_key(config), 0)
        return done if done < config["epochs"] else 0

    def cost(self, config):
        return float(config["epochs"] - self._start(config))

    def costs(self, config):
        return {"network_epochs": self.cost(config),
                "flop_epochs": self.cost(config) * config["width"]}

    def at_epochs(self, config, epochs):
        return dict(config, epochs=int(epochs))

    def evaluate(self, configs):
        for c in configs:
            self.spent += self.cost(c)
            self.reached[candidate_key(c)] = c["epochs"]
        return [float(curve(c, c["epochs"])) for c in configs]


def test_each_rung_promotes_the_best_third_and_selection_ranks_by_rung():
    ga = search.GA(population=10, fidelity=Fidelity(min_epochs=1, eta=3))
    state = ga.init_state(jax.random.key(0), SPACE)
    own = np.array([SPACE.decode(g)["epochs"] for g in state.genomes])
    told = []
    for rung, (count, epochs) in enumerate([(10, 1), (3, 3), (1, None)]):
        proposal = ga.ask(jax.random.key(1), state)
        assert len(proposal.genomes) == count
        want = own[[int(np.flatnonzero((state.genomes == g).all(1))[0])
                    for g in proposal.genomes]] if epochs is None else epochs
        np.testing.assert_array_equal(proposal.epochs, want)  # the last one: its own epochs
        fit = [curve(SPACE.decode(g), e) for g, e in zip(proposal.genomes, proposal.epochs)]
        if rung:  # the promoted are the best 1/eta of the rung before
            best = np.argsort(told[-1][1])[::-1][:count]
            np.testing.assert_array_equal(proposal.genomes, told[-1][0][best])
        told.append((proposal.genomes, np.array(fit)))
        state = ga.tell(state, proposal.genomes, fit)
    assert state.ladder is None and len(state.fitness) == 10  # the generation was told
    order = np.argsort(state.fitness)[::-1]  # the last rung's child, its rung, then the rest
    ranked = state.genomes[order]
    np.testing.assert_array_equal(ranked[0], told[2][0][0])
    assert {tuple(g) for g in ranked[1:3]} == {tuple(g) for g in told[1][0]} - {
        tuple(told[2][0][0])}
    assert ga.ask(jax.random.key(2), state).epochs.tolist() == [1] * 10  # the next generation


def test_ranked_fitness_keeps_rungs_apart_and_differences_within_them():
    reached = np.array([0, 0, 1, 1, 2, 0])
    fitness = np.array([5.0, 1.0, 2.0, 3.0, 2.5, np.nan])
    out = ranked_fitness(reached, fitness)
    assert out[4] == 2.5 and out[2] < out[3] < 2.5 and max(out[0], out[1]) < out[2]
    assert out[3] - out[2] == pytest.approx(1.0) and out[0] - out[1] == pytest.approx(4.0)
    assert np.isnan(out[5])
    np.testing.assert_array_equal(ranked_fitness(np.zeros(3), fitness[:3]), fitness[:3])


def test_cost_is_the_epochs_trained_and_a_flop_budget_stops_in_time():
    objective = Curve()
    res = search.run_search(search.GA(population=9, fidelity=Fidelity(1, 3)), SPACE, objective,
                            200, 0)
    assert res.budget_used == objective.spent <= 200
    assert res.costs["network_epochs"] == res.budget_used
    best_rung = {}
    for e in res.evaluations:  # a rung costs the epochs it adds to the candidate's last
        key = candidate_key(e["config"])
        assert e["cost"] == e["config"]["epochs"] - best_rung.get(key, 0)
        assert e["config"]["epochs"] == e["rung_epochs"]
        best_rung[key] = e["config"]["epochs"]
    assert res.history[-1]["network_epochs_used"] == res.budget_used
    full = sum(SPACE.decode(e["genome"])["epochs"] for e in res.evaluations
               if e["round"] == 0)  # what the first generation costs without rungs
    assert sum(e["cost"] for e in res.evaluations if e["round"] < 3) < full / 3

    def in_flops(budget):
        return search.run_search(search.GA(population=9, fidelity=Fidelity(1, 3)), SPACE,
                                 Curve(), budget, 0, budget_unit="flop_epochs")
    flops, unbounded = in_flops(150), in_flops(400)
    spent = sum(e["flop_epochs"] for e in flops.evaluations)
    assert flops.budget_used == spent == flops.costs["flop_epochs"] <= 150
    assert flops.costs["network_epochs"] < spent  # width 2 networks cost double
    # the run is the unbounded one up to the first evaluation that would overrun 150
    # FLOP-epochs (not 150 network-epochs: those come later), which it skips
    stop = int(np.argmax(np.cumsum([e["flop_epochs"] for e in unbounded.evaluations]) > 150))
    assert sum(e["network_epochs"] for e in unbounded.evaluations[:stop + 1]) <= 150
    configs = [e["config"] for e in flops.evaluations]
    assert configs[:stop] == [e["config"] for e in unbounded.evaluations[:stop]]
    assert unbounded.evaluations[stop]["config"] not in configs[stop:]
    with pytest.raises(ValueError, match="budget_unit"):
        search.run_search("random", SPACE, Curve(), 10, 0, budget_unit="joules")


def test_a_black_box_is_evaluated_once_per_config():
    calls = []
    box = gdl.BlackBox(lambda c: calls.append(c) or c["a"])
    res = search.run_search(search.GA(population=6, fidelity=Fidelity(1, 2)), SPACE, box, 30, 0)
    assert len(calls) == len(res.evaluations) == res.budget_used == 30
    assert all("rung_epochs" not in e for e in res.evaluations)


def test_rungs_continue_the_network_exactly(iris):
    cfgs = [{"learning_rate": lr, "epochs": 3, "layers": 1, "width_0": 8, "batch_size": 16}
            for lr in (0.05, 0.01, 0.2)]
    straight = TrainerObjective(iris, seed=0)
    straight.evaluate_rung(cfgs)
    rungs = TrainerObjective(iris, seed=0)
    assert rungs.cost(cfgs[0]) == 3
    rungs.evaluate_rung([rungs.at_epochs(c, 1) for c in cfgs])
    assert rungs.cost(cfgs[0]) == 2 and rungs.groups_trained == 1
    restored = TrainerObjective(iris, seed=0)  # through a checkpoint's state
    restored.load_state_dict(rungs.state_dict())
    restored.evaluate_rung(cfgs)
    assert restored.groups_trained == 1  # continued, not initialised again
    for c in cfgs:
        a = straight.paused.held[candidate_key(c)].member
        b = restored.paused.held[candidate_key(c)].member
        assert jax.tree_util.tree_all(jax.tree_util.tree_map(
            np.array_equal, (a.params, a.opt_state, a.keys), (b.params, b.opt_state, b.keys)))


def test_flop_epochs_count_the_network_against_the_reference(iris):
    objective = TrainerObjective(iris)
    ref = {"layers": 2, "width_0": 64, "width_1": 64, "epochs": 4}
    assert objective.costs(ref) == {"network_epochs": 4.0, "flop_epochs": 4.0}
    wide = objective.costs(dict(ref, width_1=128))["flop_epochs"]
    # 4 -> 64 -> 128 -> 3 against 4 -> 64 -> 64 -> 3: 2 (256 + 8192 + 384) / 2 (256 + 4096 + 192)
    assert wide == pytest.approx(4.0 * 8832 / 4544)


@pytest.fixture(scope="module")
def iris_space():
    return gdl.default_space(("mlp",), (2, 4), narrow={
        "optimizer": ["adam"], "batch_size": [32], "layers": [1], "width": [8, 16],
        "dropout": [0.0]})


def _fidelity_run(iris, space_, budget, **kw):
    objective = TrainerObjective(iris, seed=1)
    res = search.run_search(search.GA(population=4, fidelity=Fidelity(1, 2)), space_, objective,
                            budget, 5, **kw)
    return res, objective


def test_a_trainer_search_in_rungs_repeats_and_resumes_across_a_rung(iris, iris_space):
    full, _ = _fidelity_run(iris, iris_space, 16)
    again, _ = _fidelity_run(iris, iris_space, 16)
    fits = [e["fitness"] for e in full.evaluations]
    assert fits == [e["fitness"] for e in again.evaluations]
    assert {e["rung_epochs"] for e in full.evaluations} >= {1, 2}
    assert full.budget_used == full.costs["network_epochs"] <= 16
    part, trainer = _fidelity_run(iris, iris_space, 16, callbacks=[lambda r, rec: r >= 0])
    assert len(part.evaluations) == 4 and trainer.paused.held  # stopped after the first rung
    resumed_trainer = TrainerObjective(iris, seed=1)
    resumed_trainer.load_state_dict(trainer.state_dict())
    resumed = search.run_search(search.GA(population=4, fidelity=Fidelity(1, 2)), iris_space,
                                resumed_trainer, 16, 5, replay=part.evaluations)
    assert [e["fitness"] for e in resumed.evaluations] == fits
    assert [e["cost"] for e in resumed.evaluations] == [e["cost"] for e in full.evaluations]


class _Dense(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(self.width)(x)))


def _xent(outputs, batch):
    return optax.softmax_cross_entropy_with_integer_labels(outputs, batch["y"]).mean()


def test_a_build_objective_counts_flops_by_xla_against_its_reference(iris):
    def build(config):
        return gdl.Learner.from_linen(_Dense(config["width"]), loss=_xent), "adam"
    assert TrainerObjective(iris, build=build).costs({"width": 8, "epochs": 2}) == {
        "network_epochs": 2.0}  # no reference given: no FLOP-epochs
    objective = TrainerObjective(iris, build=build, flop_reference={"width": 8})
    assert objective.costs({"width": 8, "epochs": 2})["flop_epochs"] == 2.0
    # 4 -> 64 -> 3 against 4 -> 8 -> 3: 8 times the multiply-adds, biases and relu aside
    assert objective.costs({"width": 64, "epochs": 1})["flop_epochs"] == pytest.approx(8, 0.05)


def test_a_budget_in_seconds_stops_after_the_round_that_spends_it():
    box = gdl.BlackBox(lambda c: time.sleep(0.01) or c["a"])
    res = search.run_search(search.RandomSearch(batch=4), SPACE, box, 0.2, 0,
                            budget_unit="seconds")
    assert res.budget_used >= 0.2 and all(h["budget_used"] < 0.2 for h in res.history[:-1])
    assert res.budget_used == pytest.approx(sum(e["cost"] for e in res.evaluations))
    assert min(e["cost"] for e in res.evaluations) >= 0.01  # a round's time, shared
