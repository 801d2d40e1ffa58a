"""A model's permutation spec, derived from its computation (its jaxpr).

Hidden units are a symmetry of the computation, not of the layer names: a
unit's index is the same along every axis it flows through. Tracing the
model's forward pass to a jaxpr and following each array axis through each
primitive gives the symmetry directly (the idea behind Git Re-Basin's
permutation specs, Ainsworth et al., 2022, computed instead of written):

- axes that must carry the same unit index are joined (union-find): the
  contracted axes of a ``dot_general``, a layer's output and its bias, the two
  sides of a residual ``add``, a normalisation's scale and its features, an
  embedding table's feature axis and the gathered rows, a scan's carry before
  and after a step (so an LSTM's gates and hidden state are one group);
- a concatenation or slice along a unit axis splits it into segments, each
  with its own permutation;
- a reshape keeps units when it flattens with the unit axis fastest (the
  flattened axis holds copies of the group);
- axes the model's input or outputs vary along, the spatial axes of a
  convolution, indexed or sorted axes, grouped convolutions' channels and
  every axis an unknown primitive touches are fixed: their units are not
  permuted, and :attr:`PermutationSpec.notes` says why.

Every component of joined axes that holds a variable's axis and is not fixed
is one permutation group. :func:`~genetic_dl.operators.permutation.verify`
then checks the result by a permuted forward pass.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from ..core.permutation_spec import PermutationSpec, path_name
from .axis_units import AxisUnits
from .primitive_rules import ELEMENTWISE, RULES, SPATIAL, elementwise

Value = Tuple[Tuple[int, ...], Optional[np.ndarray]]  # (one node per axis, constant value)
INPUT, OUTPUT = "the model's input or a constant varies along it", "a model output axis"
QUIET = (INPUT, OUTPUT, SPATIAL)  # expected reasons: not worth a note
CONST_LIMIT = 1 << 22  # elements: larger constants are not evaluated (their axes are fixed)


class _Tracer:
    """Walks a jaxpr, joining and fixing axes primitive by primitive."""

    def __init__(self) -> None:
        self.units = AxisUnits()

    # ---- values -------------------------------------------------------------------------
    def const(self, value: Any) -> Value:
        """A constant: an axis it varies along is fixed, any other is free."""
        try:
            value = np.asarray(value)
        except TypeError:  # PRNG key arrays have no numpy form: their axes stay fixed
            return self.units.fresh(np.shape(value), INPUT), None
        nodes = []
        for axis, n in enumerate(value.shape):
            varies = n > 1 and (value.size > CONST_LIMIT or not np.array_equal(
                value, np.take(value, [0], axis=axis).repeat(n, axis=axis)))
            nodes.append(self.units.new(n, INPUT if varies else None))
        return tuple(nodes), (value if value.size <= CONST_LIMIT else None)

    def fix_all(self, values: Sequence[Value], reason: str) -> None:
        """Fixes every axis of ``values``."""
        for nodes, _ in values:
            for n in nodes:
                self.units.fix(n, reason)

    # ---- jaxprs -------------------------------------------------------------------------
    def walk(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Value]) -> List[Value]:
        """The values of ``jaxpr``'s outputs given its constants and arguments."""
        env: Dict[Any, Value] = {}
        for var, c in zip(jaxpr.constvars, consts):
            env[var] = self.const(c)
        env.update(zip(jaxpr.invars, args))

        def read(v: Any) -> Value:
            return self.const(v.val) if hasattr(v, "val") else env[v]
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.eqn(eqn, ins)
            env.update(zip(eqn.outvars, outs))
        return [read(v) for v in jaxpr.outvars]

    def closed(self, closed: Any, args: Sequence[Value]) -> List[Value]:
        """:meth:`walk` of a closed or open jaxpr."""
        if hasattr(closed, "consts"):
            return self.walk(closed.jaxpr, closed.consts, args)
        return self.walk(closed, (), args)

    def eqn(self, eqn: Any, ins: List[Value]) -> List[Value]:
        """The output values of one equation."""
        name = eqn.primitive.name
        shapes = [tuple(v.aval.shape) for v in eqn.outvars]
        if name in HIGHER_ORDER:
            return HIGHER_ORDER[name](self, eqn, ins)
        inner = _inner_jaxpr(eqn)
        if inner is not None:
            return self.closed(inner, ins)
        values = [v for _, v in ins if v is not None]
        if len(values) == len(ins):
            evaluated = _evaluate(eqn, values)
            if evaluated is not None:
                return [self.const(v) for v in evaluated]
        rule = RULES.get(name)
        if rule is None and name in ELEMENTWISE:
            rule = elementwise
        if rule is None:
            self.fix_all(ins, f"primitive {name!r}")
            return [(self.units.fresh(s, f"primitive {name!r}"), None) for s in shapes]
        out = rule(self.units, eqn, [nodes for nodes, _ in ins])
        return [(nodes, None) for nodes in out]


