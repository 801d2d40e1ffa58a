"""Every search method follows the Strategy protocol, keeps a frozen state, and the
driver treats that state as opaque."""
import dataclasses

import jax
import numpy as np
import pytest

import genetic_dl as gdl
from genetic_dl.search.driver import METHODS
from genetic_dl.search.strategy import Lineage, Proposal, Strategy

SPACE = gdl.space({"x": gdl.Float(-2.0, 2.0), "n": gdl.Int(0, 4)})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_a_strategy_with_a_frozen_state(name):
    method = METHODS[name]()
    assert isinstance(method, Strategy)
    state = method.init_state(jax.random.key(0), SPACE)
    assert dataclasses.is_dataclass(state) and not isinstance(state, dict)
    field = dataclasses.fields(state)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(state, field, None)
    genomes, lineage, _ = method.ask(jax.random.key(1), state)
    assert genomes.shape[1] == SPACE.dim and (lineage is None or isinstance(lineage, Lineage))
    told = method.tell(state, genomes, [float(-np.sum(g)) for g in genomes])
    assert type(told) is type(state)


class _Opaque:
    """A state the driver must only hand back: reading anything of it fails."""

    def __init__(self, step):
        object.__setattr__(self, "_step", step)

    def __getattr__(self, name):
        raise AssertionError(f"the driver read the strategy's state ({name})")

    def __getitem__(self, name):
        raise AssertionError(f"the driver read the strategy's state [{name}]")


class _Walk:
    """Proposes its last genomes shifted, with the previous batch as their parents."""

    def init_state(self, key, space):
        del key, space
        return _Opaque(0)

    def ask(self, key, state):
        del key
        step = object.__getattribute__(state, "_step")
        genomes = np.full((2, SPACE.dim), 0.1 + 0.2 * step)
        if step == 0:
            return Proposal(genomes)
        pool = np.full((2, SPACE.dim), 0.1 + 0.2 * (step - 1))
        return Proposal(genomes, Lineage(parents=np.array([[0, 1], [1, 0]]), pool=pool))

    def tell(self, state, genomes, fitness):
        del genomes, fitness
        return _Opaque(object.__getattribute__(state, "_step") + 1)


def test_the_driver_never_reads_a_strategys_state_and_records_its_lineage():
    result = gdl.run_search(_Walk(), SPACE, gdl.BlackBox(lambda c: c["x"]), budget=2, key=0)
    assert len(result.evaluations) == 2  # two distinct configs: one per round
    first, second = result.evaluations
    assert first["parents"] is None
    assert second["parents"] == [first["id"], first["id"]]  # the pool's rows are config 0
