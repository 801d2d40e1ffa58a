"""Hyperparameter and structure search: the outer GA and its baselines under one budget.

Every method is an ask/tell strategy over unit genomes (see :mod:`genetic_dl.space`):
``ga``, ``random``, ``grid``, ``de`` and, with optuna installed, ``tpe``. :func:`run_search`
drives any of them against an :class:`Objective` under a budget counted in the
objective's cost units (network-epochs for the bundled trainer, calls for a black
box). An identical config is never evaluated twice (the cache costs nothing).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import genome_ops
from . import selection as selection_mod
from .rundir import records_to_pandas
from .space import Space

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

    def evaluate(self, configs: List[Config]) -> List[Any]:
        """Fitness of each config."""
        raise NotImplementedError


@dataclasses.dataclass
class BlackBox(Objective):
    """Wraps ``f(config) -> float`` (or tuple) as an objective costing 1 per call."""
    fn: Callable[[Config], Any]

    def evaluate(self, configs):
        return [self.fn(c) for c in configs]


def _nan_like(objectives: int):
    return float("nan") if objectives == 1 else (float("nan"),) * objectives


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


@functools.partial(jax.jit, static_argnames=("how",))
def _breed(key, fit, genomes, lo, hi, rate, generation, how: _Breeding):
    """One generation's genomes: elites, then selected, crossed and mutated children.

    Jitted as one program: run op by op, its few dozen small ops would each compile
    on first use, seconds per process.
    """
    k_sel, k_cross, k_mut, k_struct = jax.random.split(key, 4)
    sel_kw = dict(how.selection_kw)
    if how.selection == "boltzmann":
        sel_kw["beta"] = selection_mod.beta_schedule(sel_kw.get("beta", 1.0),
                                                     how.boltzmann_growth, generation)
    picks = selection_mod.get(how.selection, **sel_kw)(k_sel, fit, 2 * how.n_child)
    kids = jax.vmap(genome_ops.CROSSOVERS[how.crossover])(
        jax.random.split(k_cross, how.n_child), genomes[picks[0::2]], genomes[picks[1::2]])
    kids = genome_ops.mutate(k_mut, kids, rate, how.sigma, lo, hi)
    kids = genome_ops.structural_mutation(k_struct, kids, how.space, how.structural_rate)
    kids = jnp.clip(kids, lo, hi)
    elite_idx = selection_mod.elites(fit, how.n_elite)
    return jnp.concatenate([genomes[elite_idx], kids]), elite_idx, picks


@jax.jit
def _nudge(key, genomes, redo, sigma, lo, hi):
    """One gene of each ``redo`` row moved by a gaussian step of ``sigma`` (within bounds)."""
    k_gene, k_step = jax.random.split(key)
    gene = jax.random.randint(k_gene, genomes.shape[:1], 0, genomes.shape[1])
    hit = redo[:, None] & (jnp.arange(genomes.shape[1]) == gene[:, None])
    step = sigma * jax.random.normal(k_step, genomes.shape)
    return jnp.where(hit, jnp.clip(genome_ops.reflect(genomes + step, lo, hi), lo, hi), genomes)


def _renew_duplicates(key, genomes, first_child, space: Space, seen, lo, hi, sigma: float,
                      when: str = "stalled", tries: int = 6):
    """Children whose config was evaluated before (or earlier in the batch) mutated
    again, one gene at a time with a step that doubles each try, until they are new
    (``when="stalled"``: only if every child is such a duplicate; see ``GA.renew``).

    Without it a converged population breeds copies of its best, whose evaluations
    are free cache hits: the round spends nothing, mutation decays, and the search
    stops with most of its budget unspent.
    """
    genomes = np.asarray(genomes)
    keys = [space.key(g) for g in genomes]
    for attempt in range(tries):
        taken, redo = set(seen), np.zeros(len(genomes), bool)
        for i, k in enumerate(keys):
            redo[i] = i >= first_child and k in taken
            taken.add(k)
        if not redo.any() or (when == "stalled" and not redo[first_child:].all()):
            break  # nothing to renew, or some children are new and this round evaluates them
        genomes = np.asarray(_nudge(jax.random.fold_in(key, attempt), jnp.asarray(genomes),
                                    jnp.asarray(redo), jnp.float32(min(1.0, sigma * 2 ** attempt)),
                                    jnp.asarray(lo), jnp.asarray(hi)), np.float64)
        keys = [space.key(g) if r else k for g, k, r in zip(genomes, keys, redo)]
    return genomes


RENEW = ("stalled", "always", "never")


@dataclasses.dataclass
class GA:
    """The outer genetic algorithm (generational, elitist; NSGA-II when multi-objective).

    Attributes:
      population: individuals per generation.
      init: ``"random"`` or ``"lhs"``.
      selection, selection_kw: a :data:`~genetic_dl.selection.SELECTIONS` name and options.
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
        (one gene, a step that doubles each try, up to 6 tries) until they are
        new: ``"stalled"`` (default) only in a round where every child is such
        a duplicate, ``"always"`` in every round, ``"never"``. Duplicates cost
        nothing (the cache answers), so without renewal a converged population
        can breed nothing new for ``max_stalled_rounds`` rounds and end the
        search with its budget unspent (with ``mutation_decay`` > 0 it did: 25
        of 100 evaluations on a 4-gene test function). ``"always"`` makes every
        round evaluate ``population - elitism`` new configs, which found worse
        optima per evaluation than the default on the test functions (fewer
        rounds of selection per evaluation).
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

    def __post_init__(self):
        if self.population < 2:
            raise ValueError(f"the GA needs a population of at least 2, got {self.population}")
        for value, options, what in ((self.init, genome_ops.INITS, "init"),
                                     (self.crossover, genome_ops.CROSSOVERS, "crossover"),
                                     (self.selection, selection_mod.SELECTIONS, "selection")):
            if value not in options:
                raise ValueError(f"unknown {what} {value!r}: choose one of {', '.join(options)}")
        if self.renew not in RENEW:
            raise ValueError(f"unknown renew {self.renew!r}: choose one of {', '.join(RENEW)}")
        if not 0 <= self.mutation_rate <= 1:
            raise ValueError("mutation_rate must be in [0, 1]")

    def init_state(self, key, space: Space):
        """The first generation (not yet evaluated)."""
        genomes = genome_ops.INITS[self.init](key, self.population, space.dim)
        return {"space": space, "genomes": np.asarray(genomes), "fitness": None, "generation": 0,
                "lo": np.zeros(space.dim), "hi": np.ones(space.dim), "pending": None,
                "seen": frozenset()}

    def _scalar(self, fitness):
        f = np.asarray(fitness, np.float64)
        if self.objectives > 1:
            return genome_ops.nsga2_rank(f.reshape(len(f), self.objectives))
        return f.reshape(len(f))

    def ask(self, key, state) -> np.ndarray:
        """Genomes to evaluate next."""
        if state["fitness"] is None:
            return state["genomes"]
        gen = state["generation"]
        fit = jnp.asarray(self._scalar(state["fitness"]), jnp.float32)
        n_elite = min(self.elitism, self.population) if self.objectives == 1 else 0
        rate = self.mutation_rate * math.exp(-self.mutation_decay * gen)
        genomes, elite_idx, picks = _breed(
            key, fit, jnp.asarray(state["genomes"]), jnp.asarray(state["lo"]),
            jnp.asarray(state["hi"]), jnp.float32(rate), jnp.int32(gen),
            _Breeding(state["space"], self.selection, tuple(self.selection_kw),
                      self.boltzmann_growth, self.crossover, self.mutation_sigma,
                      self.structural_rate, n_elite, self.population - n_elite))
        # lineage: rows of the evaluated population each new genome came from
        state["parents"] = [(int(i), int(i)) for i in np.asarray(elite_idx)] + \
            [(int(x), int(y)) for x, y in np.asarray(picks).reshape(-1, 2)]
        if self.renew == "never":
            return np.asarray(genomes)
        return _renew_duplicates(jax.random.fold_in(key, 1), genomes, n_elite, state["space"],
                                 state["seen"], state["lo"], state["hi"], self.mutation_sigma,
                                 self.renew)

    def tell(self, state, genomes, fitness):
        """Replacement: generational with elitism, or NSGA-II's (mu + lambda) selection."""
        state = dict(state)
        genomes = np.asarray(genomes)
        fitness = list(fitness)
        if state["fitness"] is not None and self.objectives > 1:
            genomes = np.concatenate([state["genomes"], genomes])
            fitness = list(state["fitness"]) + fitness
            keep = np.argsort(-self._scalar(fitness), kind="stable")[:self.population]
            genomes, fitness = genomes[keep], [fitness[i] for i in keep]
        state.update(genomes=genomes, fitness=fitness,
                     generation=state["generation"] + (state["fitness"] is not None),
                     seen=state["seen"] | {state["space"].key(g) for g in genomes})
        if self.refine_after and state["generation"] == self.refine_after:
            order = np.argsort(-np.nan_to_num(self._scalar(fitness), nan=-np.inf), kind="stable")
            state["lo"], state["hi"] = genome_ops.refine_bounds(
                genomes[order[:self.refine_top]], state["space"], self.refine_epsilon,
                self.refine_min_width)
        return state


