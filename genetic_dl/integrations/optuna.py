"""genetic_dl's outer GA as an Optuna sampler.

``GASampler`` breeds each generation with :class:`genetic_dl.search.GA`'s own
``ask`` (selection, crossover, mutation and renewal of repeats in the unit
hypercube, :mod:`genetic_dl.search.space`), deterministically from the sampler's
seed and the trials stored in the study.

Several workers (threads, processes, machines) may share one storage (RDB,
``JournalStorage``). Optuna's storages offer no compare-and-set on attributes,
so a worker cannot claim a child; what every worker agrees on is the trial's
number, which the storage assigns once, with no gaps, in creation order
(``RDBStorage`` counts the earlier trials while holding a lock on the study's
row; ``JournalStorage`` numbers trials in the order of its log). Trial ``n``
is therefore slot ``n % N`` of generation ``n // N`` (``N = population -
elitism`` new trials a generation, Optuna's ``population_size``). Generation
``g`` is bred only from the trials numbered below ``g N``, and only once all
of them have finished: from then on they never change, every worker reads the
same ones, selects the same parents and breeds the same children with the same
key, and slot ``i`` takes child ``i``. So each child is evaluated by exactly
one trial, whichever worker runs it, and the children are those of a
one-worker run. The price: a worker whose trial is in generation ``g`` waits
(polling the storage) for the last trials of generation ``g - 1``; keep
``population`` well above the number of workers.

A killed worker leaves its trial running, and the next generation waits for
it: use a storage with ``heartbeat_interval``, whose stale trials a waiting
worker fails, as ``optimize`` does before each trial. Trials taken from
Optuna's queue (``enqueue_trial``, ``RetryFailedTrialCallback``'s retries,
which repeat the failed trial's config by design) keep their given params and
fill their slot (its child goes unevaluated) as members of its generation.

Example::

    import optuna
    from genetic_dl.integrations.optuna import GASampler

    study = optuna.create_study(sampler=GASampler(population=16, seed=0))
    study.optimize(objective, n_trials=200)
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import warnings
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import jax
import numpy as np

try:
    import optuna
    from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                      FloatDistribution, IntDistribution)
    from optuna.samplers import BaseGASampler
    from optuna.search_space import intersection_search_space
    from optuna.storages import fail_stale_trials
    from optuna.study import Study, StudyDirection
    from optuna.trial import FrozenTrial, TrialState
except ImportError as err:  # optuna is an optional extra
    raise ImportError("genetic_dl.integrations.optuna needs optuna >= 4.6: "
                      "pip install 'genetic-dl[optuna]'") from err

from ..errors import check_choice
from ..search.ga import GA, GAState
from ..search.space import Choice, Float, Gene, Int, Space, config_key

# Optuna 4.6 made relative sampling lazy: a trial waits for its generation inside the
# objective, where the heartbeat runs, not in ask().
if tuple(int(p) for p in optuna.__version__.split(".")[:2]) < (4, 6):
    raise ImportError(f"genetic_dl.integrations.optuna needs optuna >= 4.6, found "
                      f"{optuna.__version__}: pip install 'genetic-dl[optuna]'")

CHILD_KEY = "GASampler:child"
# Extra batches of children bred for one generation before giving up on new configs.
MAX_BATCHES = 16
# Seconds between warnings while a trial waits for its generation's parents.
WAIT_WARNING_EVERY = 60.0
_LOG = logging.getLogger(__name__)


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


def _trials(study: Study) -> List[FrozenTrial]:
    """Every trial of the study, fresh from the storage (a pruner's view may filter some)."""
    return study._storage.get_all_trials(  # pylint: disable=protected-access
        study._study_id, deepcopy=False)  # pylint: disable=protected-access


def _is_guest(trial: FrozenTrial) -> bool:
    """Whether the trial came with its params (enqueued, or a retry of a failed trial)."""
    return bool(trial.params) or "fixed_params" in trial.system_attrs


class GASampler(BaseGASampler):
    """Optuna sampler running genetic_dl's outer GA (:class:`genetic_dl.search.GA`).

    Relative sampling covers the intersection search space of the earlier
    generations (Float with log or step, Int with log or step, Categorical); a
    parameter outside it (define-by-run) is drawn uniformly in its
    distribution. The first generation is a Latin hypercube: each parameter's
    values fall one per stratum of width ``1 / n`` (seeded strata). Failed and
    pruned trials never become parents. A child keeps ``GA.min_distance`` from
    every config of the earlier generations: in Optuna a repeat costs a trial
    (it is a free cache hit in ``run_search``), so a child that comes near one
    is mutated again as ``GA.renew`` does; the elites stay parents and are not
    re-run, so a generation holds ``population - elitism`` new trials
    (``population`` when multi-objective, with NSGA-II's (mu + lambda)
    selection of parents).

    Trial ``n`` is child ``n % N`` of generation ``n // N`` (see the module's
    notes), and a generation is bred once the previous one has finished. With
    ask-and-tell, tell a generation's trials before suggesting in the next one.

    Args:
      population: individuals per generation (the GA's parents).
      seed: seeds the first generation, the breeding and independent sampling;
        a study with a seed is reproducible, however many workers run it.
        ``None``: a random seed of this sampler's own (workers sharing a
        storage then breed different children: give them one seed).
      wait_timeout: seconds a trial waits for the previous generation to finish
        before it fails with an error; ``None``: as long as it takes (a warning
        names the trials waited for every minute).
      **ga_options: any other :class:`~genetic_dl.search.GA` field
        (``selection``, ``crossover``, ``mutation_rate``, ``elitism``,
        ``min_distance``...).
    """

    def __init__(self, population: int = 16, seed: Optional[int] = None,
                 wait_timeout: Optional[float] = None, **ga_options: Any):
        options = sorted(f.name for f in dataclasses.fields(GA) if f.name != "population")
        for name in ga_options:
            check_choice("GA option", name, options, "(see genetic_dl.search.GA)")
        self._ga = GA(population=population, **ga_options)
        if self._ga.refine_after:
            raise ValueError("GASampler does not support refine_after: Optuna owns the ranges")
        self._elites = min(self._ga.elitism, population)
        super().__init__(population_size=population - self._elites)
        self._seed = int(np.random.default_rng().integers(2 ** 31)) if seed is None else int(seed)
        self._wait_timeout = wait_timeout
        self._bred: Dict[Tuple, List[np.ndarray]] = {}
        self._lock = threading.Lock()

    def reseed_rng(self) -> None:
        """Keeps the seeded draws (Optuna calls this for ``n_jobs > 1``, and its sampler
        test ``test_reseed_rng_change_sampling`` expects new draws after it): workers
        sharing a storage must breed the same children, every draw a function of the
        seed and the trial's number."""

    # --- Optuna's sampler interface -------------------------------------------------------

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._use_objectives(study)
        generation, slot = divmod(trial.number, self._slots())
        storage = study._storage  # pylint: disable=protected-access
        # a retry carries the failed trial's attributes: its own number decides
        storage.set_trial_system_attr(trial._trial_id,  # pylint: disable=protected-access
                                      self._get_generation_key(), generation)
        storage.set_trial_system_attr(trial._trial_id,  # pylint: disable=protected-access
                                      CHILD_KEY, None if _is_guest(trial) else slot)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial
                                    ) -> Dict[str, BaseDistribution]:
        generation = self.get_trial_generation(study, trial)
        if generation == 0 or _is_guest(trial):
            return {}
        earlier = self._finished_below(study, trial, generation * self._slots())
        return {n: d for n, d in intersection_search_space(earlier).items() if not d.single()}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: Dict[str, BaseDistribution]) -> Dict[str, Any]:
        if not search_space:
            return {}
        generation, slot = divmod(trial.number, self._slots())
        parents = self._parents(study, generation)
        if not parents:
            return {}  # nothing of the last generations completed: independent draws
        space = space_of(search_space)
        return space.decode(self._children(study, generation, space, parents)[slot].tolist())

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        gene = gene_of(param_name, param_distribution)
        if self.get_trial_generation(study, trial) == 0:
            n = self._slots()
            strata = _rng(self._seed, 0, 0, _name_word(param_name)).permutation(n)
            jitter = _rng(self._seed, 1, trial.number, _name_word(param_name)).uniform()
            return gene.decode((strata[trial.number] + jitter) / n)
        return gene.decode(_rng(self._seed, 2, trial.number, _name_word(param_name)).uniform())

    def get_trial_generation(self, study: Study, trial: FrozenTrial) -> int:
        """``trial.number // N``: the generation its number puts it in."""
        self._use_objectives(study)
        return trial.number // self._slots()

    def get_population(self, study: Study, generation: int) -> List[FrozenTrial]:
        """The completed trials numbered in ``generation``'s slots."""
        n = self._slots()
        return [t for t in _trials(study) if t.state == TrialState.COMPLETE
                and generation * n <= t.number < (generation + 1) * n]

    def select_parent(self, study: Study, generation: int) -> List[FrozenTrial]:
        """The GA's next parents: the previous parents' elites and the last generation
        (single objective), or NSGA-II's best ``population`` of both."""
        self._use_objectives(study)
        previous = self._parents(study, generation - 1)
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

    # --- generations ----------------------------------------------------------------------

    def _slots(self) -> int:
        assert self.population_size is not None
        return self.population_size

    def _use_objectives(self, study: Study) -> None:
        k = len(study.directions)
        if k != self._ga.objectives:
            self._ga = dataclasses.replace(self._ga, objectives=k)
            self._elites = min(self._ga.elitism, self._ga.population) if k == 1 else 0
            self.population_size = self._ga.population - self._elites

    def _parents(self, study: Study, generation: int) -> List[FrozenTrial]:
        """The parents of ``generation`` in number order (the stored list may be in another)."""
        return sorted(self.get_parent_population(study, generation), key=lambda t: t.number)

    def _finished_below(self, study: Study, trial: FrozenTrial, end: int) -> List[FrozenTrial]:
        """The trials numbered below ``end``, once every one of them has finished.

        Polls the storage; where it has a heartbeat, fails the stale trials on the way
        (a waiting worker may be the only one left).
        """
        start = warned = time.monotonic()
        delay = 0.01
        while True:
            earlier = [t for t in _trials(study) if t.number < end]
            waiting = [t.number for t in earlier if not t.state.is_finished()]
            if not waiting:
                return earlier
            now = time.monotonic()
            what = (f"trial {trial.number} (generation {trial.number // self._slots()}) waits "
                    f"for trial(s) {waiting} of the previous generation to finish")
            if self._wait_timeout is not None and now - start > self._wait_timeout:
                raise RuntimeError(f"GASampler: {what} for more than {self._wait_timeout} s. "
                                   "A killed worker leaves its trial RUNNING: give the storage "
                                   "a heartbeat_interval, or fail it with study.tell")
            if now - warned > WAIT_WARNING_EVERY:
                _LOG.warning("GASampler: %s (%.0f s so far)", what, now - start)
                warned = now
            with warnings.catch_warnings():  # fail_stale_trials is experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                fail_stale_trials(study)
            time.sleep(delay)
            delay = min(1.0, 2 * delay)

    # --- breeding -------------------------------------------------------------------------

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
        come near) and, for screening, their completed trials."""
        earlier = [t for t in _trials(study) if t.number < generation * self._slots()
                   and _config_key(t.params, space.names) is not None]
        done = [t for t in earlier if t.state == TrialState.COMPLETE]
        archive = None
        if self._ga.screen > 1:
            archive = (self._genomes(space, done),
                       np.array([self._fitness(study, t) for t in done], np.float64))
        genomes = self._genomes(space, earlier)
        return GAState(space=space, genomes=self._genomes(space, parents),
                       fitness=[self._fitness(study, t) for t in parents],
                       generation=generation - 1, lo=np.zeros(space.dim), hi=np.ones(space.dim),
                       seen=frozenset(space.key(g) for g in genomes), archive=archive,
                       evaluated=space.coordinates(genomes))

    def _children(self, study: Study, generation: int, space: Space,
                  parents: List[FrozenTrial]) -> List[np.ndarray]:
        """The generation's ``N`` children: the first bred by ``GA.ask`` (batch after
        batch) that repeat no earlier config nor come within ``min_distance`` of one or
        of each other; uniform draws if a nearly exhausted space has too few."""
        cache_key = (study._study_id, generation, space,  # pylint: disable=protected-access
                     tuple(t.number for t in parents))
        with self._lock:
            if cache_key in self._bred:
                return self._bred[cache_key]
            state = self._breeding_state(study, generation, space, parents)
            ga = self._ga if self._ga.renew == "never" else dataclasses.replace(
                self._ga, renew="always")
            key = jax.random.fold_in(jax.random.key(self._seed), generation)
            kept: List[np.ndarray] = []
            taken = set(state.seen)
            near = np.zeros((0, space.dim)) if state.evaluated is None else state.evaluated
            for batch in range(MAX_BATCHES):
                genomes = ga.ask(jax.random.fold_in(key, batch), state).genomes
                for child in _snapped(np.asarray(genomes, np.float64)[self._elites:],
                                      state.genomes):
                    coords = space.coordinates(child)
                    gap = space.separation(coords, near).min(initial=np.inf)
                    if len(kept) < self._slots() and space.key(child) not in taken and (
                            gap >= ga.min_distance):
                        kept.append(child)
                        taken.add(space.key(child))
                        near = np.concatenate([near, coords])
                if len(kept) == self._slots():
                    break
            while len(kept) < self._slots():
                kept.append(_rng(self._seed, 3, generation, len(kept)).uniform(size=space.dim))
            self._bred = {cache_key: kept}  # an older generation is done with
            return kept


def _snapped(children: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """``children`` whose genes lie within float32 rounding of a parent's (``GA.ask``
    breeds in float32) take that parent's exact value: a copied gene stays the value
    the parent was evaluated at."""
    gap = np.abs(children[:, None, :] - parents[None, :, :])  # (child, parent, gene)
    nearest = parents[gap.argmin(1), np.arange(children.shape[1])]
    return np.where(gap.min(1) < 1e-6, nearest, children)


def _unique(trials: List[FrozenTrial]) -> List[FrozenTrial]:
    return list({t.number: t for t in trials}.values())


__all__ = ["GASampler", "gene_of", "space_of"]
