"""How each primitive moves hidden units from its operands' axes to its outputs'.

A rule ``(units, eqn, operand nodes) -> output nodes`` joins the axes that carry
the same units (:class:`~genetic_dl.operators.axis_units.AxisUnits`) and fixes
those whose order the primitive depends on. Primitives without a rule fix every
axis they touch (:mod:`genetic_dl.operators.spec_derivation`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

from .axis_units import AxisUnits

SPATIAL = "a convolution's spatial axis"
ELEMENTWISE = frozenset("""
abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp clz conj convert_element_type
copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow
is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not or population_count
pow real reduce_precision rem round rsqrt select_n sharding_constraint shift_left
shift_right_arithmetic shift_right_logical sign sin sinh sqrt square sub tan tanh xor
""".split())
REDUCTIONS = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or "
                       "reduce_xor".split())
CUMULATIVE = frozenset("cumsum cumprod cummax cummin cumlogsumexp".split())


Nodes = Tuple[int, ...]
Rule = Callable[[AxisUnits, Any, List[Nodes]], List[Nodes]]


def elementwise(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    """Operands of the output's rank are joined axis by axis (a size-1 axis broadcasts)."""
    shape = tuple(eqn.outvars[0].aval.shape)
    out = []
    for axis, n in enumerate(shape):
        nodes = [x[axis] for x in ins if len(x) == len(shape) and u.size[x[axis]] == n]
        for other in nodes[1:]:
            u.union(nodes[0], other)
        out.append(nodes[0] if nodes else u.new(n))
    return [tuple(out)] * len(eqn.outvars)


