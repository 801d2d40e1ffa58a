"""Generation rules of the weight loop, one per file: ``ga``, ``pbt``, ``de`` and ``none``
(best-of-P). Each follows the :class:`~genetic_dl.weights.rules.base.Rule` protocol."""
from typing import Callable, Dict

from ..config import WeightGAConfig
from .base import Rule, RuleBase
from .de import DERule
from .ga import GARule
from .none import BestOfP
from .pbt import PBTRule

# Each rule class, called with the loop's options, builds a Rule.
RULE_CLASSES: Dict[str, Callable[[WeightGAConfig], Rule]] = {
    "ga": GARule, "pbt": PBTRule, "de": DERule, "none": BestOfP}


def rule_of(config: WeightGAConfig) -> Rule:
    """The strategy of ``config.rule``.

    Args:
      config: the loop's options.

    Returns:
      The :class:`Rule` that ``config.rule`` names, built with ``config``.
    """
    return RULE_CLASSES[config.rule](config)


__all__ = ["RULE_CLASSES", "BestOfP", "DERule", "GARule", "PBTRule", "Rule", "RuleBase",
           "rule_of"]
