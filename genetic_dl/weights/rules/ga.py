"""One generation of the weight GA: selection, (aligned) crossover of weight tensors and
mutation, as one jitted, sharded program over the population."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Tuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ...operators import crossover as crossover_mod
from ...operators import matching
from ...operators import mutation as mutation_mod
from ...operators import permutation
from ...operators import selection as selection_mod
from ...operators.alignment import Alignment
from ...core import sharding
from ...core.optimizers import make_optimizer
from ...core.permutation_spec import PermutationSpec
from ...core.population import Population, raw_key
from ...errors import check
from ..config import WeightGAConfig
from .base import Metrics, RuleBase, StepInfo


UNIT_CROSSOVERS = ("per_neuron", "aligned")  # crossovers that move whole units: need a spec


def _permuted(params: Any, collections: Any, spec: PermutationSpec,
              perms: Any) -> Tuple[Any, Any]:
    """Stacked ``(params, collections)`` with each member's units reordered by its row of
    ``perms``: a unit's statistics move with its weights."""
    moved = jax.vmap(lambda v, p: permutation.permute(v, spec, p))({**params, **collections},
                                                                   perms)
    return {"params": moved["params"]}, {k: moved[k] for k in collections}


def _child_opt_state(population: Population, params: Any, hparams: Any, a: jax.Array,
                     b: jax.Array, rule: str, mesh: Any = None, perms_a: Any = None,
                     perms_b: Any = None, spec: Optional[PermutationSpec] = None) -> Any:
    if rule == "reset":
        init = jax.vmap(lambda p, h: make_optimizer(population.optimizer, h).init(p))
        return init(params, hparams)
    # rows by parent index, from a replicated copy (see _children)
    whole = sharding.constrain(population.opt_state, mesh, split=False)
    state = jax.tree_util.tree_map(lambda s: s[a], whole)
    if perms_a is not None:  # a's moments follow its units, permuted to the best's order
        state, = permutation.permute_states(params, _needed(spec), perms_a, state)
    if rule == "average":
        state_b = jax.tree_util.tree_map(lambda s: s[b], whole)
        if perms_b is not None:  # b's moments follow its units, permuted like its weights
            state_b, = permutation.permute_states(params, _needed(spec), perms_b, state_b)
        state = jax.tree_util.tree_map(
            lambda x, y: (x + y) / 2 if jnp.issubdtype(x.dtype, jnp.floating) else x,
            state, state_b)
    return sharding.constrain(state, mesh, split=True)


def _needed(spec: Optional[PermutationSpec]) -> PermutationSpec:
    """The spec of a step that moves units (the step derives one whenever it does)."""
    if spec is None:
        raise AssertionError("a crossover that moves units was given no permutation spec")
    return spec


def _rows(head: int, rest: jax.Array) -> jax.Array:
    """``rest`` behind ``head`` placeholder rows (copies of its first row, or zeros)."""
    fill = rest[:1] if rest.shape[0] else jnp.zeros((1,) + rest.shape[1:], rest.dtype)
    return jnp.concatenate([jnp.broadcast_to(fill, (head,) + rest.shape[1:]), rest])


def _take_rows(tree: Any, rows: jax.Array, mesh: Any) -> Any:
    """``tree``'s rows ``rows``, gathered from a replicated copy, split again over ``mesh``."""
    whole = sharding.constrain(tree, mesh, split=False)
    return sharding.constrain(jax.tree_util.tree_map(lambda x: x[rows], whole), mesh, split=True)


def _cross(keys: jax.Array, parent_a: Tuple[Any, Any], parent_b: Tuple[Any, Any],
           config: WeightGAConfig, mesh: Any,
           spec: Optional[PermutationSpec]) -> Tuple[Any, Any, Any]:
    """Children's ``(params, collections, perms_b)`` from rows of ``(params, collections)``
    of parents a and b (see :func:`_children`)."""
    (pa, ca), (pb, cb) = parent_a, parent_b
    name, kw = config.crossover, dict(config.crossover_kw)
    perms_b = None
    if name == "aligned":
        name = cast(Alignment, config.alignment).base
        if config.match_to == "parent":  # else ga_step matched them to the best member
            perms_b = matching.match_pairs({**pa, **ca}, {**pb, **cb}, _needed(spec),
                                           config.match_passes, mesh)
            pb, cb = _permuted(pb, cb, _needed(spec), perms_b)
    if config.crossover_prob == 0:  # static: skip the work, not only its result
        return pa, ca, perms_b
    if name == "per_neuron":  # units move with their statistics
        joint = jax.vmap(functools.partial(permutation.per_neuron, spec=_needed(spec)))(
            keys, {**pa, **ca}, {**pb, **cb})
        return {"params": joint["params"]}, {k: joint[k] for k in ca}, perms_b
    return jax.vmap(crossover_mod.get(name, **kw))(keys, pa, pb), ca, perms_b


