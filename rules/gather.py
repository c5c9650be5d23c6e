"""Gather with constant indices (a ViT's class token ``x[:, 0]``, the query/key/value
picked off a stacked projection): each entry's relevance goes back to where it was read.

    indices a range [s, s + k):   R_in = Pad(R_out, s before, n - s - k after)  on the axis
    other indices (repeats too):  R_in = R_out @ onehot  along the axis, onehot[j, idx[j]] = 1

A scalar index first gets its axis back (Unsqueeze). Relevance is only moved (summed where
an entry is read twice), so the rule conserves; entries never read get 0. The gradient is
the same scatter.
"""

import numpy as np

from .base import Rule, SignKeeping


def _plan(node, facts):
    """(axis, the input's size there, the indices as a 1-D array, scalar?) or a reason."""
    shape = node.inputs[0].shape
    indices = facts.const_value(node.inputs[1])
    if indices is None:
        return "the indices are computed from the image; only constant indices have a rule"
    if indices.ndim > 1:
        return "only scalar or 1-D indices have a rule"
    if shape is None:
        return "the input's rank is unknown"
    axis = int(node.attrs.get("axis", 0)) % len(shape)
    size = shape[axis]
    if not isinstance(size, (int, np.integer)):
        return f"the gathered axis {axis} must have a static size, not {size}"
    flat = np.where(indices < 0, indices + size, indices).astype(np.int64).reshape(-1)
    return axis, int(size), flat, indices.ndim == 0


class GatherBack(SignKeeping, Rule):
    op_types = ("Gather",)
    families = ("lrp", "epsilon", "gradient")

    def check(self, node, facts):
        plan = _plan(node, facts)
        return plan if isinstance(plan, str) else None

    def describe(self, node, facts):
        axis, _, flat, _ = _plan(node, facts)
        return "pad back" if _is_range(flat) else "scatter back (one-hot)"

    def emit(self, node, relevance, e, facts):
        axis, size, flat, scalar = _plan(node, facts)
        if scalar:
            relevance = e.op("Unsqueeze", [relevance, np.array([axis], np.int64)], hint="r_axis")
        rank = len(node.inputs[0].shape)
        if _is_range(flat):
            pads = np.zeros(2 * rank, np.int64)
            pads[axis], pads[axis + rank] = flat[0], size - flat[0] - flat.size
            return {0: e.op("Pad", [relevance, pads], {"mode": "constant"}, hint="r_in")}
        onehot = np.zeros((flat.size, size), e.dtype)
        onehot[np.arange(flat.size), flat] = 1
        last = list(range(rank))
        last[axis], last[-1] = last[-1], last[axis]  # a swap: its own inverse
        moved = e.op("Transpose", [relevance], {"perm": last}, hint="r_last")
        scattered = e.op("MatMul", [moved, e.const(onehot, "onehot")], hint="r_scattered")
        return {0: e.op("Transpose", [scattered], {"perm": last}, hint="r_in")}


def _is_range(flat) -> bool:
    return flat.size > 0 and bool(np.all(np.diff(flat) == 1))


RULES = [GatherBack()]
