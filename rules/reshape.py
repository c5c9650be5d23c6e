"""Flatten, Reshape, Squeeze, Unsqueeze: relevance passes unchanged, given back the shape
of the node's input (``R_in = reshape(R_out, shape(a))``)."""

from .base import Rule


class ReshapeBack(Rule):
    kinds = ("lrp", "epsilon", "gradient")
    op_types = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")

    def describe(self, node, facts, config):
        return "reshape back"

    def emit(self, node, relevance, e, facts, config):
        a = node.inputs[0]
        return {0: e.op("Reshape", [relevance, e.op("Shape", [a])], hint="r_in")}


RULES = [ReshapeBack()]