def _child_scales(key: jax.Array, scales: jax.Array, a: jax.Array, n_elite: int) -> jax.Array:
    """Self-adaptive mutation scales per row: a child's is its first parent's times
    exp(tau N(0, 1)); an elite's row keeps its own."""
    # No slice of a row-space array: under the sharding constraints XLA
    # (jax 0.10.2) returned a wrong row for one (tests/test_train.py
    # compares with one device).
    factor = mutation_mod.self_adaptive_scale(key, jnp.ones(a.shape[0] - n_elite))
    inherited = scales[a]
    return jnp.where(jnp.arange(a.shape[0]) < n_elite, inherited,
                     inherited * _rows(n_elite, factor))


def _children(key: jax.Array, population: Population, a: jax.Array, b: jax.Array,
              generation: Any, config: WeightGAConfig, n_elite: int, mesh: Any = None,
              spec: Optional[PermutationSpec] = None,
              scales: Optional[jax.Array] = None) -> Tuple[Any, ...]:
    """Crossover of parents ``a`` x ``b`` then mutation, in row space.

    ``a`` and ``b`` hold one row per member of the next generation, the elites
    first (their rows are placeholders the caller overwrites): every array is
    computed per row, so a population sharded over devices stays sharded and
    no member moves between devices except the parents' weights. The
    placeholder rows reuse the first child's random keys, so every child is
    exactly what it would be if computed alone.

    Per-neuron and aligned crossover move units by the model's permutation
    ``spec``, and units carry their collections (e.g. BatchNorm statistics)
    with them: a per-neuron child's unit has the statistics of the parent it
    came from; children of other base crossovers keep their first parent's
    statistics.

    With ``config.self_adaptive``, ``scales`` are the members' own mutation
    scales: a child inherits its first parent's, perturbed log-normally, and
    mutates with it.

    Returns:
      ``(params, hparams, b, perms_b, collections, scales)`` per row: ``b`` the
      parent each child took genes from, ``perms_b`` how its units were permuted
      to match the first parent's (greedy aligned crossover; else None),
      ``scales`` the children's mutation scales (``None`` unless self-adaptive).
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
    scales = None if scales is None else _child_scales(k_sigma, scales, a, n_elite)
    scale = jnp.full(a.shape, config.mutation_scale) if scales is None else scales
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
    return children, hparams, jnp.where(crossed, b, a), perms_b, collections, scales


def ga_step(key: jax.Array, population: Population, fitness: jax.Array, generation: int,
            config: WeightGAConfig,
            scales: Optional[jax.Array] = None) -> Tuple[Population, jax.Array]:
    """One select -> cross -> mutate step (rule ``"ga"``), two jitted programs.

    The parents are selected first. Aligned crossover with ``match_to="best"``
    then matches them and the elites to the best member (on the device, or
    partly on the host with ``matcher="exact"``: see
    :func:`~genetic_dl.operators.matching.match_population`) in the generations it
    re-matches, and permutes them inside the jitted step. Per-neuron and
    aligned crossover move units by the model's permutation spec
    (:func:`~genetic_dl.operators.permutation.spec_of`).

    Args:
      key: PRNG key.
      population: the trained population.
      fitness: ``(P,)`` fitness (maximised; NaN failed).
      generation: generation index (drives decay, beta schedules and when
        aligned crossover re-matches).
      config: static options.
      scales: with ``config.self_adaptive``, the members' own ``(P,)``
        mutation scales (default: ``config.mutation_scale`` each). The
        children's scales are :class:`GARule`'s state; this returns the
        population only.

    Returns:
      ``(population, parents)``: the next generation (elites first) and
      ``(P, 2)`` parent indices into the old population.
    """
    return _generation(key, population, fitness, generation, config, scales)[:2]


def _generation(key: jax.Array, population: Population, fitness: jax.Array, generation: int,
                config: WeightGAConfig, scales: Optional[jax.Array] = None
                ) -> Tuple[Population, jax.Array, Optional[jax.Array]]:
    """:func:`ga_step`, also returning the children's mutation scales."""
    if config.self_adaptive and scales is None:
        scales = jnp.full((population.size,), config.mutation_scale, jnp.float32)
    if not config.self_adaptive:
        scales = None
    elite, a, b = _select(key, fitness, generation, config)
    mesh = sharding.mesh_of(population.params)
    spec: Optional[PermutationSpec] = None
    perms = None
    if config.crossover in UNIT_CROSSOVERS:
        spec = _unit_spec(population, config)
        if (config.crossover == "aligned" and config.match_to == "best"
                and int(generation) % config.match_every == 0):
            best = selection_mod.elites(jnp.asarray(fitness), 1)[0]
            variables = {**population.params, **population.collections}
            if config.matcher == "greedy":  # every member, each device its own; no host sync
                perms = matching.match_on_device(variables, best, spec, config.match_passes,
                                                 mesh)
            else:
                members = np.union1d(np.asarray(elite), np.union1d(np.asarray(a), np.asarray(b)))
                perms = matching.match_population(variables, int(best), spec, members=members,
                                                  passes=config.match_passes, matcher="exact")
    return _ga_step(key, population, generation, config, perms, elite, a, b, mesh, spec,
                    scales)


