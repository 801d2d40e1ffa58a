"""The outer genetic algorithm over hyperparameters and structure (ask/tell).

Genomes are points of the unit hypercube (see :mod:`genetic_dl.search.space`); one
generation's selection, crossover and mutation run as one jitted program
(:func:`_breed`). :func:`genetic_dl.search.run_search` drives it like any
other method.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import (Any, Callable, FrozenSet, List, NamedTuple, Optional, Sequence,
                    Tuple)

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import genome_ops
from ..operators import selection as selection_mod
from ..errors import check_choice
from .fidelity import Fidelity, Ladder, climb, first_rung, ranked_fitness
from .space import ConfigKey, Space
from .strategy import Lineage, Proposal


class _Breeding(NamedTuple):
    """The static options of :func:`_breed` (hashable: one compile per search)."""
    space: Space
    selection: str
    selection_kw: Tuple[Tuple[str, Any], ...]
    boltzmann_growth: float
    crossover: str
    sigma: float
    structural_rate: float
    n_elite: int
    n_child: int


# ``key -> (genomes, elite rows, parent rows)`` of one generation.
_Breeder = Callable[[jax.Array], Tuple[jax.Array, jax.Array, jax.Array]]


@functools.partial(jax.jit, static_argnames=("how",))
def _breed(key: jax.Array, fit: jax.Array, genomes: jax.Array, lo: jax.Array, hi: jax.Array,
           rate: jax.Array, generation: jax.Array,
           how: _Breeding) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """One generation's genomes: elites, then selected, crossed and mutated children.

    Jitted as one program: run op by op, its few dozen small ops would each compile
    on first use, seconds per process.
    """
    k_sel, k_cross, k_mut, k_struct = jax.random.split(key, 4)
    picks = selection_mod.scheduled(how.selection, dict(how.selection_kw), how.boltzmann_growth,
                                    generation)(k_sel, fit, 2 * how.n_child)
    kids = jax.vmap(genome_ops.CROSSOVERS[how.crossover])(
        jax.random.split(k_cross, how.n_child), genomes[picks[0::2]], genomes[picks[1::2]])
    kids = genome_ops.mutate(k_mut, kids, rate, how.sigma, lo, hi)
    kids = genome_ops.structural_mutation(k_struct, kids, how.space, how.structural_rate)
    kids = jnp.clip(kids, lo, hi)
    elite_idx = selection_mod.elites(fit, how.n_elite)
    return jnp.concatenate([genomes[elite_idx], kids]), elite_idx, picks


@jax.jit
def _nudge(key: jax.Array, genomes: jax.Array, redo: jax.Array, sigma: jax.Array, lo: jax.Array,
           hi: jax.Array) -> jax.Array:
    """One gene of each ``redo`` row moved by a gaussian step of ``sigma`` (within bounds)."""
    k_gene, k_step = jax.random.split(key)
    gene = jax.random.randint(k_gene, genomes.shape[:1], 0, genomes.shape[1])
    hit = redo[:, None] & (jnp.arange(genomes.shape[1]) == gene[:, None])
    step = sigma * jax.random.normal(k_step, genomes.shape)
    return jnp.where(hit, jnp.clip(genome_ops.reflect(genomes + step, lo, hi), lo, hi), genomes)


def _renew_duplicates(key: jax.Array, genomes: np.ndarray, first_child: int, state: GAState,
                      sigma: float, when: str = "stalled", min_distance: float = 0.0,
                      tries: int = 12) -> np.ndarray:
    """Children that repeat a config evaluated before (or earlier in the batch), or lie
    within ``min_distance`` of one (:meth:`Space.separation`), mutated again, one gene at
    a time with a step that doubles each try, until they are new. A near repeat costs
    an evaluation, so it is always renewed; an exact repeat is a free cache hit, renewed
    per ``when`` (``"stalled"``: only if every child repeats; see ``GA.renew``).

    Without it a converged population breeds copies of its best, whose evaluations
    are free cache hits: the round spends nothing, mutation decays, and the search
    stops with most of its budget unspent.
    """
    space, genomes = state.space, np.asarray(genomes)
    keys = [space.key(g) for g in genomes]
    known = np.zeros((0, space.dim)) if state.evaluated is None else state.evaluated
    for attempt in range(tries):
        taken, exact = set(state.seen), np.zeros(len(genomes), bool)
        for i, k in enumerate(keys):
            exact[i] = i >= first_child and k in taken
            taken.add(k)
        near = np.zeros(len(genomes), bool)
        if min_distance > 0:
            coords = space.coordinates(genomes)
            gap = space.separation(coords, np.concatenate([known, coords]))
            gap[:, len(known):][np.triu_indices(len(genomes))] = np.inf  # earlier rows only
            near = (gap.min(1) < min_distance) & ~exact & (np.arange(len(genomes)) >= first_child)
        stalled = bool((exact | near)[first_child:].all())
        redo = near | (exact & (when == "always" or stalled))
        if not redo.any():
            break
        genomes = np.asarray(_nudge(jax.random.fold_in(key, attempt), jnp.asarray(genomes),
                                    jnp.asarray(redo), jnp.float32(min(1.0, sigma * 2 ** attempt)),
                                    jnp.asarray(state.lo), jnp.asarray(state.hi)), np.float64)
        keys = [space.key(g) if r else k for g, k, r in zip(genomes, keys, redo)]
    return genomes


def density_ratio(candidates: ArrayLike, genomes: ArrayLike, fitness: ArrayLike,
                  gamma: float = 0.15) -> np.ndarray:
    """How much likelier each candidate is under the good evaluations than the rest.

    ``log l(x) - log g(x)`` with gaussian kernel densities in the unit hypercube over
    the best ``ceil(gamma n)`` evaluations (``l``) and the others (``g``): TPE's
    criterion (Bergstra et al., 2011). Failed evaluations count as bad.

    Args:
      candidates: ``(m, D)`` unit genomes to rate.
      genomes, fitness: ``(n, D)`` evaluated genomes and their (maximised) fitness.
      gamma: fraction of evaluations that are good.

    Returns:
      ``(m,)`` scores (higher: more promising); zeros with fewer than 4 evaluations.
    """
    x, f = np.asarray(genomes, np.float64), np.asarray(fitness, np.float64)
    c = np.asarray(candidates, np.float64)
    n = len(f)
    if n < 4:
        return np.zeros(len(c))
    order = np.argsort(-np.nan_to_num(f, nan=-np.inf), kind="stable")
    n_good = max(1, int(math.ceil(gamma * n)))
    width = 0.5 * n ** (-1.0 / (x.shape[1] + 4))  # Scott's rule on the unit scale

    def log_density(points: np.ndarray) -> np.ndarray:
        d2 = ((c[:, None, :] - points[None, :, :]) ** 2).sum(-1) / (2 * width ** 2)
        return -d2.min(1) + np.log(np.exp(-(d2 - d2.min(1, keepdims=True))).mean(1))
    return log_density(x[order[:n_good]]) - log_density(x[order[n_good:]])


def _screened(breed: _Breeder, key: jax.Array, genomes: np.ndarray, picks: np.ndarray,
              n_elite: int, versions: int,
              archive: Tuple[np.ndarray, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Each child slot keeps the best-rated of ``versions`` bred versions (version 0
    is the unscreened child), with its parents."""
    kid_versions = [np.asarray(genomes)[n_elite:]]
    pair_versions = [np.asarray(picks).reshape(-1, 2)]
    for v in range(1, versions):
        g, _, p = breed(jax.random.fold_in(key, 1000 + v))
        kid_versions.append(np.asarray(g)[n_elite:])
        pair_versions.append(np.asarray(p).reshape(-1, 2))
    kids, pairs = np.stack(kid_versions), np.stack(pair_versions)  # (versions, children, ...)
    scores = density_ratio(kids.reshape(-1, kids.shape[-1]), *archive).reshape(kids.shape[:2])
    best = np.argmax(scores, axis=0)
    slots = np.arange(kids.shape[1])
    return (np.concatenate([np.asarray(genomes)[:n_elite], kids[best, slots]]),
            pairs[best, slots].reshape(-1))


