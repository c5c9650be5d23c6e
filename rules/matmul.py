"""MatMul with a constant right operand (TensorFlow's dense layers, some dynamo exports):
the z+ rule, as for Gemm (SPEC.md section 1).

    z    = a @ W+
    s    = R_out / (z + eps)
    R_in = a * (s @ W+^T)
"""

from .linear import EpsilonKind, GradientKind, LinearZPlus, zplus


class MatMulZPlus(LinearZPlus):
    op_types = ("MatMul",)
    role = "dense"

    def check_layer(self, node, facts):
        shape = node.inputs[1].shape
        if shape is None or len(shape) != 2:
            return "the weight must be a 2-D matrix"
        return None

    def describe(self, node, facts):
        return self.note(facts.non_negative(node.inputs[0]))

    def backward(self, e, node, facts):
        return lambda s, wt: e.op("MatMul", [s, e.op("Transpose", [wt], {"perm": [1, 0]})], hint="c")

    def emit(self, node, relevance, e, facts):
        a, w = node.inputs[0], node.inputs[1]

        def forward(x, wt, eps):
            return e.op("Add", [e.op("MatMul", [x, wt], hint="z"), e.scalar(eps)], hint="z_eps")

        backward = self.backward(e, node, facts)
        return {0: zplus(e, relevance, a, w, forward, backward, facts.non_negative(a), self.eps,
                         self.rescue(e, node, facts, relevance, forward, backward))}


class MatMulEpsilon(EpsilonKind, MatMulZPlus):
    pass


class MatMulGradient(GradientKind, MatMulZPlus):
    pass


RULES = [MatMulZPlus(), MatMulEpsilon(), MatMulGradient()]