def _unit_spec(population: Population, config: WeightGAConfig) -> PermutationSpec:
    """The permutation spec of per-neuron and aligned crossover: the learner's, or one
    derived from the model and verified (:func:`~genetic_dl.operators.permutation.spec_of`)."""
    widths = population.hparams.get("widths")
    if widths is None:
        return permutation.spec_of(population)
    check(config.crossover != "aligned", "aligned crossover cannot permute width-padded "
          "members (their unit masks keep the first units): use per_neuron or uniform")
    # per-neuron crossover keeps units in place: the padded network's spec, all units live
    return permutation.spec_of(population.replace(
        hparams={**population.hparams, "widths": jnp.full_like(widths, jnp.inf)}))


@functools.partial(jax.jit, static_argnames=("config",))
def _select(key: jax.Array, fitness: jax.Array, generation: Any,
            config: WeightGAConfig) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Elite indices and the parents ``a``, ``b`` of every child."""
    size = fitness.shape[0]
    n_elite = min(config.elitism, size)
    n_child = size - n_elite
    k_sel = jax.random.split(raw_key(key), 3)[0]
    select = selection_mod.scheduled(config.selection, dict(config.selection_kw),
                                     config.boltzmann_growth, generation)
    picks = select(k_sel, fitness, 2 * n_child)
    a, b = picks[0::2], picks[1::2]
    if config.distinct_parents and size > 1:
        def other(k, i):  # the same operator, with parent a out of the running
            return select(k, jnp.asarray(fitness, jnp.float32).at[i].set(jnp.nan), 1)[0]
        redraw = jax.vmap(other)(jax.random.split(jax.random.fold_in(k_sel, 1), n_child), a)
        b = jnp.where(a == b, redraw, b)
    return selection_mod.elites(fitness, n_elite), a, b


def _split(population: Population, mesh: Any) -> Population:
    return population.replace(params=sharding.constrain(population.params, mesh, True),
                              opt_state=sharding.constrain(population.opt_state, mesh, True))


@functools.partial(jax.jit, static_argnames=("config", "mesh", "spec"))
def _ga_step(key: jax.Array, population: Population, generation: Any, config: WeightGAConfig,
             perms: Any, elite: jax.Array, a: jax.Array, b: jax.Array, mesh: Any = None,
             spec: Optional[PermutationSpec] = None,
             scales: Optional[jax.Array] = None
             ) -> Tuple[Population, jax.Array, Optional[jax.Array]]:
    key = raw_key(key)
    n_elite, n_child = elite.shape[0], a.shape[0]
    _, k_child, k_keys = jax.random.split(key, 3)
    source = population  # with perms: members in the best member's unit order, elites too
    if perms is not None:
        # optimizer states are permuted by rows, only those a child or an elite keeps
        params, collections = _permuted(population.params, population.collections,
                                        _needed(spec), perms)
        source = population.replace(params=params, collections=collections)
    rows_a, rows_b = jnp.concatenate([elite, a]), jnp.concatenate([elite, b])
    params, hparams, rows_b, perms_b, collections, scales = _children(
        k_child, source, rows_a, rows_b, generation, config, n_elite, mesh, spec, scales)
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
        elites = elites.replace(opt_state=permutation.permute_states(
            elites.params, _needed(spec), jax.tree_util.tree_map(lambda p: p[elite], perms),
            elites.opt_state)[0])
    merged = jax.tree_util.tree_map(lambda x, e: x.at[:n_elite].set(e), new, elites)
    return _split(merged, mesh), jnp.stack([rows_a, rows_b], 1), scales


@struct.dataclass
class GAState:
    """The GA rule's state with ``self_adaptive``: each member's own mutation scale."""
    mutation_scale: jax.Array


@dataclasses.dataclass(frozen=True)
class GARule(RuleBase):
    """The weight GA as a strategy: each step selects, crosses and mutates
    (:func:`ga_step`). Its state is ``None``, or with ``self_adaptive`` a
    :class:`GAState`."""

    def init(self, key: jax.Array, population: Population) -> Optional[GAState]:
        """The members' mutation scales when self-adaptive (all ``mutation_scale``).

        A crossover that moves units derives and verifies the permutation spec
        here, before the first generation trains (a wrong one fails in seconds)."""
        del key
        if self.config.crossover in UNIT_CROSSOVERS:
            _unit_spec(population, self.config)
        if not self.config.self_adaptive:
            return None
        return GAState(jnp.full((population.size,), self.config.mutation_scale, jnp.float32))

    def step(self, key: jax.Array, state: Optional[GAState], population: Population,
             fitness: jax.Array, metrics: Metrics,
             generation: int) -> Tuple[Population, Optional[GAState], StepInfo]:
        """``(next population, state, {"parents": (P, 2) rows})``."""
        del metrics
        scales = None if state is None else state.mutation_scale
        population, parents, scales = _generation(key, population, fitness, generation,
                                                  self.config, scales)
        return population, (None if scales is None else GAState(scales)), {"parents": parents}