def _inner_jaxpr(eqn: Any) -> Any:
    """The jaxpr a call-like primitive (jit, custom_jvp/vjp, remat) runs on its operands."""
    for value in eqn.params.values():
        inner = getattr(value, "jaxpr", value)
        if (hasattr(inner, "eqns") and len(inner.invars) == len(eqn.invars)
                and len(inner.outvars) == len(eqn.outvars)):
            return value
    return None


def _evaluate(eqn: Any, values: List[np.ndarray]) -> Optional[List[np.ndarray]]:
    """The outputs of an equation whose operands are all constants (e.g. masks)."""
    size = sum(int(np.prod(v.aval.shape)) for v in eqn.outvars)
    if size > CONST_LIMIT:
        return None
    try:
        out = eqn.primitive.bind(*values, **eqn.params)
    except Exception:  # pylint: disable=broad-exception-caught
        return None  # a primitive that cannot run eagerly: its axes get the rules below
    out = out if eqn.primitive.multiple_results else [out]
    try:
        return [np.asarray(o) for o in out]
    except TypeError:  # PRNG key arrays
        return None


# ---- control flow -------------------------------------------------------------------------
def _scan(t: _Tracer, eqn: Any, ins: List[Value]) -> List[Value]:
    p = eqn.params
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    for nodes, _ in xs:
        t.units.fix(nodes[0], "a scan's step axis")
    carry = _varying(carry)  # a carry changes from step to step
    body = t.closed(p["jaxpr"], consts + carry + _varying([(nodes[1:], None) for nodes, _ in xs]))
    for (before, _), (after, _) in zip(carry, body[:n_carry]):
        for a, b in zip(before, after):
            t.units.union(a, b)
    ys: List[Value] = []
    for var, (nodes, _) in zip(eqn.outvars[n_carry:], body[n_carry:]):
        step = t.units.new(var.aval.shape[0], "a scan's step axis")
        ys.append(((step,) + tuple(nodes), None))
    return carry + ys


def _varying(values: Sequence[Value]) -> List[Value]:
    """``values`` without their constants (a loop carry is not constant)."""
    return [(nodes, None) for nodes, _ in values]


def _while(t: _Tracer, eqn: Any, ins: List[Value]) -> List[Value]:
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    carry = _varying(ins[nc + nb:])
    t.closed(p["cond_jaxpr"], ins[:nc] + carry)
    body = t.closed(p["body_jaxpr"], ins[nc:nc + nb] + carry)
    for (before, _), (after, _) in zip(carry, body):
        for a, b in zip(before, after):
            t.units.union(a, b)
    return carry


def _cond(t: _Tracer, eqn: Any, ins: List[Value]) -> List[Value]:
    operands = [(nodes, None) for nodes, _ in ins[1:]]
    outs = [t.closed(branch, operands) for branch in eqn.params["branches"]]
    for other in outs[1:]:
        for (a_nodes, _), (b_nodes, _) in zip(outs[0], other):
            for a, b in zip(a_nodes, b_nodes):
                t.units.union(a, b)
    return [(nodes, None) for nodes, _ in outs[0]]


HIGHER_ORDER: Dict[str, Callable[[_Tracer, Any, List[Value]], List[Value]]] = {
    "scan": _scan, "while": _while, "cond": _cond}


