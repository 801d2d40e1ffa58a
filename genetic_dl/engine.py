"""Import path kept for the search trainer, which lives in
:mod:`genetic_dl.trainer_objective` (grouping in :mod:`genetic_dl.config_groups`,
fitness in :mod:`genetic_dl.candidate_fitness`, the kept networks in
:mod:`genetic_dl.trained_archive`)."""
from .config_groups import DEFAULTS, config_to_spec
from .trainer_objective import MAX_CACHED_SHAPES, TrainerObjective

__all__ = ["DEFAULTS", "MAX_CACHED_SHAPES", "TrainerObjective", "config_to_spec"]
