"""Data: datasets, their validation and the bundled generators.

This layer imports nothing of the library but its errors.
"""
from .dataset import CLASSIFICATION, REGRESSION, TASKS, Dataset, feature_stats, make_dataset
from .loaders import DATASETS, MOVING_DIGITS, load_dataset, load_npy_dir, load_npz
from . import synthetic

__all__ = ["CLASSIFICATION", "REGRESSION", "TASKS", "Dataset", "feature_stats", "make_dataset",
           "DATASETS", "MOVING_DIGITS", "load_dataset", "load_npy_dir", "load_npz", "synthetic"]
