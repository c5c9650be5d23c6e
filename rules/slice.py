"""Slice and Split: each piece's relevance goes back to where the piece was cut from.

    Slice:  R_in = Pad(R_out, begin = start, end = size - stop)       (zeros elsewhere)
    Split:  R_in = Concat(R_1, ..., R_k)  along the split axis, a piece that received no
            relevance (a branch that ends unused, or a gate's) contributes zeros

Relevance is only moved, so both conserve. Entries a Slice cut away never reached the
output and get 0. Strided slices (steps other than 1) and cuts along the batch axis have
no rule here. The gradient is the same scatter.
"""

import numpy as np

from .base import Rule, SignKeeping
from .concat import sizes_along


def _const_ints(node, facts, index, default=None):
    if len(node.inputs) <= index or node.inputs[index].is_empty():
        return default
    value = facts.const_value(node.inputs[index])
    return None if value is None else [int(v) for v in np.ravel(value)]


def slice_pads(node, facts):
    """The Pad that puts a Slice's output back in its input's place, or a reason string."""
    shape = node.inputs[0].shape
    starts, ends = _const_ints(node, facts, 1), _const_ints(node, facts, 2)
    if shape is None or starts is None or ends is None:
        return "the slice bounds or the input shape are computed at run time"
    rank = len(shape)
    axes = _const_ints(node, facts, 3, list(range(len(starts))))
    steps = _const_ints(node, facts, 4, [1] * len(starts))
    if axes is None or steps is None or any(s != 1 for s in steps):
        return "only slices with step 1 and constant axes have a rule"
    pads = [0] * (2 * rank)
    for start, end, axis in zip(starts, ends, axes):
        axis %= rank
        dim = shape[axis]
        if axis == 0:
            return "a slice of the batch axis has no rule"
        if not isinstance(dim, (int, np.integer)):
            return f"the sliced axis {axis} must have a static size"
        begin, stop = (min(max(v + dim if v < 0 else v, 0), dim) for v in (start, end))
        pads[axis], pads[axis + rank] = begin, dim - max(stop, begin)
    return pads


class SliceBack(SignKeeping, Rule):
    op_types = ("Slice",)
    families = ("lrp", "epsilon", "gradient")

    def check(self, node, facts):
        pads = slice_pads(node, facts)
        return pads if isinstance(pads, str) else None

    def describe(self, node, facts):
        return "pad back"

    def emit(self, node, relevance, e, facts):
        pads = np.array(slice_pads(node, facts), np.int64)
        return {0: e.op("Pad", [relevance, pads], {"mode": "constant"}, hint="r_in")}


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
