"""Convolutions in XLA:CPU's fast layout, inside loops too.

XLA:CPU runs a convolution through its fast library kernels only in the
canonical layout: inputs ``(N, spatial..., C)``, kernel ``(spatial..., I, O)``,
output ``(N, spatial..., C)``. Its pass that transposes other layouts into that
one visits the program's entry computation only, so a convolution inside a
``while`` loop (``lax.scan`` over minibatches) keeps its layout; the gradient
convolutions that JAX's transpose rules emit are never canonical, and they fall
to a naive loop: a flax conv + BatchNorm step takes 0.95 s in a scan against
0.024 s at top level (jax 0.10.2, 2 cores; ``benchmarks/conv_layout.py``,
jax-ml/jax#12868). :func:`canonical_convolutions` rewrites a traced function's
every convolution as transpose, canonical convolution, transpose: the same sum
over the same products, which XLA:CPU then runs in its library kernels wherever
the convolution sits.

Which lowering a population uses is a fixed rule, never a timing taken at run
time (reruns and resume stay bit-identical): on CPU, a model with convolutions
has them rewritten and trains one member at a time (:data:`CPU_CONV_LOWERING`);
every other case keeps XLA's own lowering (:data:`DEFAULT_LOWERING`).
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

DEFAULT_LOWERING = "xla"
# Canonical-layout convolutions, members of a device one after another: the
# vmapped population's convolution is one grouped convolution, which XLA:CPU runs
# several times slower than the members' own convolutions.
CPU_CONV_LOWERING = "canonical convolutions, one member at a time"


def _canonical_numbers(rank: int) -> lax.ConvDimensionNumbers:
    spatial = tuple(range(1, rank - 1))
    return lax.ConvDimensionNumbers(lhs_spec=(0, rank - 1) + spatial,
                                    rhs_spec=(rank - 1, rank - 2) + tuple(range(rank - 2)),
                                    out_spec=(0, rank - 1) + spatial)


def is_canonical(numbers: lax.ConvDimensionNumbers) -> bool:
    """Whether a convolution's dimension numbers are XLA:CPU's canonical layout."""
    return tuple(numbers) == tuple(_canonical_numbers(len(numbers.lhs_spec)))


def canonical_convolution(lhs: jax.Array, rhs: jax.Array, *,
                          dimension_numbers: lax.ConvDimensionNumbers,
                          **params: Any) -> jax.Array:
    """``conv_general_dilated`` with any dimension numbers, computed in the canonical
    layout: operands transposed in, the output transposed back.

    Args:
      lhs, rhs: the convolution's operands.
      dimension_numbers: their layout (``ConvDimensionNumbers`` of axis indices).
      **params: the other parameters of ``lax.conv_general_dilated_p``.

    Returns:
      The same array the convolution gives with ``dimension_numbers``.
    """
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    rank = len(lhs_spec)
    lhs = jnp.transpose(lhs, (lhs_spec[0],) + tuple(lhs_spec[2:]) + (lhs_spec[1],))
    rhs = jnp.transpose(rhs, tuple(rhs_spec[2:]) + (rhs_spec[1], rhs_spec[0]))
    out = lax.conv_general_dilated_p.bind(lhs, rhs, dimension_numbers=_canonical_numbers(rank),
                                          **params)
    # ``out`` is (N, spatial..., C): axis ``where[i]`` of it goes to position ``i``
    where = [0] * rank
    for i, axis in enumerate((out_spec[0],) + tuple(out_spec[2:]) + (out_spec[1],)):
        where[axis] = i
    return jnp.transpose(out, where)


def _sub_jaxprs(params: dict) -> List[Any]:
    subs: List[Any] = []
    for value in params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(sub, (jcore.ClosedJaxpr, jcore.Jaxpr)):
                subs.append(sub)
    return subs


def convolutions(jaxpr: Any) -> int:
    """Convolutions in a (closed) jaxpr, its loops' and calls' bodies included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive is lax.conv_general_dilated_p
        count += sum(convolutions(sub) for sub in _sub_jaxprs(eqn.params))
    return count


def _rewrite_closed(closed: jcore.ClosedJaxpr) -> jcore.ClosedJaxpr:
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
    return jax.make_jaxpr(lambda *a: _evaluate(closed.jaxpr, closed.consts, a))(*avals)


def _rewrite_params(params: dict) -> dict:
    out = dict(params)
    for name, value in params.items():
        if isinstance(value, jcore.ClosedJaxpr):
            out[name] = _rewrite_closed(value)
        elif isinstance(value, tuple) and value and all(
                isinstance(v, jcore.ClosedJaxpr) for v in value):
            out[name] = tuple(_rewrite_closed(v) for v in value)
    return out


def _evaluate(jaxpr: jcore.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> List[Any]:
    """``jaxpr`` evaluated with every convolution in the canonical layout."""
    env: dict = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        if eqn.primitive is lax.conv_general_dilated_p:
            outs: Any = [canonical_convolution(*inputs, **eqn.params)]
        else:
            params = eqn.primitive.get_bind_params(_rewrite_params(eqn.params))
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*inputs, **params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def rewrite_jaxpr(closed: jcore.ClosedJaxpr) -> jcore.ClosedJaxpr:
    """``closed`` with every convolution in the canonical layout (loops' bodies too)."""
    return _rewrite_closed(closed)


def canonical_convolutions(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every convolution it traces computed in XLA:CPU's canonical layout.

    Apply it after ``grad`` and ``vmap`` (to the whole training program): those
    transformations emit convolutions in other layouts.

    Args:
      fn: a function of arrays (pytrees allowed) that JAX can trace.

    Returns:
      A function with ``fn``'s signature and results.
    """
    def rewritten(*args: Any) -> Any:
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        if not convolutions(closed):
            return fn(*args)
        flat = _evaluate(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), flat)
    return rewritten


def lowering(step: Any, backend: str) -> str:
    """The fixed lowering for a training step's jaxpr on ``backend``."""
    return CPU_CONV_LOWERING if backend == "cpu" and convolutions(step) else DEFAULT_LOWERING


def lowered(step: Any, backend: str) -> Tuple[str, Any]:
    """``(lowering, step)``: the step's jaxpr as that lowering runs it (for its memory)."""
    name = lowering(step, backend)
    return name, (rewrite_jaxpr(step) if name == CPU_CONV_LOWERING else step)


def model_lowering(apply: Callable[..., Any], variables: Any, feature_shape: Tuple[int, ...],
                   dtype: str, backend: str) -> str:
    """The lowering a model's population trains under on ``backend`` (for the run directory).

    Args:
      apply: the model's ``apply(variables, x)``.
      variables: one network's variables.
      feature_shape, dtype: one example's input shape and dtype.
      backend: ``jax.default_backend()`` of the run.
    """
    x = jax.ShapeDtypeStruct((2,) + tuple(feature_shape), jnp.dtype(dtype))
    return lowering(jax.make_jaxpr(apply)(variables, x), backend)
