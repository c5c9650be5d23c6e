"""Concat: each operand gets its own slice of the relevance back.

    R_i = R_out[..., offset_i : offset_i + size_i, ...]      along the Concat's axis

Relevance is only moved, so the rule conserves for image-dependent operands; a constant
operand (a learned token, a fixed channel) keeps the slice that falls on it, as a bias
does under LRP-epsilon, and check reports it. The gradient is the same split.
"""

import numpy as np

from .base import Rule, SignKeeping


def sizes_along(node, pieces, what):
    """(axis, the sizes of ``pieces`` along the node's ``axis``), or a reason string: the
    pieces a Concat joins or a Split cuts (``what`` names them in the reason)."""
    shapes = [t.shape for t in pieces]
    if any(s is None for s in shapes):
        return f"the {what}' shapes are unknown"
    axis = int(node.attrs.get("axis", 0)) % len(shapes[0])
    if axis == 0:
        return f"a {node.op} along the batch axis has no rule"
    sizes = [s[axis] for s in shapes]
    if any(not isinstance(d, (int, np.integer)) for d in sizes):
        return f"the {what}' sizes along axis {axis} must be static, not {sizes}"
    return axis, [int(d) for d in sizes]


def _sizes(node, facts):
    return sizes_along(node, node.inputs, "operands")


class ConcatSplit(SignKeeping, Rule):
    op_types = ("Concat",)
    families = ("lrp", "epsilon", "gradient")

    @classmethod
    def reads_constant(cls, node, index) -> bool:
        return True  # a constant operand is part of the output

    def check(self, node, facts):
        found = _sizes(node, facts)
        return found if isinstance(found, str) else None

    def relevance_inputs(self, node, facts):
        return facts.activations(node)

    def describe(self, node, facts):
        kept = len(node.inputs) - len(facts.activations(node))
        return "split back" + (f" ({kept} constant operand(s) keep their share)" if kept else "")

    def absorption(self, node, facts):
        if len(facts.activations(node)) < len(node.inputs):
            return "a constant operand keeps the relevance that falls on it"
        return None

    def emit(self, node, relevance, e, facts):
        axis, sizes = _sizes(node, facts)
        if len(sizes) == 1:
            return {0: relevance}
        parts = e.op("Split", [relevance, np.array(sizes, np.int64)], {"axis": axis},
                     hint="r_in", outputs=len(sizes))
        return {i: parts[i] for i in facts.activations(node)}


RULES = [ConcatSplit()]
