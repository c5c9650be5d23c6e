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
        r_in = e.op("Reshape", [relevance, e.op("Shape", [a])], hint="r_in")
        if e.zero_where.get(relevance.name) is node.outputs[0]:
            e.zero_where[r_in.name] = a  # a multiple of the output, reshaped: one of the input
        return {0: r_in}


RULES = [ReshapeBack()]
