"""What a search optimises: an objective that evaluates batches of configs at a known cost.

An objective's :meth:`~Objective.cost` is what the budget counts by default; its
:meth:`~Objective.costs` names every unit it measures (network-epochs and
FLOP-epochs for the bundled trainer), any of which a budget may count instead.
An objective that trains in epochs can also train a config for fewer epochs
(:meth:`~Objective.at_epochs`) and continue it later, for the rungs of
multi-fidelity search (:mod:`genetic_dl.search.fidelity`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional

Config = Dict[str, Any]


class Objective:
    """What a search optimises: a batch of configs -> fitness (maximised).

    Subclasses implement :meth:`evaluate` (a batch, so a trainer can train
    configs of one shape together) and :meth:`cost` (known before evaluation, so
    the budget is never overrun). Fitness is a float, or a tuple for
    multi-objective search; NaN marks a failure.
    """

    def cost(self, config: Config) -> float:  # pylint: disable=unused-argument
        """Budget units ``config`` will consume (default 1: one call)."""
        return 1.0

    def costs(self, config: Config) -> Dict[str, float]:  # pylint: disable=unused-argument
        """What evaluating ``config`` will spend in every unit the objective measures, by
        unit name; a search's budget may count any of them (``run_search(budget_unit=)``).
        Default: none besides :meth:`cost`."""
        return {}

    def evaluate(self, configs: List[Config]) -> List[Any]:
        """Fitness of each config."""
        raise NotImplementedError

    # pylint: disable-next=unused-argument
    def at_epochs(self, config: Config, epochs: int) -> Optional[Config]:
        """``config`` trained for only ``epochs`` epochs, for a rung of multi-fidelity
        search, or ``None`` (default) when the objective does not train in epochs:
        each config is then evaluated as it is, once."""
        return None

    def evaluate_rung(self, configs: List[Config]) -> List[Any]:
        """Fitness of configs made by :meth:`at_epochs`: as :meth:`evaluate`, but the
        objective may keep each network's trained state, so that a later rung of the
        same network continues from it (:meth:`cost` then counts the epochs added)."""
        return self.evaluate(configs)

    def trained(self) -> Dict[str, Any]:
        """The best model it trained so far, ``{"params", "spec", ...}``, when it keeps
        one (:class:`~genetic_dl.search.trainer_objective.TrainerObjective`); ``{}`` otherwise."""
        return {}


@dataclasses.dataclass
class BlackBox(Objective):
    """Wraps ``f(config) -> float`` (or tuple) as an objective costing 1 per call."""
    fn: Callable[[Config], Any]

    def evaluate(self, configs: List[Config]) -> List[Any]:
        """``fn`` of each config."""
        return [self.fn(c) for c in configs]
