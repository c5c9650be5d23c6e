"""MatMul with a constant right operand (TensorFlow's dense layers, some dynamo exports):
the z+ rule, as for Gemm (SPEC.md section 1).

    z    = a @ W+
    s    = R_out / (z + eps)
    R_in = a * (s @ W+^T)
"""

from .base import Rule


class MatMulZPlus(Rule):
    op_types = ("MatMul",)

    def check(self, node, facts, config):
        if facts.is_const(node.inputs[0]) or not facts.is_const(node.inputs[1]):
            return "only activation @ constant-weight MatMul has an LRP rule"
        shape = node.inputs[1].shape
        if shape is None or len(shape) != 2:
            return "the weight must be a 2-D matrix"
        return None

    def describe(self, node, facts, config):
        return "z+"

    def emit(self, node, relevance, e, facts, config):
        a, w = node.inputs[0], node.inputs[1]
        w_plus = e.positive_part(w)
        z = e.op("MatMul", [a, w_plus], hint="z")
        s = e.stabilised_ratio(relevance, z)
        w_plus_t = e.op("Transpose", [w_plus], {"perm": [1, 0]}, hint="w_plus_t")
        c = e.op("MatMul", [s, w_plus_t], hint="c")
        return {0: e.op("Mul", [a, c], hint="r_in")}


RULES = [MatMulZPlus()]
