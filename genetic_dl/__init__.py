"""genetic_dl: evolve neural networks with JAX.

A population of identically shaped networks lives as one params pytree with a
leading population axis; it trains as one vmapped, jitted program.
"""
# The public API, layer by layer (see the README's layout table).
from .data import DATASETS, Dataset, load_dataset, load_npy_dir, load_npz, make_dataset
from .core.sharding import initialize_hosts, population_mesh, use_host_devices
from .core.metrics import compute_metrics
from .core.caption_metrics import caption_metrics
from .core.learner import Learner, Metric, metric
from .core.permutation_spec import PermutationSpec
from .core.stream import Stream
from .core.models import (CaptionSpec, CNNSpec, FramesSpec, MLPSpec, RNNSpec, build_model,
                          count_params, spec_from_dict, spec_to_dict)
from .core.optimizers import OPTIMIZERS, make_optimizer
from .core.population import Population, concat, init_population, take
from .core.train import Between, evaluate, fitness_from_metrics, predict, train
from .core.member import Member, population_member
from .operators.alignment import Alignment
from .weights import LoopState, WeightGAConfig, WeightGAResult, evolve_weights
from .weights.loop import AllMembersFailed
from .search.space import Choice, Float, Int, Space, default_space, space
from .search.driver import (GA, TPE, BlackBox, DifferentialEvolution, Fidelity, GridSearch,
                            Objective, RandomSearch, SearchResult, run_search)
from .search.trainer_objective import TrainerObjective
from .search.pbt_search import PBTSearch, PBTSearchResult, pbt_search
from .app.model_file import load_model, save_model
from .app.cache import enable_compile_cache
from .app.checkpoint import load_population, save_population
from .operators import crossover, matching, mutation, permutation, selection
from .core import stopping
from .data import synthetic
from .app import tracking
from .core.statistics import recompute_statistics
from .operators import averaging, recombination
from .operators.recombination import shared_start
from .weights.soups import Soups, soups

__version__ = "0.1.0"

__all__ = [
    "PBTSearch", "PBTSearchResult", "pbt_search",
    "DATASETS", "Dataset", "load_dataset", "load_npz", "load_npy_dir", "make_dataset",
    "compute_metrics", "caption_metrics", "CaptionSpec", "CNNSpec", "FramesSpec",
    "MLPSpec", "RNNSpec", "build_model", "count_params", "spec_from_dict", "spec_to_dict",
    "OPTIMIZERS", "make_optimizer", "Population", "concat", "init_population", "take",
    "population_mesh", "use_host_devices", "evaluate", "fitness_from_metrics", "predict", "train",
    "Between",
    "Alignment", "LoopState", "WeightGAConfig", "WeightGAResult", "evolve_weights", "crossover",
    "matching",
    "mutation", "selection", "Choice", "Float", "Int", "Space", "default_space", "space", "GA",
    "TPE", "BlackBox", "DifferentialEvolution", "GridSearch", "Objective", "RandomSearch",
    "SearchResult", "run_search", "Fidelity", "TrainerObjective", "load_model",
    "enable_compile_cache",
    "stopping", "initialize_hosts", "Learner", "Metric", "metric", "Stream", "load_population",
    "save_population", "PermutationSpec", "permutation", "synthetic", "tracking",
    "Member", "population_member", "save_model", "AllMembersFailed",
    "recompute_statistics", "averaging", "Soups", "soups", "recombination", "shared_start",
]
