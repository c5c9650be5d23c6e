"""Slice and Split: each piece's relevance goes back to where the piece was cut from.

    Slice:  R_in = Pad(R_out, begin = start, end = size - stop)       (zeros elsewhere)
    Split:  R_in = Concat(R_1, ..., R_k)  along the split axis, a piece that received no
            relevance (a branch that ends unused, or a gate's) contributes zeros

A strided Slice (Swin's patch merging, ``x[:, 0::2, 1::2]``) spreads each entry back to its
place ``step`` apart. Relevance is only moved, so both conserve. Entries a Slice cut away
never reached the output and get 0. Negative steps and cuts along the batch axis have no
rule here. The gradient is the same scatter.
"""

import numpy as np

from .base import Rule, SignKeeping
from .concat import sizes_along


def _const_ints(node, facts, index, default=None):
    if len(node.inputs) <= index or node.inputs[index].is_empty():
        return default
    value = facts.const_value(node.inputs[index])
    return None if value is None else [int(v) for v in np.ravel(value)]


def slice_plan(node, facts):
    """[(axis, begin, step, kept, size)] for each sliced axis, or a reason string."""
    shape = node.inputs[0].shape
    starts, ends = _const_ints(node, facts, 1), _const_ints(node, facts, 2)
    if shape is None or starts is None or ends is None:
        return "the slice bounds or the input shape are computed at run time"
    rank = len(shape)
    axes = _const_ints(node, facts, 3, list(range(len(starts))))
    steps = _const_ints(node, facts, 4, [1] * len(starts))
    if axes is None or steps is None or any(s < 1 for s in steps):
        return "only slices with positive steps and constant axes have a rule"
    plan = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= rank
        dim = shape[axis]
        if axis == 0:
            return "a slice of the batch axis has no rule"
        if not isinstance(dim, (int, np.integer)):
            return f"the sliced axis {axis} must have a static size"
        begin, stop = (min(max(v + dim if v < 0 else v, 0), dim) for v in (start, end))
        kept = max(0, -(-(stop - begin) // step))
        plan.append((axis, begin, step, kept, int(dim)))
    return plan


def _pads(rank, axis, before, after):
    pads = np.zeros(2 * rank, np.int64)
    pads[axis], pads[axis + rank] = before, after
    return pads


def _unstride(e, r, rank, axis, begin, step, kept, size, shape):
    """Put ``kept`` entries, ``step`` apart from ``begin``, back on an axis of ``size``:
    each entry gets step - 1 zeros after it (Unsqueeze, Pad, Reshape), then the run is
    shifted to ``begin`` and cut or padded to ``size``."""
    r = e.op("Unsqueeze", [r, np.array([axis + 1], np.int64)], hint="r_slot")
    r = e.op("Pad", [r, _pads(rank + 1, axis + 1, 0, step - 1)], {"mode": "constant"}, hint="r_spread")
    dims = [0] + [int(d) for d in shape[1:]]
    dims[axis] = kept * step
    r = e.op("Reshape", [r, np.array(dims, np.int64)], hint="r_strided")
    end = min(size - begin, kept * step)
    if end < kept * step:
        r = e.op("Slice", [r, np.array([0], np.int64), np.array([end], np.int64), np.array([axis], np.int64)],
                 hint="r_cut")
    return e.op("Pad", [r, _pads(rank, axis, begin, size - begin - end)], {"mode": "constant"}, hint="r_in")


class SliceBack(SignKeeping, Rule):
    op_types = ("Slice",)
    families = ("lrp", "epsilon", "gradient")

    def check(self, node, facts):
        plan = slice_plan(node, facts)
        if isinstance(plan, str):
            return plan
        if any(step > 1 for _, _, step, _, _ in plan) and (node.outputs[0].shape is None or any(
                not isinstance(d, (int, np.integer)) for d in node.outputs[0].shape[1:])):
            return "a strided slice needs its output's non-batch sizes static"
        return None

    def describe(self, node, facts):
        strided = any(step > 1 for _, _, step, _, _ in slice_plan(node, facts))
        return "spread back (strided)" if strided else "pad back"

    def emit(self, node, relevance, e, facts):
        plan, rank = slice_plan(node, facts), len(node.inputs[0].shape)
        if all(step == 1 for _, _, step, _, _ in plan):
            pads = np.zeros(2 * rank, np.int64)
            for axis, begin, _, kept, size in plan:
                pads[axis], pads[axis + rank] = begin, size - begin - kept
            return {0: e.op("Pad", [relevance, pads], {"mode": "constant"}, hint="r_in")}
        shape = list(node.outputs[0].shape)
        for axis, begin, step, kept, size in plan:
            relevance = _unstride(e, relevance, rank, axis, begin, step, kept, size, shape)
            shape[axis] = size
        return {0: relevance}


def _split_sizes(node, facts):
    """(axis, the pieces' sizes along it), or a reason string."""
    return sizes_along(node, node.outputs, "pieces")


class SplitBack(SignKeeping, Rule):
    op_types = ("Split",)
    families = ("lrp", "epsilon", "gradient")
    multi_output = True

    def check(self, node, facts):
        found = _split_sizes(node, facts)
        return found if isinstance(found, str) else None

    def describe(self, node, facts):
        return "concatenate back"

    def emit(self, node, relevances, e, facts):
        axis, sizes = _split_sizes(node, facts)
        if all(r is not None for r in relevances):
            return {0: e.op("Concat", relevances, {"axis": axis}, hint="r_in")}
        rank, total, parts, offset = len(node.inputs[0].shape), sum(sizes), [], 0
        for r, size in zip(relevances, sizes):
            if r is not None:
                pads = np.zeros(2 * rank, np.int64)
                pads[axis], pads[axis + rank] = offset, total - offset - size
                parts.append(e.op("Pad", [r, pads], {"mode": "constant"}, hint="r_part"))
            offset += size
        return {0: parts[0] if len(parts) == 1 else e.op("Sum", parts, hint="r_in")}


RULES = [SliceBack(), SplitBack()]