@dataclasses.dataclass
class RandomSearch:
    """Uniform random sampling of the unit hypercube (Bergstra & Bengio, 2012)."""
    batch: int = 16

    def init_state(self, key, space):  # pylint: disable=unused-argument
        """Stateless but for the space."""
        return {"space": space}

    def ask(self, key, state):
        """``batch`` random genomes."""
        return np.asarray(jax.random.uniform(key, (self.batch, state["space"].dim)))

    def tell(self, state, genomes, fitness):  # pylint: disable=unused-argument
        """Random search learns nothing."""
        return state


@dataclasses.dataclass
class GridSearch:
    """A full grid (every category, ``resolution`` values per numeric gene).

    Points are visited in a seeded pseudo-random order (an affine bijection of
    the grid index), so a budget that covers part of the grid covers it evenly
    rather than one corner.
    """
    resolution: int = 3
    batch: int = 16

    def init_state(self, key, space):
        """The grid axes and a random bijection of the index space."""
        axes = genome_ops.grid_axes(space, self.resolution)
        size = int(np.prod([len(a) for a in axes], dtype=object))
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        mult = int(rng.integers(1, max(2, size)))
        while math.gcd(mult, size) != 1:
            mult += 1
        return {"space": space, "axes": axes, "size": size, "mult": mult,
                "offset": int(rng.integers(0, size)), "next": 0}

    def ask(self, key, state):  # pylint: disable=unused-argument
        """The next ``batch`` grid points (none when the grid is exhausted)."""
        out = []
        for i in range(state["next"], min(state["next"] + self.batch, state["size"])):
            j = (state["mult"] * i + state["offset"]) % state["size"]
            point = []
            for axis in state["axes"]:
                j, r = divmod(j, len(axis))
                point.append(axis[r])
            out.append(point)
        state["next"] += len(out)
        return np.asarray(out, np.float64).reshape(len(out), len(state["axes"]))

    def tell(self, state, genomes, fitness):  # pylint: disable=unused-argument
        """Grid search learns nothing."""
        return state