def _broadcast(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    out = list(u.fresh(shape))
    for i, d in enumerate(dims):
        if u.size[ins[0][i]] == shape[d]:
            out[d] = ins[0][i]
    return [tuple(out)]


def _reshape(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    old = tuple(eqn.invars[0].aval.shape)
    new = tuple(eqn.params["new_sizes"])
    out = list(u.fresh(new))
    for a, b in _blocks(old, new):
        if len(a) == 1 and len(b) == 1:
            out[b[0]] = ins[0][a[0]]
        elif len(b) == 1:  # a flatten: the fastest axis' units, one copy per slower index
            u.union(out[b[0]], ins[0][a[-1]])
            for i in a[:-1]:
                u.fix(ins[0][i], "a reshape merges it with a faster axis")
        elif len(a) == 1:  # an unflatten: the fastest new axis keeps the units
            u.union(out[b[-1]], ins[0][a[0]])
            for j in b[:-1]:
                u.fix(out[j], "a reshape splits it off a unit axis")
        else:
            for i in a:
                u.fix(ins[0][i], "a reshape that regroups axes")
            for j in b:
                u.fix(out[j], "a reshape that regroups axes")
    return [tuple(out)]


def _blocks(old: Sequence[int], new: Sequence[int]) -> List[Tuple[List[int], List[int]]]:
    """Groups of old and new axes (size-1 axes left out) whose sizes multiply alike."""
    a = [i for i, n in enumerate(old) if n != 1]
    b = [j for j, n in enumerate(new) if n != 1]
    blocks, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        ga, gb = [a[i]], [b[j]]
        pa, pb = old[a[i]], new[b[j]]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                ga.append(a[i])
                pa *= old[a[i]]
                i += 1
            else:
                gb.append(b[j])
                pb *= new[b[j]]
                j += 1
        blocks.append((ga, gb))
    return blocks


def _transpose(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    del u
    return [tuple(ins[0][i] for i in eqn.params["permutation"])]


def _squeeze(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    del u
    dims = {d % len(ins[0]) for d in eqn.params["dimensions"]}
    return [tuple(n for i, n in enumerate(ins[0]) if i not in dims)]


def _reduce(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    del u  # a sum or max over units does not depend on their order
    axes = set(eqn.params["axes"])
    return [tuple(n for i, n in enumerate(ins[0]) if i not in axes)]


def _arg_reduce(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    axes = set(eqn.params["axes"])
    for i in axes:
        u.fix(ins[0][i], f"{eqn.primitive.name} returns positions along it")
    return [tuple(n for i, n in enumerate(ins[0]) if i not in axes)]


def _along_axis(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    """cumsum, sort, rev...: the order along the named axes matters."""
    name = eqn.primitive.name
    axes = eqn.params.get("axis", eqn.params.get("dimension", eqn.params.get("dimensions")))
    axes = {axes} if isinstance(axes, int) else set(axes)
    rank = len(ins[0])
    for nodes in ins:
        for i in axes:
            u.fix(nodes[i % rank], f"{name} depends on the order along it")
        for a, b in zip(ins[0], nodes):
            u.union(a, b)
    return [ins[0]] * len(eqn.outvars)


def _concatenate(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    d = eqn.params["dimension"]
    for nodes in ins[1:]:
        for i, (a, b) in enumerate(zip(ins[0], nodes)):
            if i != d:
                u.union(a, b)
    out = list(ins[0])
    out[d] = u.joined([nodes[d] for nodes in ins])
    return [tuple(out)]


def _slice(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    p = eqn.params
    strides = p["strides"] or (1,) * len(ins[0])
    out = []
    for node, lo, hi, s in zip(ins[0], p["start_indices"], p["limit_indices"], strides):
        if s == 1:
            out.append(u.piece(node, lo, hi))
        else:
            u.fix(node, "a strided slice")
            out.append(u.new(len(range(lo, hi, s)), "a strided slice"))
    return [tuple(out)]


def _split(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    axis, out, offset = eqn.params["axis"], [], 0
    for size in eqn.params["sizes"]:
        nodes = list(ins[0])
        nodes[axis] = u.piece(ins[0][axis], offset, offset + size)
        out.append(tuple(nodes))
        offset += size
    return out


def _partial_axes(u: AxisUnits, eqn: Any, ins: List[Nodes], sizes: Sequence[int],
                  reason: str) -> Nodes:
    """Axes read whole keep their units; an axis read in part is fixed."""
    shape = tuple(eqn.outvars[0].aval.shape)
    out = []
    for node, size, n in zip(ins[0], sizes, shape):
        if size == u.size[node]:
            out.append(node)
        else:
            u.fix(node, reason)
            out.append(u.new(n, reason))
    return tuple(out)


def _dynamic_slice(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    return [_partial_axes(u, eqn, ins, eqn.params["slice_sizes"], "a dynamic slice")]


def _dynamic_update(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    del eqn
    for a, b in zip(ins[0], ins[1]):
        if u.size[a] == u.size[b]:
            u.union(a, b)
        else:
            u.fix(a, "a dynamic update of part of it")
            u.fix(b, "a dynamic update of part of it")
    return [ins[0]]


def _pad(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    sizes = [u.size[n] if cfg == (0, 0, 0) else -1
             for n, cfg in zip(ins[0], map(tuple, eqn.params["padding_config"]))]
    return [_partial_axes(u, eqn, ins, sizes, "padding")]


def _window(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    """Pooling: an axis with a window of one, stride one and no padding keeps its units."""
    p = eqn.params
    rank = len(ins[0])
    ones = (1,) * rank
    plain = [w == 1 and s == 1 and tuple(pad) == (0, 0) and bd == 1 and wd == 1
             for w, s, pad, bd, wd in zip(p["window_dimensions"], p["window_strides"],
                                          p["padding"], p.get("base_dilation", ones),
                                          p.get("window_dilation", ones))]
    sizes = [u.size[n] if keep else -1 for n, keep in zip(ins[0], plain)]
    outs = []
    for nodes in ins[: len(eqn.outvars)]:
        outs.append(_partial_axes(u, eqn, [nodes], sizes, "a pooling window along it"))
    for nodes in outs[1:]:
        for a, b in zip(outs[0], nodes):
            u.union(a, b)
    return outs


def _dot(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = ins[0], ins[1]
    for a, b in list(zip(lc, rc)) + list(zip(lb, rb)):
        u.union(lhs[a], rhs[b])
    free_l = [n for i, n in enumerate(lhs) if i not in lc and i not in lb]
    free_r = [n for i, n in enumerate(rhs) if i not in rc and i not in rb]
    return [tuple([lhs[i] for i in lb] + free_l + free_r)]


def _conv(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    dn = eqn.params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    lhs, rhs = ins[0], ins[1]
    shape = tuple(eqn.outvars[0].aval.shape)
    out = list(u.fresh(shape))
    for spec, nodes in ((lhs_spec, lhs), (rhs_spec, rhs)):
        for i in spec[2:]:
            u.fix(nodes[i], SPATIAL)
    for i in out_spec[2:]:
        u.fix(out[i], SPATIAL)
    groups, batch_groups = eqn.params["feature_group_count"], eqn.params["batch_group_count"]
    in_feat, out_feat = lhs[lhs_spec[1]], rhs[rhs_spec[0]]
    if batch_groups == 1:
        out[out_spec[0]] = lhs[lhs_spec[0]]
    if groups == 1 and batch_groups == 1:
        u.union(in_feat, rhs[rhs_spec[1]])
        out[out_spec[1]] = out_feat
    elif batch_groups == 1 and groups == u.size[in_feat] == u.size[out_feat]:
        u.union(in_feat, out_feat)  # depthwise: channel c reads channel c only
        out[out_spec[1]] = out_feat
    else:
        reason = "a grouped convolution's channels"
        for node in (in_feat, rhs[rhs_spec[1]], out_feat, out[out_spec[1]]):
            u.fix(node, reason)
    return [tuple(out)]


def _gather(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    """An embedding lookup: the table's indexed axis is fixed, its whole feature axes
    become the output's offset axes; the other output axes are the indices'."""
    dn, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
    operand, indices = ins
    shape = tuple(eqn.outvars[0].aval.shape)
    out = list(u.fresh(shape))
    indexed = set(dn.collapsed_slice_dims) | set(dn.start_index_map) | set(
        getattr(dn, "operand_batching_dims", ()))
    kept = [d for d in range(len(operand)) if d not in set(dn.collapsed_slice_dims)
            and d not in set(getattr(dn, "operand_batching_dims", ()))]
    for d in indexed:
        u.fix(operand[d], "indexed by a gather (e.g. an embedding's rows)")
    for o, d in zip(dn.offset_dims, kept):
        if d not in indexed and sizes[d] == u.size[operand[d]]:
            out[o] = operand[d]
        else:
            u.fix(operand[d], "a gather reads part of it")
            u.fix(out[o], "a gather reads part of it")
    batch_out = [i for i in range(len(shape)) if i not in set(dn.offset_dims)]
    for o, node in zip(batch_out, indices[:-1]):
        out[o] = node
    return [tuple(out)]


def _identity(u: AxisUnits, eqn: Any, ins: List[Nodes]) -> List[Nodes]:
    del u, eqn
    return list(ins)


RULES: Dict[str, Rule] = {
    "broadcast_in_dim": _broadcast, "reshape": _reshape, "transpose": _transpose,
    "squeeze": _squeeze, "expand_dims": _reshape, "concatenate": _concatenate,
    "slice": _slice, "split": _split, "dynamic_slice": _dynamic_slice,
    "dynamic_update_slice": _dynamic_update, "pad": _pad, "dot_general": _dot,
    "conv_general_dilated": _conv, "gather": _gather, "optimization_barrier": _identity,
    "argmax": _arg_reduce, "argmin": _arg_reduce, "rev": _along_axis, "sort": _along_axis,
    "reduce_window_sum": _window, "reduce_window_max": _window, "reduce_window_min": _window,
    "reduce_window": _window,
    **{name: _reduce for name in REDUCTIONS}, **{name: _along_axis for name in CUMULATIVE},
}
