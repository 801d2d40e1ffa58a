"""What one member is: a model, its loss and metrics, how it is called.

A :class:`Learner` is the static, hashable description of a member, everything
that is not an array: the flax module, the loss, the metrics (and whether each
is maximised), the keyword arguments of training and evaluation calls, the
mutable collections (e.g. ``batch_stats``) carried next to the params, and the
RNG streams a training call needs. The population holds only arrays; the
learner is compile-time configuration, so two populations with equal learners
share compiled programs.

``Learner.from_linen`` wraps any ``flax.linen.Module``; the bundled zoo
(:class:`~genetic_dl.core.models.MLPSpec` and friends) is built the same way by
:func:`zoo_learner`, adding only that the zoo's modules take the per-member
traced ``dropout`` rate, ``widths`` and ``depth`` as call arguments (``hparam_kwargs``).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .caption_metrics import CaptionLoss, caption_metrics, slot_accuracy
from .models import ModelSpec, build_model
from .pytree import Params, PyTree
from .metrics import accuracy, compute_metrics, loss_fn, r2_score
from .permutation_spec import PermutationSpec

Batch = Mapping[str, jax.Array]
# One member's hyperparameters: traced scalars (or per-layer widths) by name.
Hparams = Mapping[str, jax.Array]
# ``fn(outputs, batch) -> scalar``, or the accumulator ``(init, update, finalize)``.
MetricFn = Union[Callable[[Any, Batch], jax.Array], Tuple[Callable, Callable, Callable]]
LOSS_LIKE = re.compile(r"^(loss|mse|mae|rmse|nll)$|_loss$|error$")


@dataclasses.dataclass(frozen=True)
class Metric:
    """A metric ``fn(outputs, batch) -> scalar`` and whether higher is better.

    ``fn`` may also be an accumulator ``(init, update, finalize)`` for metrics
    that do not average over batches (AUC, macro F1, R²): ``init() -> acc``,
    ``update(acc, outputs, batch) -> acc``, ``finalize(acc) -> scalar``.
    """
    fn: MetricFn
    maximize: bool = True

    def __call__(self, outputs: Any, batch: Batch) -> jax.Array:
        if isinstance(self.fn, tuple):
            init, update, finalize = self.fn
            return finalize(update(init(), outputs, batch))
        return self.fn(outputs, batch)


def metric(fn: Union[Metric, MetricFn], maximize: Optional[bool] = None,
           name: Optional[str] = None) -> Metric:
    """Wraps ``fn`` as a :class:`Metric`; ``maximize`` defaults from its name.

    A name that looks like a loss (``loss``, ``mse``, ``mae``, ``*_loss``,
    ``*error``) is minimised; anything else is maximised.
    """
    if isinstance(fn, Metric):
        return fn if maximize is None else dataclasses.replace(fn, maximize=maximize)
    if maximize is None:
        maximize = maximized(str(name or getattr(fn, "__name__", "")))
    return Metric(fn, bool(maximize))


def maximized(name: str) -> bool:
    """Whether a metric called ``name`` is maximised when nothing else says."""
    return not LOSS_LIKE.search(name)


def _pairs(mapping: Optional[Mapping[str, Any]]) -> Tuple[Tuple[str, Any], ...]:
    return tuple(sorted(dict(mapping or {}).items()))


@dataclasses.dataclass(frozen=True)
class Learner:
    """The static description of one member (see the module docstring).

    Attributes:
      module: the flax module.
      loss: ``loss(outputs, batch) -> scalar``; ``batch`` is ``{"x", "y"}``.
      metrics: ``((name, Metric), ...)``; evaluation reports ``loss`` too.
      train_kwargs, eval_kwargs: static keyword arguments of training and
        evaluation calls, as sorted pairs.
      mutable: collections updated in training and used in evaluation.
      rngs: RNG streams of a training call (one key each per step).
      hparam_kwargs: ``((call_kwarg, hparam_name), ...)``: per-member traced
        hyperparameters passed to every call (the zoo's dropout and widths).
      score: the metric recorded per epoch as ``train_score``/``val_score``.
      spec: the zoo spec the learner was built from, else ``None``.
      permutation_spec: which axes are the same hidden unit
        (:class:`~genetic_dl.PermutationSpec`), for per-neuron and
        aligned crossover; ``None`` derives it from a Dense/Conv/norm chain.
    """
    module: Any  # a flax.linen.Module; NnxLearner's: make_module(rngs) -> nnx module
    loss: Callable[[Any, Batch], jax.Array]
    metrics: Tuple[Tuple[str, Metric], ...] = ()
    train_kwargs: Tuple[Tuple[str, Any], ...] = ()
    eval_kwargs: Tuple[Tuple[str, Any], ...] = ()
    mutable: Tuple[str, ...] = ()
    rngs: Tuple[str, ...] = ()
    hparam_kwargs: Tuple[Tuple[str, str], ...] = ()
    score: Optional[str] = None
    spec: Optional[ModelSpec] = None
    permutation_spec: Optional[PermutationSpec] = None

    @classmethod
    def from_linen(cls, module: nn.Module, *, loss: Callable[[Any, Batch], jax.Array],
                   metrics: Optional[Mapping[str, Any]] = None,
                   train_kwargs: Optional[Mapping[str, Any]] = None,
                   eval_kwargs: Optional[Mapping[str, Any]] = None,
                   mutable: Sequence[str] = (), rngs: Sequence[str] = ("dropout",),
                   score: Optional[str] = None,
                   permutation_spec: Optional[Mapping[Any, Any]] = None) -> "Learner":
        """A learner of any ``flax.linen.Module``.

        Args:
          module: the module; called as ``module.apply(variables, batch["x"],
            **kwargs)``.
          loss: ``loss(outputs, batch) -> scalar`` (minimised by training).
          metrics: ``{name: fn}``, ``fn(outputs, batch) -> scalar``, a
            :func:`metric` (direction given) or an accumulator triple; a bare
            function is maximised unless its name is loss-like.
          train_kwargs, eval_kwargs: static keyword arguments (e.g.
            ``{"train": True}`` / ``{"train": False}``).
          mutable: collections carried per member (e.g. ``("batch_stats",)``).
          rngs: RNG streams of a training call.
          score: the metric recorded per epoch (default: the first one).
          permutation_spec: ``{path: (group or None, ...)}`` per variable, for
            per-neuron and aligned crossover (Git Re-Basin's permutation spec,
            see :mod:`genetic_dl.operators.permutation`); default: derived from a chain of
            Dense/Conv(+BatchNorm/LayerNorm) layers. Either is checked with a
            permuted forward pass before those crossovers use it.

        Returns:
          A :class:`Learner`.
        """
        if not isinstance(module, nn.Module):
            raise ValueError(f"Learner.from_linen takes a flax.linen.Module, got "
                             f"{type(module).__name__}: use Learner.from_nnx for nnx modules")
        if not callable(loss):
            raise ValueError("loss must be a function loss(outputs, batch) -> scalar")
        named = tuple((str(k), metric(v, name=str(k))) for k, v in dict(metrics or {}).items())
        if any(k == "loss" for k, _ in named):
            raise ValueError("a metric may not be called 'loss': the learner's loss is "
                             "reported under that name")
        if score is not None and score not in dict(named):
            raise ValueError(f"score {score!r} is not one of the metrics "
                             f"{[k for k, _ in named]}")
        return cls(module=module, loss=loss, metrics=named, train_kwargs=_pairs(train_kwargs),
                   eval_kwargs=_pairs(eval_kwargs), mutable=tuple(mutable), rngs=tuple(rngs),
                   score=score or (named[0][0] if named else None),
                   permutation_spec=(None if permutation_spec is None
                                     else PermutationSpec.of(permutation_spec)))

    @classmethod
    def from_nnx(cls, make_module: Callable[[Any], Any], *,
                 loss: Callable[[Any, Batch], jax.Array],
                 metrics: Optional[Mapping[str, Any]] = None,
                 train_kwargs: Optional[Mapping[str, Any]] = None,
                 eval_kwargs: Optional[Mapping[str, Any]] = None,
                 score: Optional[str] = None,
                 permutation_spec: Optional[Mapping[Any, Any]] = None) -> "Learner":
        """A learner of a ``flax.nnx`` module built by ``make_module(rngs)``.

        ``make_module`` is called with each member's own ``nnx.Rngs`` (members get
        different initialisations); the population stacks the module's
        ``nnx.Param`` state as params and its ``nnx.BatchStat`` state as the
        ``batch_stats`` collection. RNG state is not stacked: every training
        step builds the module with fresh streams from the member's key (its
        initial values are discarded, and XLA drops their computation).
        Training calls run in ``module.train()`` mode, evaluation in ``eval()``.
        Other arguments as :meth:`from_linen`; a derived permutation spec takes
        the layers in the order of their attribute names (nnx sorts them), so
        give one explicitly unless those names sort in call order.
        """
        base = cls.from_linen(nn.Dense(1), loss=loss, metrics=metrics, score=score,
                              permutation_spec=permutation_spec)
        return NnxLearner(module=make_module, loss=loss, metrics=base.metrics,
                          train_kwargs=_pairs(train_kwargs), eval_kwargs=_pairs(eval_kwargs),
                          score=base.score, permutation_spec=base.permutation_spec)

    def default_fitness(self) -> str:
        """The metric the weight GA selects on when none is named: ``"loss"`` (negated)."""
        return "loss"

    def maximize(self, name: str) -> bool:
        """Whether metric ``name`` is maximised (``loss`` never is)."""
        found = dict(self.metrics).get(name)
        return found.maximize if found is not None else maximized(name)

    def _call(self, variables: PyTree, x: jax.Array, hp: Hparams,
              kwargs: Tuple[Tuple[str, Any], ...], **extra: Any) -> Any:
        hp_kw = {kw: hp[name] for kw, name in self.hparam_kwargs if name in hp}
        return self.module.apply(variables, x, **hp_kw, **dict(kwargs), **extra)

    def init(self, key: jax.Array, x: jax.Array) -> Tuple[Params, PyTree]:
        """``(params, collections)`` of one member for a sample batch ``x``.

        ``params`` is ``{"params": ...}``; ``collections`` the other variables.
        """
        variables = self.module.init(key, x, **dict(self.eval_kwargs))
        variables = dict(variables)
        params = {"params": variables.pop("params", {})}
        return params, {k: variables[k] for k in sorted(variables)}

    def apply_train(self, params: Params, collections: PyTree, batch: Batch, hp: Hparams,
                    key: jax.Array) -> Tuple[Any, PyTree]:
        """Outputs of a training call and the updated collections."""
        if self.rngs:
            keys = [key] if len(self.rngs) == 1 else list(jax.random.split(key, len(self.rngs)))
            rngs = dict(zip(self.rngs, keys))
        else:
            rngs = {}
        variables = {**params, **collections}
        if self.mutable:
            out, updated = self._call(variables, batch["x"], hp, self.train_kwargs, rngs=rngs,
                                      mutable=list(self.mutable))
            return out, {**collections, **dict(updated)}
        return self._call(variables, batch["x"], hp, self.train_kwargs, rngs=rngs), collections

    def apply_eval(self, params: Params, collections: PyTree, x: jax.Array, hp: Hparams) -> Any:
        """Outputs of an evaluation call."""
        return self._call({**params, **collections}, x, hp, self.eval_kwargs)

    def apply_eval_batched(self, params: Params, collections: PyTree, x: jax.Array, hp: Hparams,
                           batch: int, prep: Optional[Callable[[Any], Any]] = None) -> Any:
        """:meth:`apply_eval` over ``x`` in batches of ``batch`` rows (``lax.map``).

        Peak memory holds one batch's activations whatever the split's size;
        a split of at most ``batch`` rows runs as one call. Batches are sliced
        from ``x`` in place (no padded copy of the split); the rows left over
        run as one smaller batch. ``prep`` maps each batch of stored inputs to
        model inputs (standardising raw uint8 images).
        """
        prep = prep or (lambda v: v)
        n = x.shape[0]
        if n <= batch:
            return self.apply_eval(params, collections, prep(x), hp)
        full = n // batch

        def one(i: jax.Array) -> Any:
            xb = jax.lax.dynamic_slice_in_dim(x, i * batch, batch)
            return self.apply_eval(params, collections, prep(xb), hp)
        out = jax.tree_util.tree_map(lambda o: o.reshape((full * batch,) + o.shape[2:]),
                                     jax.lax.map(one, jnp.arange(full)))
        if full * batch == n:
            return out
        rest = self.apply_eval(params, collections, prep(x[full * batch:]), hp)
        return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), out, rest)

    def evaluate(self, outputs: Any, batch: Batch) -> Dict[str, jax.Array]:
        """``{"loss", *metrics}`` of outputs on one batch (the whole split)."""
        out = {"loss": self.loss(outputs, batch)}
        out.update({name: m(outputs, batch) for name, m in self.metrics})
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v))
                                    for v in jax.tree_util.tree_leaves(outputs)]))
        return {k: jnp.where(finite, jnp.asarray(v, jnp.float32), jnp.nan)
                for k, v in out.items()}

    def score_of(self, outputs: Any, batch: Batch) -> jax.Array:
        """The per-epoch score: the ``score`` metric, else the negated loss."""
        if self.score is None:
            return -self.loss(outputs, batch)
        return dict(self.metrics)[self.score](outputs, batch)

    def check(self, params: Params, collections: PyTree, batch: Batch, hp: Hparams,
              labels: str = "") -> None:
        """Raises ``ValueError`` when the outputs do not fit the loss or metrics.

        Abstract (shapes and dtypes only); ``labels`` describes the labels as
        the user gave them, for the message.
        """
        def run(p: Params, c: PyTree) -> Tuple[Any, Dict[str, jax.Array]]:
            out = self.apply_eval(p, c, batch["x"], hp)
            return out, self.evaluate(out, batch)
        try:
            out, values = jax.eval_shape(run, params, collections)
        except (TypeError, ValueError, IndexError) as err:
            raise ValueError(f"the model's outputs do not fit its loss or metrics: {err}. "
                             f"Make loss(outputs, batch) accept what the module returns "
                             f"for x of shape {tuple(batch['x'].shape)}"
                             + (f"; {labels}" if labels else "")) from err
        for name, value in values.items():
            if value.shape != ():
                raise ValueError(f"{name}(outputs, batch) returned shape {value.shape} for "
                                 f"outputs of shape {getattr(out, 'shape', '?')}: it must "
                                 f"return a scalar (take the mean over the batch)")

    def check_loss(self, params: Params, collections: PyTree, batch: Mapping[str, Any],
                   hp: Hparams, classes: Optional[int] = None) -> None:
        """Raises ``ValueError`` when the loss of a sample batch is NaN or inf with the
        first member's weights.

        Concrete, one small jitted call. A class index past the output layer's
        width makes cross-entropy NaN, and every member would fail unexplained.

        Args:
          params, collections, hp: stacked over members (member 0 is used).
          batch: a few rows with the largest class index among them.
          classes: the number of classes of class-index labels (default: the
            largest label + 1).
        """
        out, loss = _first_member_loss(self, params, collections, hp, dict(batch))
        if not np.isfinite(np.asarray(loss)).all():
            raise ValueError(_nonfinite_message(np.asarray(loss), out, batch, classes))


@functools.partial(jax.jit, static_argnums=0)
def _first_member_loss(learner: Learner, params: Params, collections: PyTree, hp: Hparams,
                       batch: Batch) -> Tuple[Any, jax.Array]:
    p, c, h = jax.tree_util.tree_map(lambda v: v[0], (params, collections, dict(hp)))
    out = learner.apply_eval(p, c, batch["x"], h)
    return out, learner.loss(out, batch)


def _nonfinite_message(loss: np.ndarray, out: Any, batch: Mapping[str, Any],
                       classes: Optional[int]) -> str:
    """The one line of :meth:`Learner.check_loss`: outputs, labels and the likely fix."""
    shapes = jax.tree_util.tree_map(lambda o: tuple(np.shape(o)), out)
    head = (f"the model's loss is {'NaN' if np.isnan(loss).any() else 'inf'} on a sample batch "
            f"with member 0's initial weights: outputs of shape {shapes}")
    fix = "make the loss finite at initialisation (outputs that fit the labels)"
    y = np.asarray(batch["y"]) if "y" in batch else None
    if y is None:
        return f"{head} for the batch's {sorted(batch)}; {fix}"
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        return f"{head} for labels of shape {y.shape} ({y.dtype}); {fix}"
    classes = int(y.max()) + 1 if classes is None else int(classes)
    if hasattr(out, "shape") and out.ndim and out.shape[-1] < classes:
        fix = f"make the output layer's width fit the labels (e.g. nn.Dense({classes}))"
    return f"{head} for labels up to {int(y.max())} ({classes} classes); {fix}"


@dataclasses.dataclass(frozen=True)
class NnxLearner(Learner):
    """A learner of a ``flax.nnx`` module; see :meth:`Learner.from_nnx`."""
    # flax.nnx takes about 0.2 s to import: only nnx learners import it, when they run.

    def _build(self, key: jax.Array, params: Params, collections: PyTree, train: bool) -> Any:
        from flax import nnx  # pylint: disable=import-outside-toplevel
        module = self.module(nnx.Rngs(key))
        states = []
        for kind, values in ((nnx.Param, params["params"]),
                             (nnx.BatchStat, collections.get("batch_stats"))):
            if values:
                state = nnx.state(module, kind)
                nnx.replace_by_pure_dict(state, values)
                states.append(state)
        nnx.update(module, states[0], *states[1:])
        if train:
            module.train()
        else:
            module.eval()
        return module

    def init(self, key: jax.Array, x: jax.Array) -> Tuple[Params, PyTree]:
        from flax import nnx  # pylint: disable=import-outside-toplevel
        del x  # an nnx module is built with its sizes
        module = self.module(nnx.Rngs(key))
        stats = nnx.state(module, nnx.BatchStat).to_pure_dict()
        return ({"params": nnx.state(module, nnx.Param).to_pure_dict()},
                {"batch_stats": stats} if stats else {})

    def apply_train(self, params: Params, collections: PyTree, batch: Batch, hp: Hparams,
                    key: jax.Array) -> Tuple[Any, PyTree]:
        from flax import nnx  # pylint: disable=import-outside-toplevel
        module = self._build(key, params, collections, True)
        out = module(batch["x"], **dict(self.train_kwargs))
        if "batch_stats" in collections:
            collections = {**collections,
                           "batch_stats": nnx.state(module, nnx.BatchStat).to_pure_dict()}
        return out, collections

    def apply_eval(self, params: Params, collections: PyTree, x: jax.Array, hp: Hparams) -> Any:
        module = self._build(jax.random.key(0), params, collections, False)
        return module(x, **dict(self.eval_kwargs))


# The zoo's loss and metrics: module-level functions, so that equal zoo learners
# are equal (and share compiled programs). Integer labels mean classification,
# float targets regression: the dtype is static, so each traces to one branch.
def _classification(batch: Batch) -> bool:
    return bool(jnp.issubdtype(jnp.asarray(batch["y"]).dtype, jnp.integer))


def zoo_loss(outputs: jax.Array, batch: Batch) -> jax.Array:
    """Cross-entropy for integer labels, mean squared error for float targets."""
    return loss_fn(outputs, batch["y"], _classification(batch))


@dataclasses.dataclass(frozen=True)
class ZooLearner(Learner):
    """A learner of a bundled spec: all sklearn-style metrics of the task at once."""

    def evaluate(self, outputs: Any, batch: Batch) -> Dict[str, jax.Array]:
        return compute_metrics(outputs, batch["y"], _classification(batch))

    def score_of(self, outputs: Any, batch: Batch) -> jax.Array:
        if _classification(batch):
            return accuracy(outputs, batch["y"])
        return r2_score(outputs, batch["y"])


@dataclasses.dataclass(frozen=True)
class CaptionLearner(Learner):
    """A learner of the zoo's caption family: ``(n, slots)`` labels, each slot of its own
    vocabulary (the spec's ``slot_classes``); metrics of
    :func:`~genetic_dl.core.caption_metrics.caption_metrics`, score and default fitness
    the mean slot accuracy."""

    def evaluate(self, outputs: Any, batch: Batch) -> Dict[str, jax.Array]:
        return caption_metrics(outputs, batch["y"], self._slot_classes())

    def score_of(self, outputs: Any, batch: Batch) -> jax.Array:
        return slot_accuracy(outputs, batch["y"], self._slot_classes())

    def default_fitness(self) -> str:
        return "slot_accuracy"

    def _slot_classes(self) -> Tuple[int, ...]:
        return tuple(getattr(self.spec, "slot_classes"))


def zoo_learner(spec: ModelSpec, feature_shape: Tuple[int, ...], out_dim: int) -> Learner:
    """The learner of a bundled model spec (MLP, CNN, RNN, frames, caption)."""
    module = build_model(spec, tuple(feature_shape), int(out_dim))
    dropout = spec.dropout > 0
    if spec.family == "caption":
        slot_classes = tuple(getattr(spec, "slot_classes"))
        return CaptionLearner(module=module, loss=CaptionLoss(slot_classes),
                              train_kwargs=(("train", True),) if dropout else (),
                              rngs=("dropout",) if dropout else (),
                              hparam_kwargs=(("dropout_rate", "dropout"), ("widths", "widths")),
                              score="slot_accuracy", spec=spec)
    depth = (("depth", "depth"),) if getattr(spec, "blocks", 0) else ()
    return ZooLearner(module=module, loss=zoo_loss,
                      train_kwargs=(("train", True),) if dropout else (),
                      rngs=("dropout",) if dropout else (),
                      hparam_kwargs=(("dropout_rate", "dropout"), ("widths", "widths")) + depth,
                      spec=spec)
