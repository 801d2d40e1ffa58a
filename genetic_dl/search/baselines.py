"""The outer GA's baselines, under the same ask/tell interface and budget:
random search, grid search, differential evolution and (with optuna) TPE."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import genome_ops


@dataclasses.dataclass
class RandomSearch:
    """Uniform random sampling of the unit hypercube (Bergstra & Bengio, 2012)."""
    batch: int = 16

    def init_state(self, key, space):  # pylint: disable=unused-argument
        """Stateless but for the space."""
        return {"space": space}

    def ask(self, key, state):
        """``batch`` random genomes (and no info)."""
        return np.asarray(jax.random.uniform(key, (self.batch, state["space"].dim))), {}

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
        """The next ``batch`` grid points (none when the grid is exhausted), and no info."""
        out = []
        for i in range(state["next"], min(state["next"] + self.batch, state["size"])):
            j = (state["mult"] * i + state["offset"]) % state["size"]
            point = []
            for axis in state["axes"]:
                j, r = divmod(j, len(axis))
                point.append(axis[r])
            out.append(point)
        return np.asarray(out, np.float64).reshape(len(out), len(state["axes"])), {}

    def tell(self, state, genomes, fitness):  # pylint: disable=unused-argument
        """Grid search learns nothing; it moves on past the points it was told."""
        return {**state, "next": state["next"] + len(genomes)}


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
        """The first population, then one trial per target (and no info)."""
        if state["fitness"] is None:
            return state["genomes"], {}
        trials = _de(key, jnp.asarray(state["genomes"]), self.f, self.cr)["g"]
        return np.asarray(genome_ops.reflect(trials)), {}

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
    from ..operators.mutation import de_rand_1_bin  # pylint: disable=import-outside-toplevel
    return de_rand_1_bin(key, {"g": genomes}, f, cr)


@dataclasses.dataclass
class TPE:
    """Optuna's tree-structured Parzen estimator (Bergstra et al., 2011; extra ``optuna``).

    Attributes:
      batch: trials asked at a time (they run as one batch; with
        ``constant_liar`` the sampler knows they are running).
      native: suggest each gene in its own distribution (log floats, ints,
        categorical choices), and only the genes a config uses, as an Optuna
        user writes an objective (define-by-run); ``False``: every gene as a
        float in [0, 1] of the unit genome.
      sampler_options: keyword arguments of ``optuna.samplers.TPESampler``
        (e.g. ``(("multivariate", True), ("group", True),
        ("n_startup_trials", 5), ("constant_liar", True))``); the seed comes
        from the search's key. Empty: optuna's defaults.
    """
    batch: int = 8
    native: bool = False
    sampler_options: Tuple[Tuple[str, Any], ...] = ()

    def init_state(self, key, space):
        """An optuna study seeded from ``key``."""
        try:
            import optuna  # pylint: disable=import-outside-toplevel
        except ImportError as err:
            raise ValueError("method 'tpe' needs optuna: pip install 'genetic-dl[optuna]'") \
                from err
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        seed = int(np.asarray(jax.random.key_data(key)).ravel()[-1])
        try:
            sampler = optuna.samplers.TPESampler(seed=seed, **dict(self.sampler_options))
        except TypeError as err:
            raise ValueError(f"TPE sampler_options: {err}") from err
        study = optuna.create_study(direction="maximize", sampler=sampler)
        return {"space": space, "study": study}

    def ask(self, key, state):  # pylint: disable=unused-argument
        """``batch`` trials from the sampler (running in the study until told), no info."""
        trials = [state["study"].ask() for _ in range(self.batch)]
        space = state["space"]
        if self.native:
            return np.array([space.encode(_suggest(t, space)) for t in trials]), {}
        return np.array([[t.suggest_float(n, 0.0, 1.0) for n in space.names]
                         for t in trials]), {}

    def tell(self, state, genomes, fitness):  # pylint: disable=unused-argument
        """Reports each trial's fitness (a failure as a failed trial)."""
        import optuna  # pylint: disable=import-outside-toplevel,import-error
        running = state["study"].get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.RUNNING,))
        for trial, f in zip([t.number for t in running[-len(genomes):]], fitness):
            if np.isfinite(f):
                state["study"].tell(trial, float(f))
            else:
                state["study"].tell(trial, state=optuna.trial.TrialState.FAIL)
        return state


def _suggest(trial, space) -> Dict[str, Any]:
    """The config ``trial`` suggests, gene by gene in the space's order, skipping a
    gene whose condition is false for the genes suggested before it."""
    from .space import Choice, Float  # pylint: disable=import-outside-toplevel
    conditions = dict(space.conditions)
    config: Dict[str, Any] = {}
    for name, gene in space.genes:
        active = conditions.get(name)
        try:
            if active is not None and not active(config):
                continue
        except KeyError:  # it reads a gene that comes later: suggest it
            pass
        if isinstance(gene, Choice):
            config[name] = trial.suggest_categorical(name, list(gene.options))
        elif isinstance(gene, Float):
            config[name] = trial.suggest_float(name, gene.lo, gene.hi, log=gene.log,
                                               step=gene.step)
        else:
            config[name] = trial.suggest_int(name, gene.lo, gene.hi, log=gene.log,
                                             step=1 if gene.log else gene.step)
    return config
