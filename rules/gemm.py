"""Gemm (fully connected): the z+ rule (SPEC.md section 1).

    z    = alpha * a @ W+^T      (transB=1; bias dropped)
    s    = R_out / (z + eps)
    R_in = a * (alpha * s @ W+)

The backward product is one more Gemm with transB flipped, so W+ is never transposed.
"""

from .linear import EpsilonKind, GradientKind, LinearZPlus, zplus


class GemmZPlus(LinearZPlus):
    op_types = ("Gemm",)
    role = "dense"

    def check_layer(self, node, facts):
        if node.attrs.get("transA", 0):
            return "transA=1 is not supported; export the layer with transA=0"
        return None

    def describe(self, node, facts):
        return self.note(facts.non_negative(node.inputs[0]))

    def backward(self, e, node, facts):
        trans_b, alpha = _attrs(node)
        return lambda s, wt: e.op("Gemm", [s, wt], {"alpha": alpha, "transB": 1 - trans_b}, hint="c")

    def forward_with(self, e, node, facts):
        """``(x, w, b) -> alpha * x @ w (+ beta * b)``; ``b`` a float or a tensor (the bias's
        own beta applies to a tensor: it is a part of the node's own C)."""
        trans_b, alpha = _attrs(node)
        beta = float(node.attrs.get("beta", 1.0))

        def forward(x, wt, b):
            if isinstance(b, float):
                b, beta_b = e.scalar(b), 1.0
            else:
                beta_b = beta
            return e.op("Gemm", [x, wt] + ([b] if b is not None else []),
                        {"alpha": alpha, "beta": beta_b, "transB": trans_b}, hint="z_eps")
        return forward

    def emit(self, node, relevance, e, facts):
        a, w = node.inputs[0], node.inputs[1]
        forward = self.forward_with(e, node, facts)
        backward = self.backward(e, node, facts)
        return {0: zplus(e, relevance, a, w, forward, backward, facts.non_negative(a), self.eps,
                         self.rescue(e, node, facts, relevance, forward, backward))}


def _attrs(node):
    return int(node.attrs.get("transB", 0)), float(node.attrs.get("alpha", 1.0))


class GemmEpsilon(EpsilonKind, GemmZPlus):
    pass


class GemmGradient(GradientKind, GemmZPlus):
    pass


RULES = [GemmZPlus(), GemmEpsilon(), GemmGradient()]