@dataclasses.dataclass
class DifferentialEvolution:
    """DE/rand/1/bin on unit genomes with greedy replacement (Storn & Price, 1997)."""
    population: int = 16
    f: float = 0.5
    cr: float = 0.9

    def init_state(self, key, space):
        """A Latin-hypercube first population."""
        if self.population < 4:
            raise ValueError("DE needs a population of at least 4")
        return {"space": space, "genomes": np.asarray(genome_ops.init_lhs(
            key, self.population, space.dim)), "fitness": None, "trials": None}

    def ask(self, key, state):
        """The first population, then one trial per target."""
        if state["fitness"] is None:
            return state["genomes"]
        trials = _de(key, jnp.asarray(state["genomes"]), self.f, self.cr)["g"]
        return np.asarray(genome_ops.reflect(trials))

    def tell(self, state, genomes, fitness):
        """Each trial replaces its target unless it is worse."""
        state = dict(state)
        if state["fitness"] is None:
            state.update(genomes=np.asarray(genomes), fitness=list(fitness))
            return state
        old = np.nan_to_num(np.asarray(state["fitness"], np.float64), nan=-np.inf)
        new = np.nan_to_num(np.asarray(fitness, np.float64), nan=-np.inf)
        better = new >= old
        state["genomes"] = np.where(better[:, None], genomes, state["genomes"])
        state["fitness"] = [f if b else o for f, o, b in zip(fitness, state["fitness"], better)]
        return state


