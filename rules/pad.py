"""Pad in constant mode with the value 0 (TensorFlow's explicit 'same' padding, padded
convolutions exported as Pad + Conv): relevance passes back to the input's region.

    R_in = Pad(R_out, -pads)

ONNX Pad with negative pads crops, so this one op is the adjoint for positive pads (the
border is cut away) and for negative ones (a crop, whose adjoint pads with zeros). The
border's entries are the constant 0: a z-rule above sends them ``0 * c = 0``, so cutting
them away loses nothing and the rule conserves. The gradient of a pad is the same crop.

A pad value other than 0 would keep the relevance a z-rule sends to its border, and the
edge/reflect modes copy activations into it (their adjoint sums those copies back): both
have no rule here.
"""

import numpy as np

from .base import Rule, SignKeeping


def _pads(node, facts):
    """The pads as a constant array, or None."""
    if len(node.inputs) < 2 or node.inputs[1].is_empty():
        return None
    value = facts.const_value(node.inputs[1])
    return None if value is None else np.asarray(value, dtype=np.int64)


class PadBack(SignKeeping, Rule):
    op_types = ("Pad",)
    families = ("lrp", "epsilon", "gradient")

    @classmethod
    def reads_constant(cls, node, index) -> bool:
        return index == 2  # the pad value; pads and axes are shape arguments

    def check(self, node, facts):
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            return f"mode={mode} copies activations into the border; only constant pads have a rule"
        if _pads(node, facts) is None:
            return "the pads are computed at run time; re-export with constant folding"
        if len(node.inputs) > 2 and not node.inputs[2].is_empty():
            value = facts.const_value(node.inputs[2])
            if value is None or np.any(np.asarray(value) != 0):
                return "a pad value other than 0 keeps relevance in the border; only 0 has a rule"
        return None

    def describe(self, node, facts):
        return "crop back"

    def emit(self, node, relevance, e, facts):
        inputs = [relevance, -_pads(node, facts)]
        if len(node.inputs) > 3 and not node.inputs[3].is_empty():
            inputs += [None, node.inputs[3]]  # the same axes
        return {0: e.op("Pad", inputs, {"mode": "constant"}, hint="r_in")}


RULES = [PadBack()]
