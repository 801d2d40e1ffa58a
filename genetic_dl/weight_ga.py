"""The weight-level GA hybrid with gradient descent (GDNN).

Each generation the whole population trains for a few epochs (one vmapped
program), is scored on the validation split, and a jitted step selects
parents, crosses their weight tensors over and mutates the children, which
train on in the next generation. ``rule`` picks the generation rule:
``"ga"`` (selection + crossover + mutation), ``"pbt"`` (exploit/explore, no
crossover), ``"de"`` (DE/rand/1/bin with greedy replacement) or ``"none"``
(independent training: the best-of-P equal-compute control).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import crossover as crossover_mod
from . import matching
from . import mutation as mutation_mod
from . import permutation
from . import selection as selection_mod
from . import sharding
from .alignment import FIELDS as ALIGNMENT_FIELDS
from .alignment import MATCH_TO, Alignment  # noqa: F401  pylint: disable=unused-import
from .data import Dataset
from .optimizers import make_optimizer
from .records import fitness_summary
from .records import to_pandas as records_to_pandas
from .population import Population, raw_key
from .train import evaluate, fitness_from_metrics, train

RULES = ("ga", "pbt", "de", "none")
OPT_STATE_RULES = ("reset", "inherit", "average")
FitnessFn = Union[str, Callable[[Dict[str, jax.Array]], jax.Array]]


@dataclasses.dataclass(frozen=True)
class WeightGAConfig:
    """Static options of the weight GA (hashable: part of the compiled step).

    Attributes:
      rule: generation rule, one of :data:`RULES`.
      selection, selection_kw: a :data:`~genetic_dl.selection.SELECTIONS` name
        and its options (as a tuple of pairs, e.g. ``(("k", 3),)``).
      crossover, crossover_kw: a :data:`~genetic_dl.crossover.CROSSOVERS` name
        and its options.
      alignment: with ``crossover="aligned"``, how units are matched before
        crossing (:class:`~genetic_dl.alignment.Alignment`: base crossover,
        matcher, match_to, passes, every); default ``Alignment()``. Its options
        given in ``crossover_kw`` instead move here.
      crossover_prob: probability that a child is a crossover (else a copy of
        its first parent).
      distinct_parents: draw the second parent among the other members, so
        that no child is a crossover of a member with itself (a mere clone).
      elitism: number of top members copied unchanged (permuted to the best
        member's unit order in generations where aligned crossover matches to it).
      mutation_rate, mutation_scale: fraction of weights mutated and the noise
        scale relative to each tensor's std.
      mutation_decay: lambda of ``mu(t) = mu0 exp(-lambda t)``.
      self_adaptive: each member carries its own mutation scale, mutated
        log-normally (SAMR-GA style).
      noise_table: mutation noise read from a shared precomputed table of
        N(0, 1) values at random offsets (as in OpenAI's evolution strategies)
        instead of drawn fresh: see :func:`~genetic_dl.mutation.noise_table`.
      hall_of_fame: distinct best members kept (with their params) in the result.
      boltzmann_growth: per-generation growth of Boltzmann selection's beta.
      opt_state: a child's optimizer state, one of :data:`OPT_STATE_RULES`.
      pbt_quantile, pbt_bounds, pbt_resample: PBT options; bounds as
        ``(("learning_rate", (1e-4, 1e-1)), ...)``.
      de_f, de_cr: DE's F and CR.
    """
    rule: str = "ga"
    selection: str = "tournament"
    selection_kw: Tuple[Tuple[str, Any], ...] = ()
    crossover: str = "uniform"
    crossover_kw: Tuple[Tuple[str, Any], ...] = ()
    alignment: Optional[Alignment] = None
    crossover_prob: float = 1.0
    distinct_parents: bool = False
    elitism: int = 1
    mutation_rate: float = 0.05
    mutation_scale: float = 0.1
    mutation_decay: float = 0.0
    self_adaptive: bool = False
    noise_table: bool = False
    hall_of_fame: int = 5
    boltzmann_growth: float = 1.0
    opt_state: str = "reset"
    pbt_quantile: float = 0.25
    pbt_bounds: Tuple[Tuple[str, Tuple[float, float]], ...] = (("learning_rate", (1e-4, 1e-1)),)
    pbt_resample: float = 0.0
    de_f: float = 0.5
    de_cr: float = 0.9

    def __post_init__(self):
        for name in ("crossover_prob", "mutation_rate", "mutation_scale", "mutation_decay",
                     "boltzmann_growth", "pbt_quantile", "pbt_resample", "de_f", "de_cr"):
            try:  # an int (crossover_prob=0) would reach jax.random as an int
                object.__setattr__(self, name, float(getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}") from None
        for value, options, what in ((self.rule, RULES, "rule"),
                                     (self.opt_state, OPT_STATE_RULES, "opt_state"),
                                     (self.selection, selection_mod.SELECTIONS, "selection"),
                                     (self.crossover, crossover_mod.CROSSOVERS, "crossover")):
            if value not in options:
                raise ValueError(f"unknown {what} {value!r}: choose one of {', '.join(options)}")
        self._resolve_alignment()
        if not 0 <= self.mutation_rate <= 1 or not 0 <= self.crossover_prob <= 1:
            raise ValueError("mutation_rate and crossover_prob must be in [0, 1]")
        if self.elitism < 0 or self.mutation_scale < 0 or self.mutation_decay < 0:
            raise ValueError("elitism, mutation_scale and mutation_decay must be >= 0")

    def _resolve_alignment(self):
        kw = dict(self.crossover_kw)
        moved = {k: kw.pop(k) for k in ALIGNMENT_FIELDS if k in kw}
        if self.crossover != "aligned":  # e.g. dataclasses.replace(aligned, crossover=...)
            object.__setattr__(self, "alignment", None)
            return
        if moved and self.alignment is not None:
            raise ValueError(f"aligned crossover's options {sorted(moved)} are given both in "
                             "crossover_kw and in alignment=: give them in alignment= only")
        object.__setattr__(self, "alignment", self.alignment or Alignment(**moved))
        object.__setattr__(self, "crossover_kw", tuple(kw.items()))

    @property
    def _aligned(self) -> Alignment:
        return self.alignment if self.alignment is not None else Alignment()

    @property
    def matcher(self) -> str:
        """Weight matching of aligned crossover (``alignment.matcher``)."""
        return self._aligned.matcher

    @property
    def match_to(self) -> str:
        """What aligned crossover matches units to (``alignment.match_to``)."""
        return self._aligned.match_to

    @property
    def match_passes(self) -> Optional[int]:
        """Weight-matching sweeps of aligned crossover (None: until converged)."""
        return self._aligned.passes

    @property
    def match_every(self) -> int:
        """Aligned crossover with ``match_to="best"`` re-matches every this many generations."""
        return self._aligned.every


@dataclasses.dataclass
class WeightGAResult:
    """What :func:`evolve_weights` returns.

    Attributes:
      population: the final trained population.
      best_params: params of the best member ever seen (validation fitness).
      best_fitness: its fitness; ``best_id`` its member id; ``best_generation``.
      best_metrics: its validation metrics.
      history: one dict per generation (best/mean/std fitness, failed,
        diversity, network_epochs, elapsed).
      lineage: ``(generation, child_id, parent_a_id, parent_b_id)`` per child.
      hall_of_fame: the best distinct members ever seen, best first:
        ``{fitness, id, generation, params}`` each.
    """
    population: Population
    best_params: Any
    best_fitness: float
    best_id: int
    best_generation: int
    best_metrics: Dict[str, float]
    history: List[Dict[str, float]]
    lineage: List[Tuple[int, int, int, int]]
    hall_of_fame: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_pandas(self, what: str = "history"):
        """``history`` (one row per generation) or ``lineage`` as a ``pandas.DataFrame``."""
        if what == "lineage":
            return records_to_pandas([dict(zip(("generation", "child", "parent_a", "parent_b"),
                                               row)) for row in self.lineage])
        return records_to_pandas([{k: v for k, v in h.items()
                                   if k not in ("member_ids", "member_fitness")}
                                  for h in self.history])


@jax.jit
def diversity(params) -> jax.Array:
    """Mean RMS distance of the members' weights to the population's mean weights."""
    leaves = jax.tree_util.tree_leaves(params)
    sq = sum(jnp.sum((x - x.mean(0)) ** 2, axis=tuple(range(1, x.ndim))) for x in leaves)
    n = sum(x[0].size for x in leaves)
    return jnp.mean(jnp.sqrt(sq / n))


def _permute_states(like, perms, spec, *states):
    """``states``' subtrees shaped like ``like`` permuted per member by ``perms``:
    chain permutations (a tuple) without ``spec``, ``{group: perm}`` with one."""
    if spec is None:
        return matching.permute_states(like, perms, *states)
    return permutation.permute_states(like, spec, perms, *states)


def _child_opt_state(population: Population, params, hparams, a, b, rule: str, mesh=None,
                     perms_a=None, perms_b=None, spec=None):
    if rule == "reset":
        init = jax.vmap(lambda p, h: make_optimizer(population.optimizer, h).init(p))
        return init(params, hparams)
    # rows by parent index, from a replicated copy (see _children)
    whole = sharding.constrain(population.opt_state, mesh, split=False)
    state = jax.tree_util.tree_map(lambda s: s[a], whole)
    if perms_a is not None:  # a's moments follow its units, permuted to the best's order
        state, = _permute_states(params, perms_a, spec, state)
    if rule == "average":
        state_b = jax.tree_util.tree_map(lambda s: s[b], whole)
        if perms_b is not None:  # b's moments follow its units, permuted like its weights
            state_b, = _permute_states(params, perms_b, spec, state_b)
        state = jax.tree_util.tree_map(
            lambda x, y: (x + y) / 2 if jnp.issubdtype(x.dtype, jnp.floating) else x,
            state, state_b)
    return sharding.constrain(state, mesh, split=True)


def _rows(head, rest):
    """``rest`` behind ``head`` placeholder rows (copies of its first row, or zeros)."""
    fill = rest[:1] if rest.shape[0] else jnp.zeros((1,) + rest.shape[1:], rest.dtype)
    return jnp.concatenate([jnp.broadcast_to(fill, (head,) + rest.shape[1:]), rest])


def _take_rows(tree, rows, mesh):
    """``tree``'s rows ``rows``, gathered from a replicated copy, split again over ``mesh``."""
    whole = sharding.constrain(tree, mesh, split=False)
    return sharding.constrain(jax.tree_util.tree_map(lambda x: x[rows], whole), mesh, split=True)


def _cross(keys, parent_a, parent_b, config: WeightGAConfig, mesh, spec):
    """Children's ``(params, collections, perms_b)`` from rows of ``(params, collections)``
    of parents a and b (see :func:`_children`)."""
    (pa, ca), (pb, cb) = parent_a, parent_b
    name, kw = config.crossover, dict(config.crossover_kw)
    perms_b = None
    if name == "aligned":
        name = config.alignment.base
        if config.match_to == "parent" and spec is not None:
            perms_b = jax.vmap(lambda x, y: permutation.match(spec, x, y, config.match_passes))(
                {**pa, **ca}, {**pb, **cb})
            moved = jax.vmap(lambda v, p: permutation.permute(v, spec, p))({**pb, **cb}, perms_b)
            pb, cb = {"params": moved["params"]}, {k: moved[k] for k in cb}
        elif config.match_to == "parent":  # else ga_step matched them to the best member
            perms_b = matching.match_pairs(pa, pb, config.match_passes, mesh)
            pb, = matching.permute_population(pb, perms_b)
    if config.crossover_prob == 0:  # static: skip the work, not only its result
        return pa, ca, perms_b
    if spec is not None and name == "per_neuron":  # units move with their statistics
        joint = jax.vmap(functools.partial(permutation.per_neuron, spec=spec))(
            keys, {**pa, **ca}, {**pb, **cb})
        return {"params": joint["params"]}, {k: joint[k] for k in ca}, perms_b
    return jax.vmap(crossover_mod.get(name, **kw))(keys, pa, pb), ca, perms_b


def _children(key, population: Population, a, b, generation, config: WeightGAConfig, n_elite,
              mesh=None, spec=None):
    """Crossover of parents ``a`` x ``b`` then mutation, in row space.

    ``a`` and ``b`` hold one row per member of the next generation, the elites
    first (their rows are placeholders the caller overwrites): every array is
    computed per row, so a population sharded over devices stays sharded and
    no member moves between devices except the parents' weights. The
    placeholder rows reuse the first child's random keys, so every child is
    exactly what it would be if computed alone.

    With a permutation ``spec`` (per-neuron and aligned crossover of a model
    that is not a plain ``Conv_i``/``Dense_i`` chain), units carry their
    collections (e.g. BatchNorm statistics) with them: a per-neuron child's
    unit has the statistics of the parent it came from; children of other
    base crossovers keep their first parent's statistics.

    Returns:
      ``(params, hparams, b, perms_b, collections)`` per row: ``b`` the parent
      each child took genes from, ``perms_b`` how its units were permuted to
      match the first parent's (greedy aligned crossover; else None).
    """
    n_child = a.shape[0] - n_elite
    k_cross, k_do, k_mut, k_sigma = jax.random.split(key, 4)
    pa, pb = (_take_rows(population.params, rows, mesh) for rows in (a, b))
    ca, cb = (_take_rows(population.collections, rows, mesh) for rows in (a, b))
    crossed = _rows(n_elite, jax.random.bernoulli(k_do, config.crossover_prob, (n_child,)))
    child_keys = _rows(n_elite, jax.random.split(k_cross, n_child))
    children, collections, perms_b = _cross(child_keys, (pa, ca), (pb, cb), config, mesh, spec)
    if 0 < config.crossover_prob < 1:
        def keep(c, x):
            return jnp.where(crossed.reshape((-1,) + (1,) * (c.ndim - 1)), c, x)
        children = jax.tree_util.tree_map(keep, children, pa)
        collections = jax.tree_util.tree_map(keep, collections, ca)
    hparams = {k: v[a] for k, v in population.hparams.items()}
    rate = mutation_mod.decayed_rate(config.mutation_rate, config.mutation_decay, generation)
    if config.self_adaptive:
        # No slice of a row-space array: under the sharding constraints XLA
        # (jax 0.10.2) returned a wrong row for one (tests/test_train.py
        # compares with one device). The factor is exp(tau N(0, 1)).
        factor = mutation_mod.self_adaptive_scale(k_sigma, jnp.ones(n_child))
        hparams["mutation_scale"] = hparams["mutation_scale"] * _rows(n_elite, factor)
        scale = hparams["mutation_scale"]
    else:
        scale = jnp.full(a.shape, config.mutation_scale)
    # A static bound on the (decaying) rate lets mutation draw positions, not coins.
    max_rate = config.mutation_rate if 0 < config.mutation_rate <= 0.25 else None
    mutate = functools.partial(mutation_mod.gaussian, max_rate=max_rate,
                               table=mutation_mod.noise_table() if config.noise_table else None)
    if config.mutation_rate > 0:
        children = jax.vmap(mutate, in_axes=(0, 0, None, 0))(
            _rows(n_elite, jax.random.split(k_mut, n_child)), children, rate, scale)
    if perms_b is not None:  # a copy of parent a keeps a's units (and moments) as they are
        perms_b = jax.tree_util.tree_map(
            lambda p: jnp.where(crossed[:, None], p, jnp.arange(p.shape[1], dtype=p.dtype)),
            perms_b)
    return children, hparams, jnp.where(crossed, b, a), perms_b, collections


def ga_step(key, population: Population, fitness, generation, config: WeightGAConfig):
    """One select -> cross -> mutate step (rule ``"ga"``), two jitted programs.

    The parents are selected first. Aligned crossover with ``match_to="best"``
    then matches them and the elites to the best member (on the device, or
    partly on the host with ``matcher="exact"``: see
    :func:`~genetic_dl.matching.match_population`) in the generations it
    re-matches, and permutes them inside the jitted step.

    Args:
      key: PRNG key.
      population: the trained population.
      fitness: ``(P,)`` fitness (maximised; NaN failed).
      generation: generation index (drives decay, beta schedules and when
        aligned crossover re-matches).
      config: static options.

    Returns:
      ``(population, parents)``: the next generation (elites first) and
      ``(P, 2)`` parent indices into the old population.
    """
    elite, a, b = _select(key, fitness, generation, config)
    perms, spec = None, _unit_spec(population, config)
    if config.crossover == "aligned" and spec is not None:
        if config.match_to == "best" and int(generation) % config.match_every == 0:
            best = selection_mod.elites(jnp.asarray(fitness), 1)[0]
            perms = permutation.match_to_member(
                {**population.params, **population.collections}, best, spec,
                config.match_passes)
    elif config.crossover == "aligned":
        if "widths" in population.hparams:
            raise ValueError("aligned crossover cannot permute width-padded members (their unit "
                             "masks keep the first units): use per_neuron or uniform")
        if config.match_to == "best" and int(generation) % config.match_every == 0:
            best = selection_mod.elites(jnp.asarray(fitness), 1)[0]
            if config.matcher == "greedy":  # every member, each device its own; no host sync
                perms = matching.match_on_device(population.params, best, config.match_passes,
                                                 sharding.mesh_of(population.params))
            else:
                members = np.union1d(np.asarray(elite), np.union1d(np.asarray(a), np.asarray(b)))
                perms = matching.match_population(population.params, int(best),
                                                  members=members,
                                                  passes=config.match_passes,
                                                  matcher="exact")
    return _ga_step(key, population, generation, config, perms, elite, a, b,
                    sharding.mesh_of(population.params), spec)


def _is_chain(population: Population) -> bool:
    try:
        matching.unit_chain(population.params)
    except ValueError:
        return False
    return True


def _unit_spec(population: Population, config: WeightGAConfig):
    """The permutation spec per-neuron and aligned crossover use, or ``None`` for a plain
    ``Conv_i``/``Dense_i`` chain without collections (the same operators, on
    :mod:`genetic_dl.matching`'s chain functions)."""
    if config.crossover not in ("per_neuron", "aligned"):
        return None
    learner = population.learner
    if (learner.permutation_spec is None and not population.collections
            and _is_chain(population)):
        return None
    if config.matcher != "greedy":
        raise ValueError("exact weight matching needs a plain Conv/Dense chain; with a "
                         "permutation spec use matcher='greedy'")
    if "widths" in population.hparams:
        raise ValueError("per-neuron and aligned crossover of width-padded members need a "
                         "plain Conv/Dense chain")
    return permutation.spec_of(population)


@functools.partial(jax.jit, static_argnames=("config",))
def _select(key, fitness, generation, config: WeightGAConfig):
    """Elite indices and the parents ``a``, ``b`` of every child."""
    size = fitness.shape[0]
    n_elite = min(config.elitism, size)
    n_child = size - n_elite
    k_sel = jax.random.split(raw_key(key), 3)[0]
    sel_kw = dict(config.selection_kw)
    if config.selection == "boltzmann":
        sel_kw["beta"] = selection_mod.beta_schedule(sel_kw.get("beta", 1.0),
                                                     config.boltzmann_growth, generation)
    select = selection_mod.get(config.selection, **sel_kw)
    picks = select(k_sel, fitness, 2 * n_child)
    a, b = picks[0::2], picks[1::2]
    if config.distinct_parents and size > 1:
        def other(k, i):  # the same operator, with parent a out of the running
            return select(k, jnp.asarray(fitness, jnp.float32).at[i].set(jnp.nan), 1)[0]
        redraw = jax.vmap(other)(jax.random.split(jax.random.fold_in(k_sel, 1), n_child), a)
        b = jnp.where(a == b, redraw, b)
    return selection_mod.elites(fitness, n_elite), a, b


def _split(population: Population, mesh) -> Population:
    return population.replace(params=sharding.constrain(population.params, mesh, True),
                              opt_state=sharding.constrain(population.opt_state, mesh, True))


@functools.partial(jax.jit, static_argnames=("config", "mesh", "spec"))
def _ga_step(key, population: Population, generation, config: WeightGAConfig, perms, elite,
             a, b, mesh=None, spec=None):
    key = raw_key(key)
    n_elite, n_child = elite.shape[0], a.shape[0]
    _, k_child, k_keys = jax.random.split(key, 3)
    source = population  # with perms: params in the best member's unit order, elites too
    if perms is not None and spec is not None:
        moved = jax.vmap(lambda v, p: permutation.permute(v, spec, p))(
            {**population.params, **population.collections}, perms)
        source = population.replace(params={"params": moved["params"]},
                                    collections={k: moved[k] for k in population.collections})
    elif perms is not None:
        # optimizer states are permuted by rows, only those a child or an elite keeps
        source = population.replace(
            params=matching.permute_population(population.params, perms)[0])
    rows_a, rows_b = jnp.concatenate([elite, a]), jnp.concatenate([elite, b])
    params, hparams, rows_b, perms_b, collections = _children(
        k_child, source, rows_a, rows_b, generation, config, n_elite, mesh, spec)
    perms_a = None
    if perms is not None:
        perms_a, perms_b = (jax.tree_util.tree_map(lambda p, rows=rows: p[rows], perms)
                            for rows in (rows_a, rows_b))
    opt_state = _child_opt_state(source, params, hparams, rows_a, rows_b, config.opt_state, mesh,
                                 perms_a, perms_b, spec)
    first_new = jnp.max(population.ids) + 1
    keys = _rows(n_elite, jax.vmap(functools.partial(jax.random.fold_in, k_keys))(
        jnp.arange(n_child)))
    # Mutable collections (e.g. BatchNorm statistics) are estimates of a unit's
    # activations, not genes: never mutated, and they follow units in crossover.
    new = population.replace(
        params=params, opt_state=opt_state, hparams=hparams, keys=keys,
        collections=sharding.constrain(collections, mesh, split=True),
        ids=(first_new - n_elite + jnp.arange(n_elite + n_child)).astype(jnp.int32),
        failed=jnp.zeros(n_elite + n_child, bool))
    # Elites overwrite their rows in place: concatenating them in front of the
    # children would shift every member across the devices' shard boundaries.
    elites = jax.tree_util.tree_map(lambda x: x[elite], source)
    if perms is not None:
        elites = elites.replace(opt_state=_permute_states(
            elites.params, jax.tree_util.tree_map(lambda p: p[elite], perms), spec,
            elites.opt_state)[0])
    merged = jax.tree_util.tree_map(lambda x, e: x.at[:n_elite].set(e), new, elites)
    return _split(merged, mesh), jnp.stack([rows_a, rows_b], 1)


@functools.partial(jax.jit, static_argnames=("config",))
def pbt_step(key, population: Population, fitness, config: WeightGAConfig):
    """PBT exploit/explore: the bottom quantile copies the top and perturbs hyperparameters.

    Returns:
      ``(population, parents)`` as :func:`ga_step`; a copied member gets a new id.
    """
    key = raw_key(key)
    k_pbt, k_keys = jax.random.split(key)
    source, hparams = mutation_mod.pbt_exploit_explore(
        k_pbt, fitness, population.hparams, dict(config.pbt_bounds), config.pbt_quantile,
        config.pbt_resample)
    copied = source != jnp.arange(population.size)
    new = jax.tree_util.tree_map(lambda x: x[source], population)
    fresh_keys = jax.vmap(functools.partial(jax.random.fold_in, k_keys))(
        jnp.arange(population.size))
    ids = jnp.where(copied, jnp.max(population.ids) + 1 + jnp.cumsum(copied) - 1,
                    population.ids).astype(jnp.int32)
    new = new.replace(hparams=hparams, ids=ids, failed=jnp.where(copied, False, new.failed),
                      keys=jnp.where(copied[:, None], fresh_keys, population.keys))
    return new, jnp.stack([source, source], 1)


@functools.partial(jax.jit, static_argnames=("config",))
def de_trials(key, population: Population, config: WeightGAConfig) -> Population:
    """DE/rand/1/bin trial members with fresh optimizer state and new ids."""
    key = raw_key(key)
    k_de, k_keys = jax.random.split(key)
    trials = mutation_mod.de_rand_1_bin(k_de, population.params, config.de_f, config.de_cr)
    opt = jax.vmap(lambda p, h: make_optimizer(population.optimizer, h).init(p))(
        trials, population.hparams)
    keys = jax.vmap(functools.partial(jax.random.fold_in, k_keys))(jnp.arange(population.size))
    return population.replace(params=trials, opt_state=opt, keys=keys,
                              ids=(jnp.max(population.ids) + 1
                                   + jnp.arange(population.size)).astype(jnp.int32),
                              failed=jnp.zeros(population.size, bool))


def _fitness(population, data, fitness: FitnessFn):
    metrics = evaluate(population, data, "val")
    if callable(fitness):
        fit = jnp.asarray(fitness(metrics), jnp.float32)
        fit = jnp.where(population.failed | ~jnp.isfinite(fit), jnp.nan, fit)
    else:
        fit = fitness_from_metrics(metrics, fitness, population.failed,
                                   population.learner.maximize(fitness))
    return fit, metrics


def _greedy_replace(trial, target):
    """DE's survivor selection: each trial replaces its target unless it is worse."""
    keep = np.asarray(selection_mod.clean_fitness(trial[1])
                      >= selection_mod.clean_fitness(target[1]))

    def pick(t, o):
        return jnp.where(keep.reshape((-1,) + (1,) * (t.ndim - 1)), t, o)
    population = jax.tree_util.tree_map(pick, trial[0], target[0])
    metrics = {k: jnp.where(keep, v, target[2][k]) for k, v in trial[2].items()}
    return population, jnp.where(keep, trial[1], target[1]), metrics


@dataclasses.dataclass
class LoopState:
    """Everything :func:`evolve_weights` needs to continue a run exactly (a checkpoint).

    Attributes:
      generation: the next generation to train.
      population: the population that generation trains.
      key: the GA's raw PRNG key.
      spent: network-epochs spent so far.
      history, lineage: as in :class:`WeightGAResult`.
      best: ``{fitness, params, id, generation, metrics}`` of the best so far.
      prev: DE only: ``(targets, fitness, metrics)`` the trials compete with.
      hall: the hall of fame so far (see :class:`WeightGAResult`).
    """
    generation: int
    population: Population
    key: jax.Array
    spent: int = 0
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    lineage: List[Tuple[int, int, int, int]] = dataclasses.field(default_factory=list)
    best: Dict[str, Any] = dataclasses.field(default_factory=lambda: {
        "fitness": -np.inf, "params": None, "id": -1, "generation": -1, "metrics": {}})
    prev: Optional[Tuple[Population, Any, Dict[str, Any]]] = None
    hall: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


def evolve_weights(key: jax.Array, population: Population, data: Dataset, *, generations: int,
                   epochs: int, batch_size: int = 64, config: Optional[WeightGAConfig] = None,
                   fitness: FitnessFn = "loss",
                   callbacks: Sequence[Callable[[int, Population, Mapping[str, Any]], bool]] = (),
                   mesh="auto", resume: Optional[LoopState] = None,
                   on_state: Optional[Callable[[LoopState], None]] = None) -> WeightGAResult:
    """Runs the GDNN loop: train ``epochs`` -> validation fitness -> GA step, G times.

    Args:
      key: PRNG key of the GA's own randomness (training uses member keys).
      population: the initial population (e.g. from ``init_population``).
      data: dataset; fitness only ever sees its validation split.
      generations: number of generations G (each trains ``epochs`` epochs).
      epochs: epochs per generation.
      batch_size: minibatch size.
      config: GA options; ``WeightGAConfig()`` when ``None``.
      fitness: a metric name (``"loss"``: negated validation loss,
        ``"accuracy"``, ``"f1"``...) or ``f(metrics) -> (P,)`` to maximise.
      callbacks: ``cb(generation, population, record) -> stop?`` after each
        generation's evaluation.
      mesh: as in :func:`~genetic_dl.train.train`.
      resume: a :class:`LoopState` to continue from (``key`` and ``population``
        are then ignored); the result equals the uninterrupted run's.
      on_state: called with the :class:`LoopState` after every GA step (to
        write checkpoints).

    Returns:
      A :class:`WeightGAResult`.
    """
    config = config or WeightGAConfig()
    if generations < 1:
        raise ValueError(f"generations must be at least 1, got {generations}")
    if config.self_adaptive and "mutation_scale" not in population.hparams:
        hp = dict(population.hparams,
                  mutation_scale=jnp.full((population.size,), config.mutation_scale))
        population = population.replace(hparams=hp)
    state = resume or LoopState(generation=0, population=population, key=raw_key(key))
    start = time.perf_counter()
    for gen in range(state.generation, generations):
        population, _ = train(state.population, data, epochs, batch_size=batch_size, mesh=mesh)
        state.spent += population.size * epochs
        fit, metrics = _fitness(population, data, fitness)
        if config.rule == "de" and state.prev is not None:
            population, fit, metrics = _greedy_replace((population, fit, metrics), state.prev)
        record = _record(gen, population, np.asarray(fit), metrics, state,
                         time.perf_counter() - start)
        _update_hall(state, population, np.asarray(fit), gen, config.hall_of_fame)
        state.history.append(record)
        stop = any(bool(cb(gen, population, record)) for cb in callbacks)
        state.population = population
        if stop or gen == generations - 1:
            break
        _advance(state, fit, metrics, gen, config)
        if on_state is not None:
            on_state(state)
    best = state.best
    return WeightGAResult(population=state.population, best_params=best["params"],
                          best_fitness=best["fitness"], best_id=best["id"],
                          best_generation=best["generation"], best_metrics=best["metrics"],
                          history=state.history, lineage=state.lineage,
                          hall_of_fame=list(state.hall))


def _update_hall(state: LoopState, population, fit: np.ndarray, gen: int, size: int) -> None:
    """Merges this generation's best members into the hall of fame (one entry per id)."""
    ids = np.asarray(population.ids)
    order = [int(i) for i in np.argsort(-np.nan_to_num(fit, nan=-np.inf), kind="stable")
             if np.isfinite(fit[i])][:size]
    hall = {h["id"]: h for h in state.hall}
    fresh = {}
    for i in order:
        member = int(ids[i])
        if member not in hall or fit[i] > hall[member]["fitness"]:
            hall[member] = {"fitness": float(fit[i]), "id": member, "generation": gen,
                            "params": None}
            fresh[member] = i
    ranked = sorted(hall.values(), key=lambda h: (-h["fitness"], h["id"]))[:size]
    for h in ranked:
        if h["id"] in fresh:  # copy params only of members that made it in
            h["params"] = jax.device_get(population.member(fresh[h["id"]]))
    state.hall = ranked


def _record(gen, population, fit_np, metrics, state: LoopState, elapsed) -> Dict[str, Any]:
    """The generation's history record; updates ``state.best``."""
    record = {"generation": gen, **fitness_summary(fit_np),
              "diversity": float(diversity(population.params)),
              "network_epochs": state.spent, "elapsed": elapsed,
              "member_ids": np.asarray(population.ids).tolist(),
              "member_fitness": fit_np.tolist()}
    if np.isfinite(fit_np).any():
        i = int(np.nanargmax(fit_np))
        record["best_metrics"] = {k: float(v[i]) for k, v in metrics.items()}
        if fit_np[i] > state.best["fitness"]:
            state.best = {"fitness": float(fit_np[i]),
                          "params": jax.device_get(population.member(i)),
                          "id": int(population.ids[i]), "generation": gen,
                          "metrics": record["best_metrics"]}
    return record


def _advance(state: LoopState, fit, metrics, gen: int, config: WeightGAConfig) -> None:
    """Applies the generation rule: ``state`` then holds generation ``gen + 1``."""
    population = state.population
    key, k_step = jax.random.split(state.key)
    old_ids = np.asarray(population.ids)
    parents = None
    if config.rule == "ga":
        population, parents = ga_step(k_step, population, fit, gen, config)
    elif config.rule == "pbt":
        population, parents = pbt_step(k_step, population, fit, config)
    elif config.rule == "de":
        state.prev = (population, fit, metrics)
        population = de_trials(k_step, population, config)
        parents = jnp.stack([jnp.arange(population.size)] * 2, 1)
    if parents is not None:
        new_ids, parents = np.asarray(population.ids), np.asarray(parents)
        state.lineage.extend((gen + 1, int(c), int(old_ids[pa]), int(old_ids[pb]))
                             for c, (pa, pb) in zip(new_ids, parents) if c not in old_ids)
    state.population, state.key, state.generation = population, key, gen + 1