# ---- the spec -------------------------------------------------------------------------------
def _settle(units: AxisUnits) -> Dict[int, int]:
    """Each component's unit count; fixes components whose axes are not whole copies of
    their units or whose segments disagree, and the segments of fixed axes."""
    for r in list(units.parts):  # segments that are all one group: copies of it
        leaves = units.leaves(r) if r in units.parts else []
        if len({root for root, _ in leaves}) == 1 and len({n for _, n in leaves}) == 1:
            root = units.find(r)
            units.parts.pop(root, None)
            units.union(root, leaves[0][0])
    members: Dict[int, List[int]] = {}
    for node in range(len(units.parent)):
        members.setdefault(units.find(node), []).append(units.size[node])
    unit = {r: min(sizes) for r, sizes in members.items()}
    for r, sizes in members.items():
        if any(s % unit[r] for s in sizes):
            units.fix(r, "axes that are not whole copies of one set of units")
        elif r in units.parts and len(set(sizes)) > 1:
            units.fix(r, "segments on an axis that holds copies of its units")
    changed = True
    while changed:
        changed = False
        for r in list(units.parts):
            root = units.find(r)
            for leaf, size in units.leaves(r):
                bad = (root in units.fixed or size != unit[leaf]) and leaf not in units.fixed
                if bad:
                    units.fixed[leaf] = units.fixed.get(root, "a segment of another size")
                    changed = True
    return unit


def spec_from_jaxpr(variables: Any, forward: Callable[[Any], Any]) -> PermutationSpec:
    """The permutation spec of ``forward``'s computation on ``variables``.

    Args:
      variables: one member's variables (params and collections).
      forward: ``variables -> outputs`` (the model in evaluation mode on a fixed
        sample input, closed over).

    Returns:
      A spec with groups ``P0, P1, ...`` in the order their first variable
      appears (modules in call order), and ``notes`` naming each variable axis
      left unpermuted for a reason other than the model's input or outputs.
    """
    named, treedef = jax.tree_util.tree_flatten_with_path(variables)
    paths = [path_name(p) for p, _ in named]
    leaves = [leaf for _, leaf in named]
    closed = jax.make_jaxpr(lambda xs: forward(jax.tree_util.tree_unflatten(treedef, xs)))(
        leaves)
    tracer = _Tracer()
    args = [(tracer.units.fresh(np.shape(x)), None) for x in leaves]
    for nodes, _ in tracer.walk(closed.jaxpr, closed.consts, args):
        for n in nodes:
            tracer.units.fix(n, OUTPUT)
    units = tracer.units
    unit = _settle(units)
    names: Dict[int, str] = {}
    order = _call_order(variables, paths)
    axes: Dict[str, Tuple[Any, ...]] = {}
    notes: Dict[str, str] = {}
    for i in order:
        entry = []
        for axis, node in enumerate(args[i][0]):
            segs: List[Any] = []
            for root, size in units.leaves(node):
                if root in units.fixed or unit[root] <= 1:
                    segs.append(size)
                    reason = units.fixed.get(root)
                    if reason and reason not in QUIET and size > 1:
                        notes.setdefault(f"{paths[i]}[{axis}]", reason)
                else:
                    segs.append(names.setdefault(root, f"P{len(names)}"))
            entry.append(_axis_entry(segs))
        if any(a is not None for a in entry):
            axes[paths[i]] = tuple(entry)
    return PermutationSpec.of(axes, notes=notes)


def _axis_entry(segs: List[Any]) -> Any:
    """One axis' entry: ``None``, a group name, or segments (names and unpermuted counts)."""
    merged: List[Any] = []
    for s in segs:
        if isinstance(s, int) and merged and isinstance(merged[-1], int):
            merged[-1] += s
        else:
            merged.append(s)
    if all(isinstance(s, int) for s in merged):
        return None
    return merged[0] if len(merged) == 1 else tuple(merged)


def _call_order(variables: Any, paths: List[str]) -> List[int]:
    """Indices of ``paths`` with params in the order the model created them."""
    order: List[str] = []

    def walk(tree: Any, prefix: str) -> None:
        if hasattr(tree, "items"):
            for k, v in tree.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        else:
            order.append(prefix)
    walk(variables, "")
    rank = {p: i for i, p in enumerate(order)}
    return sorted(range(len(paths)), key=lambda i: rank.get(paths[i], len(order) + i))
