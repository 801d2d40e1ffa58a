"""Optuna's tree-structured Parzen estimator as a search strategy (extra ``optuna``)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Dict, Sequence, Tuple

import jax
import numpy as np

from .space import Choice, Float, Space
from .strategy import Proposal

if TYPE_CHECKING:  # an optional extra, imported when a search starts
    import optuna


@dataclasses.dataclass(frozen=True)
class TPEState:
    """The space and the optuna study that holds the trials (the study is optuna's own
    object: telling it a result records the trial in it)."""
    space: Space
    study: optuna.Study


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

    def init_state(self, key: jax.Array, space: Space) -> TPEState:
        """An optuna study seeded from ``key``."""
        optuna = _optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        seed = int(np.asarray(jax.random.key_data(key)).ravel()[-1])
        try:
            sampler = optuna.samplers.TPESampler(seed=seed, **dict(self.sampler_options))
        except TypeError as err:
            raise ValueError(f"TPE sampler_options: {err}") from err
        return TPEState(space, optuna.create_study(direction="maximize", sampler=sampler))

    def ask(self, key: jax.Array, state: TPEState) -> Proposal:
        """``batch`` trials from the sampler (running in the study until told)."""
        del key
        trials = [state.study.ask() for _ in range(self.batch)]
        space = state.space
        if self.native:
            return Proposal(np.array([space.encode(_suggest(t, space)) for t in trials]))
        return Proposal(np.array([[t.suggest_float(n, 0.0, 1.0) for n in space.names]
                                  for t in trials]))

    def tell(self, state: TPEState, genomes: np.ndarray, fitness: Sequence[Any]) -> TPEState:
        """Reports each trial's fitness (a failure as a failed trial)."""
        trial_state = _optuna().trial.TrialState
        running = state.study.get_trials(deepcopy=False, states=(trial_state.RUNNING,))
        for trial, f in zip([t.number for t in running[-len(genomes):]], fitness):
            if np.isfinite(f):
                state.study.tell(trial, float(f))
            else:
                state.study.tell(trial, state=trial_state.FAIL)
        return state


def _optuna() -> Any:
    """optuna, imported when a TPE search starts (an optional extra, slow to import)."""
    try:
        import optuna  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ValueError("method 'tpe' needs optuna: pip install 'genetic-dl[optuna]'") from err
    return optuna


def _suggest(trial: optuna.Trial, space: Space) -> Dict[str, Any]:
    """The config ``trial`` suggests, gene by gene in the space's order, skipping a
    gene whose condition is false for the genes suggested before it."""
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
