"""Transpose (TensorFlow's NHWC to NCHW at the input): relevance passes unchanged, moved
back with the inverse permutation."""

import numpy as np

from .base import Rule, SignKeeping


class TransposeBack(SignKeeping, Rule):
    families = ("lrp", "epsilon", "gradient")
    op_types = ("Transpose",)

    def check(self, node, facts):
        if "perm" not in node.attrs:
            return "a Transpose without perm (full reversal) is not supported"
        return None

    def describe(self, node, facts):
        return "transpose back"

    def emit(self, node, relevance, e, facts):
        inverse = np.argsort(node.attrs["perm"]).tolist()
        return {0: e.op("Transpose", [relevance], {"perm": inverse}, hint="r_in")}


RULES = [TransposeBack()]
