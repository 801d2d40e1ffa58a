"""The weight-level GA hybrid with gradient descent: the generation loop, its options,
its records and its rules (:mod:`genetic_dl.weights.rules`)."""
from .config import OPT_STATE_RULES, RULES, FitnessFn, WeightGAConfig
from .loop import evolve_weights, member_fitness
from .records import LoopState, WeightGAResult
from .rules import Rule, rule_of

__all__ = ["OPT_STATE_RULES", "RULES", "FitnessFn", "LoopState", "Rule", "WeightGAConfig",
           "WeightGAResult", "evolve_weights", "member_fitness", "rule_of"]