def _de(key, genomes, f, cr):
    from .mutation import de_rand_1_bin  # pylint: disable=import-outside-toplevel
    return de_rand_1_bin(key, {"g": genomes}, f, cr)


@dataclasses.dataclass
class TPE:
    """Optuna's tree-structured Parzen estimator over the unit genome (extra ``bench``)."""
    batch: int = 8

    def init_state(self, key, space):
        """An optuna study seeded from ``key``."""
        try:
            import optuna  # pylint: disable=import-outside-toplevel
        except ImportError as err:
            raise ValueError("method 'tpe' needs optuna: pip install 'genetic-dl[bench]'") \
                from err
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        seed = int(np.asarray(jax.random.key_data(key)).ravel()[-1])
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=seed))
        return {"space": space, "study": study, "trials": []}

    def ask(self, key, state):  # pylint: disable=unused-argument
        """``batch`` trials from the sampler."""
        trials = [state["study"].ask() for _ in range(self.batch)]
        state["trials"] = trials
        return np.array([[t.suggest_float(n, 0.0, 1.0) for n in state["space"].names]
                         for t in trials])

    def tell(self, state, genomes, fitness):  # pylint: disable=unused-argument
        """Reports each trial's fitness (a failure as a failed trial)."""
        import optuna  # pylint: disable=import-outside-toplevel,import-error
        for trial, f in zip(state["trials"], fitness):
            if np.isfinite(f):
                state["study"].tell(trial, float(f))
            else:
                state["study"].tell(trial, state=optuna.trial.TrialState.FAIL)
        return state


METHODS: Dict[str, Callable[..., Any]] = {"ga": GA, "random": RandomSearch, "grid": GridSearch,
                                          "de": DifferentialEvolution, "tpe": TPE}


@dataclasses.dataclass
class SearchResult:
    """What :func:`run_search` returns.

    Attributes:
      best_config, best_fitness: the best evaluated config (first objective /
        scalar fitness for ranking).
      evaluations: one dict per evaluated config: id, config, fitness, cost,
        budget_used after it, round, genome, and parents (ids of the two
        evaluations it was bred from; the GA only, ``None`` otherwise).
      history: one dict per round: round, best, mean, std (of that round's
        fitness), diversity (mean per-gene std of its genomes), best_so_far,
        budget_used, elapsed, best_config.
      budget_used: cost actually spent (cache hits are free).
      pareto: for multi-objective runs, the non-dominated evaluations.
      best_params, best_spec: the best trained network's params and model spec,
        when the objective trains networks (:class:`~genetic_dl.TrainerObjective`).
    """
    best_config: Optional[Config]
    best_fitness: Any
    evaluations: List[Dict[str, Any]]
    history: List[Dict[str, Any]]
    budget_used: float
    pareto: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    best_params: Any = None
    best_spec: Any = None

    def hall_of_fame(self, k: int = 5) -> List[Dict[str, Any]]:
        """The ``k`` best evaluations (first objective), best first; failures excluded."""
        ok = [e for e in self.evaluations if np.isfinite(_first(e["fitness"]))]
        return sorted(ok, key=lambda e: -_first(e["fitness"]))[:k]

    def to_pandas(self, what: str = "history"):
        """``history`` or ``evaluations`` as a ``pandas.DataFrame`` (configs flattened)."""
        rows = {"history": self.history, "evaluations": [
            {**{k: v for k, v in e.items() if k != "config"}, **e["config"]}
            for e in self.evaluations]}[what]
        return records_to_pandas(rows)


