"""genetic_dl's outer GA as an Optuna sampler.

``GASampler`` breeds each generation with :class:`genetic_dl.search.GA`'s own
``ask`` (selection, crossover, mutation and duplicate renewal in the unit
hypercube, :mod:`genetic_dl.search.space`), deterministically from the sampler's seed
and the parents stored in the study. Workers that share one storage (RDB,
``JournalStorage``) therefore breed the same children and each takes a different
one. Generations and parents live in the study's attributes through Optuna's
``BaseGASampler``.

Example::

    import optuna
    from genetic_dl.integrations.optuna import GASampler

    study = optuna.create_study(sampler=GASampler(population=16, seed=0))
    study.optimize(objective, n_trials=200)
"""
from __future__ import annotations

import dataclasses
import threading
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import jax
import numpy as np

try:
    from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                      FloatDistribution, IntDistribution)
    from optuna.samplers import BaseGASampler
    from optuna.search_space import IntersectionSearchSpace
    from optuna.study import Study, StudyDirection
    from optuna.trial import FrozenTrial, TrialState
except ImportError as err:  # optuna is an optional extra
    raise ImportError("genetic_dl.integrations.optuna needs optuna >= 4.2: "
                      "pip install 'genetic-dl[optuna]'") from err

from ..errors import check_choice
from ..search.ga import GA, GAState
from ..search.space import Choice, Float, Gene, Int, Space, config_key

CHILD_KEY = "GASampler:child"
# Extra batches of children bred for one generation before giving up on new configs.
MAX_BATCHES = 16


def gene_of(name: str, distribution: BaseDistribution) -> Gene:
    """The :mod:`genetic_dl.search.space` gene of an Optuna distribution."""
    if isinstance(distribution, CategoricalDistribution):
        return Choice(tuple(distribution.choices))
    if isinstance(distribution, IntDistribution):
        return Int(distribution.low, distribution.high, distribution.log, distribution.step)
    if isinstance(distribution, FloatDistribution):
        return Float(distribution.low, distribution.high, distribution.log, distribution.step)
    raise ValueError(f"GASampler cannot sample parameter {name!r} of type "
                     f"{type(distribution).__name__}: use a Float, Int or Categorical distribution")


def space_of(search_space: Dict[str, BaseDistribution]) -> Space:
    """A :class:`~genetic_dl.search.space.Space` over ``search_space``'s parameters (sorted by
    name)."""
    return Space(tuple((n, gene_of(n, d)) for n, d in sorted(search_space.items())))


def _config_key(params: Dict[str, Any], names: Sequence[str]) -> Optional[Tuple]:
    """The identity :meth:`Space.key` gives a decoded config, or ``None`` when a name is missing."""
    if any(n not in params for n in names):
        return None
    return config_key({n: params[n] for n in names})


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng([int(w) % 2 ** 32 for w in words])


def _name_word(name: str) -> int:
    return zlib.crc32(name.encode())  # stable across processes, unlike hash()


