"""One network taken out of its population: a frozen value of arrays on the host.

A :class:`Member` holds what a network computes with: its params, every collection
its learner keeps (e.g. ``batch_stats``) and its hyperparameters, with no
population axis. With a :class:`~genetic_dl.Learner` attached it predicts and
scores as a one-member population, through the same programs as the population
it came from, so it scores exactly what that member scored.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from ..data import Dataset
from ..errors import check, fail
from .learner import Learner
from .population import Population, index_members
from .pytree import Params, PyTree
from .stream import Stream
from .train import evaluate, predict


@dataclasses.dataclass(frozen=True, eq=False)
class Member:
    """One network: its arrays, and the learner that computes with them.

    Attributes:
      params: ``{"params": ...}`` of one member (no population axis).
      collections: its other variables (e.g. ``{"batch_stats": ...}``; ``{}``
        for a learner without mutable collections).
      hparams: its hyperparameters by name (scalars; ``widths`` a vector).
      learner: the :class:`~genetic_dl.Learner` it runs with (``None``: arrays only).
      feature_shape, out_dim: the shape of one example and the output width it was
        built for.
      feature_dtype: the dtype of its inputs (``"int32"`` for tokens).
    """
    params: Params
    collections: PyTree
    hparams: Mapping[str, np.ndarray]
    learner: Optional[Learner] = None
    feature_shape: Tuple[int, ...] = ()
    out_dim: int = 0
    feature_dtype: str = "float32"

    def with_learner(self, learner: Learner) -> "Member":
        """This member run by ``learner``."""
        return dataclasses.replace(self, learner=learner)

    def population(self) -> Population:
        """This member as a population of one (for :func:`~genetic_dl.evaluate`,
        :func:`~genetic_dl.predict`, :func:`~genetic_dl.train`)."""
        learner = self.learner
        if learner is None:
            fail("this member has no learner: attach the one it was trained with, "
                 "member.with_learner(learner)")

        def one(x: Any) -> jax.Array:
            return jnp.asarray(x)[None]
        return Population(
            params=jax.tree_util.tree_map(one, self.params), opt_state=(),
            hparams={k: one(np.asarray(v, np.float32)) for k, v in self.hparams.items()},
            keys=jnp.zeros((1, 2), jnp.uint32), ids=jnp.zeros((1,), jnp.int32),
            failed=jnp.zeros((1,), bool), learner=learner, optimizer="sgd",
            feature_shape=tuple(self.feature_shape), out_dim=int(self.out_dim),
            feature_dtype=self.feature_dtype,
            collections=jax.tree_util.tree_map(one, self.collections))

    def predict(self, x: ArrayLike) -> Any:
        """The model's outputs on ``x`` (logits of a classifier: ``argmax(-1)`` gives classes).

        Args:
          x: ``(n, *feature_shape)`` features as the model sees them (a Dataset's
            ``data.model_inputs(data.x_test)``, or ``data.standardize(raw)``).

        Returns:
          ``(n, ...)`` outputs (numpy; a pytree of them for a model that returns one).
        """
        x = np.asarray(x, self.feature_dtype)
        check(tuple(x.shape[1:]) == tuple(self.feature_shape),
              f"features of shape {tuple(x.shape[1:])} do not fit a model built for "
              f"{tuple(self.feature_shape)}: give an array of shape (n, "
              f"{', '.join(map(str, self.feature_shape))})")
        return jax.tree_util.tree_map(lambda o: np.asarray(o[0]), predict(self.population(), x))

    def evaluate(self, data: Union[Dataset, Stream], split: str = "test") -> Dict[str, float]:
        """Every metric of the learner on one split of ``data``, prepared as in training.

        Args:
          data: the :class:`~genetic_dl.Dataset` (or Stream) the member was trained on.
          split: ``"test"``, ``"val"`` or ``"train"``.

        Returns:
          ``{metric: value}``, as :func:`~genetic_dl.evaluate` gives for this member.
        """
        population = self.population()
        if isinstance(data, Dataset) and population.spec is None:
            # a user's module fixes its own output width: the population was built with the
            # data's, or with 0 from a Stream
            population = population.replace(out_dim=data.out_dim)
        return {k: float(v[0]) for k, v in evaluate(population, data, split).items()}


def population_member(population: Population, i: int) -> Member:
    """Member ``i`` of ``population``: its params, collections and hyperparameters on the
    host, with the population's learner."""
    params, collections, hparams = jax.device_get(index_members(
        (population.params, population.collections, population.hparams), i))
    return Member(params=params, collections=collections,
                  hparams={k: np.asarray(v) for k, v in hparams.items()},
                  learner=population.learner, feature_shape=tuple(population.feature_shape),
                  out_dim=int(population.out_dim), feature_dtype=population.feature_dtype)