def _first(f) -> float:
    value = f[0] if isinstance(f, (tuple, list, np.ndarray)) else f
    return float(value) if value is not None and np.isfinite(value) else float("nan")


def _round_stats(fits) -> Dict[str, float]:
    vals = np.array([_first(f) for f in fits], np.float64)
    ok = vals[np.isfinite(vals)]
    if not ok.size:
        return {"best": float("nan"), "mean": float("nan"), "std": float("nan")}
    return {"best": float(ok.max()), "mean": float(ok.mean()), "std": float(ok.std())}


def _plan(keys, configs, cache, objective: Objective, left: float) -> List[int]:
    """Indices of the new, distinct configs that fit in the ``left`` budget, in order."""
    todo, seen = [], set()
    for i, (k, c) in enumerate(zip(keys, configs)):
        if k in cache or k in seen:
            continue
        cost = float(objective.cost(c))
        if cost <= left + 1e-9:
            todo.append(i)
            seen.add(k)
            left -= cost
    return todo


def run_search(method: Any, space: Space, objective: Objective, budget: float, key,
               *, objectives: int = 1, max_stalled_rounds: int = 20,
               callbacks: Sequence[Callable[[int, Dict[str, Any]], bool]] = (),
               replay: Sequence[Dict[str, Any]] = (),
               on_round: Optional[Callable[[SearchResult], None]] = None) -> SearchResult:
    """Runs ``method`` on ``objective`` until ``budget`` is spent.

    A config whose cost does not fit in the remaining budget is not evaluated, so
    the budget is never exceeded; a config seen before is answered from the cache
    at no cost.

    Args:
      method: a strategy instance (``GA()``, ``RandomSearch()``...) or a name
        of :data:`METHODS`.
      space: the search space.
      objective: an :class:`Objective` (wrap ``f(config)`` with :class:`BlackBox`).
      budget: total cost allowed.
      key: PRNG key.
      objectives: number of objectives the fitness has.
      max_stalled_rounds: stop after this many rounds that evaluate nothing new.
      callbacks: ``cb(round, record) -> stop?`` after each round (see
        :mod:`genetic_dl.stopping` for saturation, target and time limits).
      replay: evaluations of an interrupted run of the same search (its
        ``SearchResult.evaluations``): the search repeats its rounds answering
        those configs from them, spending their cost but training nothing, so
        it reaches the interrupted run's state exactly and continues from it
        (every method is deterministic given its key and the fitness it is told).
      on_round: called with the result so far after each round (checkpoints).

    Returns:
      A :class:`SearchResult`.
    """
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
        method = METHODS[method]()
    if not budget > 0:
        raise ValueError(f"the budget must be positive, got {budget}")
    key, k_init = jax.random.split(jax.random.key(key) if isinstance(key, int) else key)
    state = method.init_state(k_init, space)
    book = _Book(replayed={space.key(e["genome"]): e for e in replay})
    history: List[Dict[str, Any]] = []
    stalled, rnd, start = 0, 0, time.perf_counter()
    while book.used < budget and stalled < max_stalled_rounds:
        key, k_ask = jax.random.split(key)
        genomes = np.asarray(method.ask(k_ask, state), np.float64)
        if genomes.size == 0:
            break  # e.g. the grid is exhausted
        configs = [space.decode(u) for u in genomes]
        keys = [space.key(u) for u in genomes]
        todo = _plan(keys, configs, book.cache, objective, budget - book.used)
        fits = book.record(objective, rnd, genomes, configs, keys, todo,
                           _parents(state, todo, book.ids, book.prev_keys))
        state = method.tell(state, genomes,
                            [book.cache.get(k, _nan_like(objectives)) for k in keys])
        book.prev_keys = [space.key(u) for u in state["genomes"]] if "genomes" in state \
            else keys
        stalled = 0 if todo else stalled + 1
        if todo:
            record = book.round_record(rnd, genomes[todo], [configs[i] for i in todo], fits,
                                       time.perf_counter() - start)
            history.append(record)
            if on_round is not None:
                on_round(_result(book.evaluations, history, book.used, objectives))
            if any(bool(cb(rnd, record)) for cb in callbacks):
                break
        rnd += 1
    evaluations, used = book.evaluations, book.used
    result = _result(evaluations, history, used, objectives)
    trained = getattr(objective, "best", None) or {}
    result.best_params, result.best_spec = trained.get("params"), trained.get("spec")
    return result