class GASampler(BaseGASampler):
    """Optuna sampler running genetic_dl's outer GA (:class:`genetic_dl.search.GA`).

    Relative sampling covers the study's intersection search space (Float with
    log or step, Int with log or step, Categorical); a parameter outside it
    (define-by-run) is drawn uniformly in its distribution. The first
    generation is a Latin hypercube: each parameter's values fall one per
    stratum of width ``1 / n`` (seeded strata). Failed and pruned trials never
    become parents. A config already in the study is not proposed again: in
    Optuna a repeat costs a trial (it is a free cache hit in ``run_search``),
    so a child that repeats one is mutated again as ``GA.renew`` does; the
    elites stay parents and are not re-run, so a generation holds
    ``population - elitism`` new trials (``population`` when multi-objective,
    with NSGA-II's (mu + lambda) selection of parents).

    Args:
      population: individuals per generation (the GA's parents).
      seed: seeds the first generation, the breeding and independent sampling;
        a sequential study with a seed is reproducible. ``None``: a random seed.
      **ga_options: any other :class:`~genetic_dl.search.GA` field
        (``selection``, ``crossover``, ``mutation_rate``, ``elitism``...).
    """

    def __init__(self, population: int = 16, seed: Optional[int] = None, **ga_options: Any):
        options = sorted(f.name for f in dataclasses.fields(GA) if f.name != "population")
        for name in ga_options:
            check_choice("GA option", name, options, "(see genetic_dl.search.GA)")
        self._ga = GA(population=population, **ga_options)
        if self._ga.refine_after:
            raise ValueError("GASampler does not support refine_after: Optuna owns the ranges")
        self._elites = min(self._ga.elitism, population)
        super().__init__(population_size=population - self._elites)
        self._seed = int(np.random.default_rng().integers(2 ** 31)) if seed is None else int(seed)
        self._search_space = IntersectionSearchSpace()
        self._bred: Dict[Tuple, List[np.ndarray]] = {}
        self._lock = threading.Lock()

    # --- Optuna's sampler interface -------------------------------------------------------

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial
                                    ) -> Dict[str, BaseDistribution]:
        return {n: d for n, d in self._search_space.calculate(study).items() if not d.single()}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: Dict[str, BaseDistribution]) -> Dict[str, Any]:
        if not search_space:
            return {}
        generation = self._generation(study, trial)
        parents = self.get_parent_population(study, generation)
        if not parents:
            return {}  # the first generation: independent, stratified
        space = space_of(search_space)
        return space.decode(self._claim(study, trial, generation, space, parents).tolist())

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._use_objectives(study)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        gene = gene_of(param_name, param_distribution)
        if self._generation(study, trial) == 0:
            n = self._ga.population - self._elites  # Optuna's population_size
            sweep, row = divmod(trial.number, n)
            strata = _rng(self._seed, 0, sweep, _name_word(param_name)).permutation(n)
            jitter = _rng(self._seed, 1, trial.number, _name_word(param_name)).uniform()
            return gene.decode((strata[row] + jitter) / n)
        return gene.decode(_rng(self._seed, 2, trial.number, _name_word(param_name)).uniform())

    def select_parent(self, study: Study, generation: int) -> List[FrozenTrial]:
        """The GA's next parents: the previous parents' elites and the last generation
        (single objective), or NSGA-II's best ``population`` of both."""
        self._use_objectives(study)
        previous = self.get_parent_population(study, generation - 1)
        newest = self.get_population(study, generation - 1)
        if self._ga.objectives > 1:
            pool = _unique(previous + newest)
            rank = self._ga._scalar(  # pylint: disable=protected-access
                [self._fitness(study, t) for t in pool])
            order = np.argsort(-rank, kind="stable")[:self._ga.population]
            return [pool[i] for i in order]
        fit = np.array([self._fitness(study, t) for t in previous], np.float64)
        order = np.argsort(-np.nan_to_num(fit, nan=-np.inf), kind="stable")[:self._elites]
        return _unique([previous[i] for i in order] + newest)

    # --- breeding -------------------------------------------------------------------------

    def _generation(self, study: Study, trial: FrozenTrial) -> int:
        """The trial's generation as stored (a trial's snapshot may predate it)."""
        stored = study._storage.get_trial_system_attrs(  # pylint: disable=protected-access
            trial._trial_id).get(self._get_generation_key())  # pylint: disable=protected-access
        return self.get_trial_generation(study, trial) if stored is None else stored

    def _use_objectives(self, study: Study) -> None:
        k = len(study.directions)
        if k != self._ga.objectives:
            self._ga = dataclasses.replace(self._ga, objectives=k)
            self._elites = min(self._ga.elitism, self._ga.population) if k == 1 else 0
            self.population_size = self._ga.population - self._elites

    @staticmethod
    def _fitness(study: Study, trial: FrozenTrial) -> Union[float, Tuple[float, ...]]:
        """Maximised values (a minimised objective is negated)."""
        signed = [v if d == StudyDirection.MAXIMIZE else -v
                  for v, d in zip(trial.values, study.directions)]
        return tuple(signed) if len(signed) > 1 else signed[0]

    @staticmethod
    def _genomes(space: Space, trials: List[FrozenTrial]) -> np.ndarray:
        rows = [space.encode({n: t.params[n] for n in space.names}) for t in trials]
        return np.clip(np.reshape(rows, (len(rows), space.dim)), 0.0, 1.0)

    def _breeding_state(self, study: Study, generation: int, space: Space,
                        parents: List[FrozenTrial]) -> GAState:
        """``GA.ask``'s state: the parents, the configs of earlier generations (not to
        repeat) and, for screening, every completed trial."""
        trials = study.get_trials(deepcopy=False)
        gen_key = self._get_generation_key()
        seen = frozenset(filter(None, (_config_key(t.params, space.names) for t in trials
                                       if t.system_attrs.get(gen_key, generation) < generation)))
        archive = None
        if self._ga.screen > 1:
            done = [t for t in trials if t.state == TrialState.COMPLETE
                    and _config_key(t.params, space.names) is not None]
            archive = (self._genomes(space, done),
                       np.array([self._fitness(study, t) for t in done], np.float64))
        return GAState(space=space, genomes=self._genomes(space, parents),
                       fitness=[self._fitness(study, t) for t in parents],
                       generation=generation - 1, lo=np.zeros(space.dim), hi=np.ones(space.dim),
                       seen=seen, archive=archive)

    def _children(self, study: Study, generation: int, space: Space,
                  parents: List[FrozenTrial], batches: int) -> List[np.ndarray]:
        """The first ``batches`` batches of the generation's children, bred by ``GA.ask``."""
        cache_key = (study._study_id, generation, space,  # pylint: disable=protected-access
                     tuple(t.number for t in parents))
        bred = self._bred.setdefault(cache_key, [])
        if not bred:
            self._bred = {k: v for k, v in self._bred.items() if k == cache_key}  # older: done
        if len(bred) < batches:
            state = self._breeding_state(study, generation, space, parents)
            ga = self._ga if self._ga.renew == "never" else dataclasses.replace(
                self._ga, renew="always")
            key = jax.random.fold_in(jax.random.key(self._seed), generation)
            while len(bred) < batches:
                genomes, _ = ga.ask(jax.random.fold_in(key, len(bred)), state)
                bred.append(np.asarray(genomes, np.float64)[self._elites:])
        return [g for batch in bred[:batches] for g in batch]

    def _claim(self, study: Study, trial: FrozenTrial, generation: int, space: Space,
               parents: List[FrozenTrial]) -> np.ndarray:
        """The first child of the generation that no other trial took and whose config
        is not in the study yet; the claim is recorded in the trial's attributes."""
        with self._lock:
            trials = study.get_trials(deepcopy=False)
            gen_key = self._get_generation_key()
            claimed = {t.system_attrs.get(CHILD_KEY) for t in trials
                       if t.system_attrs.get(gen_key) == generation and t.number != trial.number}
            taken = {_config_key(t.params, space.names) for t in trials}
            for batches in range(1, MAX_BATCHES + 1):
                children = self._children(study, generation, space, parents, batches)
                for i, child in enumerate(children):
                    if i not in claimed and space.key(child.tolist()) not in taken:
                        study._storage.set_trial_system_attr(  # pylint: disable=protected-access
                            trial._trial_id, CHILD_KEY, i)  # pylint: disable=protected-access
                        return child
            # every child repeats a config (a nearly exhausted space): a uniform draw
            return _rng(self._seed, 3, trial.number).uniform(size=space.dim)


def _unique(trials: List[FrozenTrial]) -> List[FrozenTrial]:
    return list({t.number: t for t in trials}.values())


__all__ = ["GASampler", "gene_of", "space_of"]
