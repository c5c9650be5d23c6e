"""The one generic linear rule behind Conv, Gemm and MatMul (zennit's pattern: a rule is a
few parameters of one routine).

z+ (SPEC.md section 1), for an input ``a >= 0`` (after Relu, ReLU6, MaxPool, ...):

    z = f(a, W+),  s = R_out / (z + eps),  R_in = a * f^T(s, W+)

For an input that can be negative (EfficientNet's linear bottlenecks feed their block
sums, unrectified, into the next expand conv) that z can cross zero and ``R / (z + eps)``
explodes. There the rule takes the positive contributions in full, as zennit's ZPlus
does: ``z = f(a+, W+) + f(a-, W-)`` >= 0 and ``R_in = a+ * f^T(s, W+) + a- * f^T(s, W-)``.
On a non-negative input the two are the same rule, so ResNets get exactly the paper's.
Both conserve: ``sum(R_in) = sum(R_out * z / (z + eps))``.
"""

import numpy as np

from .base import Rule


class LinearZPlus(Rule):
    """What the z+ rules of the weighted layers (Conv, Gemm, MatMul) share: the op carries
    weights, and the stabiliser ``eps`` is added plainly (SPEC.md section 1)."""

    weighted = True
    params = ("eps",)
    eps = 1e-5

    def check(self, node, facts):
        if len(facts.activations(node)) != 1 or facts.is_const(node.inputs[0]):
            return f"a {node.op} whose weights are computed from the image has no LRP rule"
        return self.check_layer(node, facts)

    def check_layer(self, node, facts) -> str | None:
        """What the layer's own attributes may rule out, once its data is its one
        image-dependent operand."""
        return None


class EpsilonParam:
    """The LRP-epsilon family's parameter: captum's stabiliser, ``eps * sign(z)``."""

    families = ("epsilon",)
    params = ("epsilon",)
    epsilon = 1e-9


def zplus(e, relevance, a, w, forward, backward, non_negative: bool, eps: float):
    """``forward(x, w, eps)`` is the layer with ``eps`` as its bias (so ``z + eps`` costs no
    extra pass: SPEC.md adds eps plainly), ``backward(s, w)`` its transpose."""
    w_plus = e.positive_part(w)
    if non_negative:
        s = e.ratio(relevance, forward(a, w_plus, eps), hint="s")
        return e.scaled(a, backward(s, w_plus))
    zero = e.scalar(0.0)
    a_pos = e.op("Relu", [a], hint="a_pos")
    a_neg = e.op("Min", [a, zero], hint="a_neg")
    w_neg = e.op("Min", [w, e.const(np.zeros((), dtype=w.dtype or np.float32), "zero_w")], hint="w_neg")
    w_neg.shape = w.shape
    z = e.op("Add", [forward(a_pos, w_plus, eps), forward(a_neg, w_neg, 0.0)], hint="z_eps")
    s = e.op("Div", [relevance, z], hint="s")
    r_pos = e.op("Mul", [a_pos, backward(s, w_plus)], hint="r_pos")
    r_neg = e.op("Mul", [a_neg, backward(s, w_neg)], hint="r_neg")
    return e.op("Add", [r_pos, r_neg], hint="r_in")


def epsilon_ratio(e, relevance, z, epsilon):
    """``R / (z + epsilon * sign(z))`` with sign(0) = +1 (captum's EpsilonRule)."""
    positive = e.op("GreaterOrEqual", [z, e.scalar(0.0)], hint="z_pos")
    stab = e.op("Where", [positive, e.scalar(epsilon), e.scalar(-epsilon)], hint="stab")
    return e.op("Div", [relevance, e.op("Add", [z, stab])], hint="s")


def epsilon(e, relevance, a, z, w, backward, eps):
    """LRP-epsilon: ``z`` is the layer's own output (bias included: it absorbs its share),
    ``R_in = a * f^T(R / (z + eps*sign(z)), W)``."""
    return e.scaled(a, backward(epsilon_ratio(e, relevance, z, eps), w))


class EpsilonKind(EpsilonParam):
    """LRP-epsilon for a linear layer: mixed in before its z+ rule class, which supplies
    ``backward(e, node, facts)``, the transposed product ``(s, W) -> f^T(s, W)``."""

    def describe(self, node, facts):
        return "epsilon"

    def emit(self, node, relevance, e, facts):
        return {0: epsilon(e, relevance, node.inputs[0], node.outputs[0], node.inputs[1],
                           self.backward(e, node, facts), self.epsilon)}


class GradientKind:
    """The backward pass of a linear layer: ``G_in = f^T(G, W)``."""

    families = ("gradient",)
    params = ()

    def describe(self, node, facts):
        return "gradient"

    def emit(self, node, grad, e, facts):
        return {0: self.backward(e, node, facts)(grad, node.inputs[1])}


def describe(non_negative: bool) -> str:
    return "z+" if non_negative else "z+ (signed input: a+W+ + a-W-)"