@dataclasses.dataclass
class _Book:
    """A search's ledger: cache, evaluations, ids, budget spent, best so far."""
    replayed: Dict[Tuple, Dict[str, Any]]
    cache: Dict[Tuple, Any] = dataclasses.field(default_factory=dict)
    ids: Dict[Tuple, int] = dataclasses.field(default_factory=dict)  # config key -> id
    evaluations: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    prev_keys: List[Tuple] = dataclasses.field(default_factory=list)  # parents' population
    used: float = 0.0
    best_so_far: float = -math.inf

    def record(self, objective, rnd, genomes, configs, keys, todo, parents) -> List[Any]:
        """Evaluates (or replays) ``todo`` and books each evaluation; returns the fitness."""
        fits = _evaluate(objective, [configs[i] for i in todo], [keys[i] for i in todo],
                         self.replayed)
        for i, f in zip(todo, fits):
            self.cache[keys[i]] = f
            self.ids[keys[i]] = len(self.evaluations)
            cost = float(objective.cost(configs[i]))
            self.used += cost
            self.evaluations.append({"id": len(self.evaluations), "config": configs[i],
                                     "fitness": f, "cost": cost, "budget_used": self.used,
                                     "round": rnd, "genome": genomes[i].tolist(),
                                     "parents": parents.get(i)})
        return fits

    def round_record(self, rnd, genomes, configs, fits, elapsed) -> Dict[str, Any]:
        """The round's history record."""
        firsts = [_first(f) for f in fits]
        self.best_so_far = max(self.best_so_far, max((f for f in firsts if np.isfinite(f)),
                                                     default=-math.inf))
        return {"round": rnd, **_round_stats(fits),
                "diversity": float(np.mean(np.std(genomes, axis=0))),
                "best_so_far": self.best_so_far, "budget_used": self.used, "elapsed": elapsed,
                "best_config": configs[int(np.argmax(np.nan_to_num(firsts, nan=-np.inf)))]}


def _parents(state, todo, ids, prev_keys) -> Dict[int, List[int]]:
    """Evaluation ids of the parents of each new genome, when the method reports them (GA)."""
    pairs = state.pop("parents", None) if isinstance(state, dict) else None
    if not pairs:
        return {}
    out = {}
    for i in todo:
        found = [ids.get(prev_keys[p]) for p in pairs[i]] if i < len(pairs) else []
        if found and all(f is not None for f in found):
            out[i] = found
    return out


def _evaluate(objective: Objective, configs, keys, replayed) -> List[Any]:
    """Fitness of ``configs``: from ``replayed`` (a resumed run's past) or by evaluating."""
    fresh = [i for i, k in enumerate(keys) if k not in replayed]
    fits = dict(zip(fresh, objective.evaluate([configs[i] for i in fresh]) if fresh else []))
    return [fits[i] if i in fits else _tuple(replayed[k]["fitness"]) for i, k in enumerate(keys)]


def _tuple(fitness):
    """A fitness read back from JSON: lists are multi-objective tuples."""
    return tuple(fitness) if isinstance(fitness, list) else fitness


def _result(evaluations, history, used, objectives) -> SearchResult:
    scores = np.array([_first(e["fitness"]) for e in evaluations], np.float64)
    best = None
    if scores.size and np.isfinite(scores).any():
        best = evaluations[int(np.nanargmax(scores))]
    pareto = []
    if objectives > 1 and evaluations:
        objs = np.array([np.asarray(e["fitness"], np.float64) for e in evaluations])
        pareto = [evaluations[i] for i in genome_ops.pareto_front(objs)]
    return SearchResult(best_config=best["config"] if best else None,
                        best_fitness=best["fitness"] if best else None,
                        evaluations=evaluations, history=history, budget_used=used,
                        pareto=pareto)
