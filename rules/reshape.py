"""Flatten, Reshape, Squeeze, Unsqueeze: relevance passes unchanged, given back the shape
of the node's input (``R_in = reshape(R_out, shape(a))``)."""

from .base import Relevance, Rule, SignKeeping, zero_where


class ReshapeBack(SignKeeping, Rule):
    families = ("lrp", "epsilon", "gradient")
    op_types = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")

    def describe(self, node, facts):
        return "reshape back"

    def emit(self, node, relevance, e, facts):
        a = node.inputs[0]
        r_in = e.op("Reshape", [relevance, e.op("Shape", [a])], hint="r_in")
        if zero_where(relevance) is node.outputs[0]:
            return {0: Relevance(r_in, a)}  # a multiple of the output, reshaped: of the input
        return {0: r_in}


RULES = [ReshapeBack()]