RENEW = ("stalled", "always", "never")


@dataclasses.dataclass(frozen=True, eq=False)
class GAState:
    """The outer GA's state between rounds (an immutable value).

    Attributes:
      space: the search space.
      genomes: ``(population, D)`` the current population.
      fitness: its fitness (``None`` before the first generation is told).
      generation: generations bred so far.
      lo, hi: ``(D,)`` bounds of the unit genomes (narrowed by refinement).
      seen: keys of every config evaluated so far (not to breed again).
      archive: ``(genomes, fitness)`` of every evaluation, for screening.
      evaluated: ``(n, D)`` :meth:`Space.coordinates` of every config evaluated
        (children keep ``GA.min_distance`` from them; ``None``: none known).
      ladder: the generation climbing its rungs with ``GA.fidelity`` (``None``
        between generations).
    """
    space: Space
    genomes: np.ndarray
    fitness: Optional[List[Any]]
    generation: int
    lo: np.ndarray
    hi: np.ndarray
    seen: FrozenSet[ConfigKey] = frozenset()
    archive: Optional[Tuple[np.ndarray, np.ndarray]] = None
    evaluated: Optional[np.ndarray] = None
    ladder: Optional[Ladder] = None


@dataclasses.dataclass
class GA:
    """The outer genetic algorithm (generational, elitist; NSGA-II when multi-objective).

    Attributes:
      population: individuals per generation.
      init: ``"random"`` or ``"lhs"``.
      selection, selection_kw: a :data:`~genetic_dl.operators.selection.SELECTIONS` name
        and options.
      boltzmann_growth: per-generation growth of Boltzmann beta.
      crossover: ``"one_point"``, ``"two_point"`` or ``"uniform"`` on genomes.
      mutation_rate, mutation_sigma, mutation_decay: per-gene rate (1-5 % in the
        literature), step in unit coordinates, and lambda of ``mu0 exp(-lambda t)``.
      structural_rate: probability of one structural move per child.
      elitism: individuals copied unchanged.
      refine_after, refine_top, refine_epsilon, refine_min_width: opt-in
        search-space refinement after ``refine_after`` generations (0: off).
      objectives: number of objectives (>1: NSGA-II (mu + lambda) selection).
      renew: when children whose config was evaluated before are mutated again
        (one gene, a step that doubles each try, up to 12 tries) until they are
        new: ``"stalled"`` (default) only in a round where every child is such
        a duplicate, ``"always"`` in every round, ``"never"``. Duplicates cost
        nothing (the cache answers), so without renewal a converged population
        can breed nothing new for ``max_stalled_rounds`` rounds and end the
        search with its budget unspent (with ``mutation_decay`` > 0 it did: 25
        of 100 evaluations on a 4-gene test function). ``"always"`` makes every
        round evaluate ``population - elitism`` new configs, which found worse
        optima per evaluation than the default on the test functions (fewer
        rounds of selection per evaluation).
      min_distance: how far a child must be from every evaluated config and
        every earlier child to count as new (:meth:`Space.separation`: the
        largest difference of a continuous gene in unit coordinates, a
        differing discrete value or activity counting 1). A child nearer
        costs an evaluation and teaches little (a copy of a parent whose
        genome went through float32 differs in the 7th digit), so it is
        renewed whenever ``renew`` is not ``"never"``. 0.01 (1 % of a gene's
        range, of its log range for a log gene) bounds how finely the search
        can resolve an optimum; 0: only exact repeats.
      screen: surrogate-assisted breeding (single objective): each child is bred
        ``screen`` times (other parents, cuts and mutations) and the version a
        density-ratio model of every evaluation so far rates best is kept
        (:func:`density_ratio`, the criterion of TPE, Bergstra et al., 2011).
        ``0`` or ``1``: off (the GA as it was).
      fidelity: multi-fidelity generations (:mod:`genetic_dl.search.fidelity`):
        a generation's children train ``min_epochs`` first and only the best
        ``1/eta`` train on, rung by rung, up to their own epochs; selection
        ranks children by the rung they reached, then by fitness. Needs an
        objective that trains in epochs and continues a network across rungs
        (:class:`~genetic_dl.search.trainer_objective.TrainerObjective`); a
        black box is evaluated once per config, its later rungs free repeats.
        Single objective only. ``None`` (default): every child trains its own
        epochs.
    """
    population: int = 16
    init: str = "lhs"
    selection: str = "tournament"
    selection_kw: Tuple[Tuple[str, Any], ...] = ()
    boltzmann_growth: float = 1.0
    crossover: str = "uniform"
    mutation_rate: float = 0.05
    mutation_sigma: float = 0.15
    mutation_decay: float = 0.0
    structural_rate: float = 0.1
    elitism: int = 1
    refine_after: int = 0
    refine_top: int = 4
    refine_epsilon: float = 0.0
    refine_min_width: float = 0.1
    objectives: int = 1
    renew: str = "stalled"
    screen: int = 0
    min_distance: float = 0.01
    fidelity: Optional[Fidelity] = None

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError(f"the GA needs a population of at least 2, got {self.population}")
        for value, options, what in ((self.init, genome_ops.INITS, "init"),
                                     (self.crossover, genome_ops.CROSSOVERS, "crossover"),
                                     (self.selection, selection_mod.SELECTIONS, "selection"),
                                     (self.renew, RENEW, "renew")):
            check_choice(what, value, options)
        if not 0 <= self.mutation_rate <= 1:
            raise ValueError("mutation_rate must be in [0, 1]")
        if self.screen < 0:
            raise ValueError(f"screen must be >= 0 (0: off), got {self.screen}")
        if not 0 <= self.min_distance <= 1:
            raise ValueError(f"min_distance must be in [0, 1], got {self.min_distance}")
        if self.fidelity is not None and self.objectives > 1:
            raise ValueError("multi-fidelity generations rank one objective: use fidelity=None "
                             "with objectives > 1")

    def init_state(self, key: jax.Array, space: Space) -> GAState:
        """The first generation (not yet evaluated)."""
        genomes = genome_ops.INITS[self.init](key, self.population, space.dim)
        return GAState(space=space, genomes=np.asarray(genomes), fitness=None, generation=0,
                       lo=np.zeros(space.dim), hi=np.ones(space.dim))

    def _scalar(self, fitness: Sequence[Any]) -> np.ndarray:
        f = np.asarray(fitness, np.float64)
        if self.objectives > 1:
            return genome_ops.nsga2_rank(f.reshape(len(f), self.objectives))
        return f.reshape(len(f))

    def ask(self, key: jax.Array, state: GAState) -> Proposal:
        """Genomes to evaluate next with their :class:`Lineage`: for each genome the
        rows of the evaluated population it came from (elites: ``(i, i)``; none for
        the first generation)."""
        if state.ladder is not None:
            return state.ladder.proposal()
        if state.fitness is None:
            return self._first_rung(state, Proposal(state.genomes))
        gen = state.generation
        fit = jnp.asarray(self._scalar(state.fitness), jnp.float32)
        n_elite = min(self.elitism, self.population) if self.objectives == 1 else 0
        rate = self.mutation_rate * math.exp(-self.mutation_decay * gen)
        how = _Breeding(state.space, self.selection, tuple(self.selection_kw),
                        self.boltzmann_growth, self.crossover, self.mutation_sigma,
                        self.structural_rate, n_elite, self.population - n_elite)

        def breed(k: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
            return _breed(k, fit, jnp.asarray(state.genomes), jnp.asarray(state.lo),
                          jnp.asarray(state.hi), jnp.float32(rate), jnp.int32(gen), how)
        bred, elite_rows, bred_picks = breed(key)
        genomes, picks = np.asarray(bred), np.asarray(bred_picks)
        if self.screen > 1 and self.objectives == 1 and state.archive is not None:
            genomes, picks = _screened(breed, key, genomes, picks, n_elite, self.screen,
                                       state.archive)
        elite_idx = np.asarray(elite_rows)
        lineage = Lineage(parents=np.concatenate([np.stack([elite_idx, elite_idx], 1),
                                                  picks.reshape(-1, 2)]).astype(int),
                          pool=state.genomes)
        if self.renew != "never":
            genomes = _renew_duplicates(jax.random.fold_in(key, 1), genomes, n_elite, state,
                                        self.mutation_sigma, self.renew, self.min_distance)
        return self._first_rung(state, Proposal(np.asarray(genomes), lineage))

    def _first_rung(self, state: GAState, proposal: Proposal) -> Proposal:
        """``proposal`` at the first rung's epochs with ``fidelity``; as it is without."""
        if self.fidelity is None:
            return proposal
        return proposal._replace(
            epochs=first_rung(self.fidelity, state.space, proposal.genomes).epochs)

    def tell(self, state: GAState, genomes: np.ndarray, fitness: Sequence[Any]) -> GAState:
        """Replacement: generational with elitism, or NSGA-II's (mu + lambda) selection.
        With ``fidelity`` a generation is replaced once its last rung is told; until then
        the told rung promotes its best (:func:`~genetic_dl.search.fidelity.climb`)."""
        if self.fidelity is None:
            return self._replace(state, genomes, fitness)
        ladder = state.ladder or first_rung(self.fidelity, state.space, np.asarray(genomes))
        ladder = climb(self.fidelity, ladder, [float(f) for f in fitness])
        if not ladder.done:
            return dataclasses.replace(state, ladder=ladder)
        return self._replace(dataclasses.replace(state, ladder=None), ladder.genomes,
                             [float(f) for f in ranked_fitness(ladder.reached, ladder.fitness)])

    def _replace(self, state: GAState, genomes: np.ndarray, fitness: Sequence[Any]) -> GAState:
        """The state after a whole generation was evaluated to ``fitness``."""
        genomes = np.asarray(genomes)
        fitness = list(fitness)
        if state.fitness is not None and self.objectives > 1:
            genomes = np.concatenate([state.genomes, genomes])
            fitness = list(state.fitness) + fitness
            keep = np.argsort(-self._scalar(fitness), kind="stable")[:self.population]
            genomes, fitness = genomes[keep], [fitness[i] for i in keep]
        archive, evaluated = state.archive, state.evaluated
        new = [i for i, g in enumerate(genomes) if state.space.key(g) not in state.seen]
        if self.min_distance > 0:
            old_coords = np.zeros((0, state.space.dim)) if evaluated is None else evaluated
            evaluated = np.concatenate([old_coords, state.space.coordinates(genomes[new])])
        if self.screen > 1 and self.objectives == 1:  # every evaluation, for the surrogate
            old = archive or (np.zeros((0, state.space.dim)), np.zeros(0))
            archive = (np.concatenate([old[0], genomes[new]]),
                       np.concatenate([old[1], self._scalar(fitness)[new]]))
        generation = state.generation + (state.fitness is not None)
        lo, hi = state.lo, state.hi
        if self.refine_after and generation == self.refine_after:
            order = np.argsort(-np.nan_to_num(self._scalar(fitness), nan=-np.inf), kind="stable")
            lo, hi = genome_ops.refine_bounds(genomes[order[:self.refine_top]], state.space,
                                              self.refine_epsilon, self.refine_min_width)
        return dataclasses.replace(state, genomes=genomes, fitness=fitness,
                                   generation=generation, lo=lo, hi=hi, archive=archive,
                                   evaluated=evaluated,
                                   seen=state.seen | {state.space.key(g) for g in genomes})
