"""The one generic linear rule behind Conv, Gemm and MatMul (zennit's pattern: a rule is a
few parameters of one routine).

z+ (SPEC.md section 1), for an input ``a >= 0`` (after Relu, ReLU6, MaxPool, ...):

    z = f(a, W+),  s = R_out / (z + eps),  R_in = a * f^T(s, W+)

For an input that can be negative (EfficientNet's linear bottlenecks feed their block
sums, unrectified, into the next expand conv) that z can cross zero and ``R / (z + eps)``
explodes. There the rule takes the positive contributions in full, as zennit's ZPlus
does: ``z = f(a+, W+) + f(a-, W-)`` >= 0 and ``R_in = a+ * f^T(s, W+) + a- * f^T(s, W-)``.
On a non-negative input the two are the same rule, so ResNets get exactly the paper's.
Both conserve: ``sum(R_in) = sum(R_out * z / (z + eps))`` -- except where z is 0 and
relevance arrives (a depthwise filter whose positive weights all see zeros: MobileNets,
EfficientNets), where ``a * c`` is 0 and the relevance is lost. ``fallback="w2"`` (the
``conserving`` composite) sends it by the w^2 rule there (Montavon et al. 2017; zennit's
WSquare), which needs no activation:

    dead = z < eps,   R_in = a * f^T(s [not dead], W+) + f^T(R [dead] / f(1, W^2), W^2)

``f(1, W^2)`` is one sample of ones through the layer, a constant ORT folds at load.
"""

import numpy as np

from .base import Rule


class LinearZPlus(Rule):
    """What the z+ rules of the weighted layers (Conv, Gemm, MatMul) share: the op carries
    weights, and the stabiliser ``eps`` is added plainly (SPEC.md section 1)."""

    weighted = True
    params = ("eps", "fallback")
    eps = 1e-5
    fallback = None  # "w2": the w^2 rule where z+ has nothing to divide by

    def check(self, node, facts):
        if len(facts.activations(node)) != 1 or facts.is_const(node.inputs[0]):
            return f"a {node.op} whose weights are computed from the image has no LRP rule"
        return self.check_layer(node, facts)

    def check_layer(self, node, facts) -> str | None:
        """What the layer's own attributes may rule out, once its data is its one
        image-dependent operand."""
        return None

    def rescue(self, e, node, facts, relevance, forward, backward):
        """The fallback for :func:`zplus` this instance's ``fallback`` names, or None."""
        if self.fallback != "w2":
            return None
        shape = facts.static_shape(node.inputs[0], "the input", node)
        return w2_fallback(e, relevance, shape, node.inputs[1], forward, backward, self.eps)

    def note(self, non_negative: bool) -> str:
        return describe(non_negative) + (" + w^2 where z+ vanishes" if self.fallback == "w2" else "")


class EpsilonParam:
    """The LRP-epsilon family's parameter: captum's stabiliser, ``eps * sign(z)``."""

    families = ("epsilon",)
    params = ("epsilon",)
    epsilon = 1e-9


def zplus(e, relevance, a, w, forward, backward, non_negative: bool, eps: float, fallback=None):
    """``forward(x, w, eps)`` is the layer with ``eps`` as its bias (so ``z + eps`` costs no
    extra pass: SPEC.md adds eps plainly), ``backward(s, w)`` its transpose; ``fallback``
    ``(z_eps, s) -> (s kept, relevance)`` is :func:`w2_fallback`'s."""
    w_plus = e.positive_part(w)
    if non_negative:
        z = forward(a, w_plus, eps)
        s = e.ratio(relevance, z, hint="s")
        if fallback is None:
            return e.scaled(a, backward(s, w_plus))
        s, rescued = fallback(z, s)
        return e.op("Add", [e.op("Mul", [a, backward(s, w_plus)], hint="r_zplus"), rescued], hint="r_in")
    zero = e.scalar(0.0)
    a_pos = e.op("Relu", [a], hint="a_pos")
    a_neg = e.op("Min", [a, zero], hint="a_neg")
    w_neg = e.op("Min", [w, e.const(np.zeros((), dtype=w.dtype or np.float32), "zero_w")], hint="w_neg")
    w_neg.shape = w.shape
    z = e.op("Add", [forward(a_pos, w_plus, eps), forward(a_neg, w_neg, 0.0)], hint="z_eps")
    s = e.op("Div", [relevance, z], hint="s")
    s, rescued = fallback(z, s) if fallback is not None else (s, None)
    r_pos = e.op("Mul", [a_pos, backward(s, w_plus)], hint="r_pos")
    r_neg = e.op("Mul", [a_neg, backward(s, w_neg)], hint="r_neg")
    r_in = e.op("Add", [r_pos, r_neg], hint="r_in")
    return r_in if rescued is None else e.op("Add", [r_in, rescued], hint="r_in_rescued")


def w2_fallback(e, relevance, a_shape, w, forward, backward, eps):
    """The fallback of :func:`zplus`: where ``z + eps < 2 eps`` the z+ share ``s`` is
    dropped and the relevance goes back by the w^2 rule instead."""
    def fallback(z_eps, s):
        dead = e.op("Less", [z_eps, e.scalar(2 * eps)], hint="dead")
        zero = e.scalar(0.0)
        w2 = e.op("Mul", [w, w], hint="w2")
        w2.shape = w.shape
        ones = e.op("ConstantOfShape", [np.array((1,) + tuple(a_shape), np.int64)],
                    {"value": e.const(np.ones(1, e.dtype), "one")}, hint="ones")
        z2 = forward(ones, w2, 0.0)  # constant: folded at load
        z2 = e.op("Where", [e.op("Greater", [z2, zero]), z2, e.scalar(1.0)], hint="z_w2")
        s_dead = e.op("Div", [e.op("Where", [dead, relevance, zero], hint="r_dead"), z2], hint="s_w2")
        return e.op("Where", [dead, zero, s], hint="s_live"), backward(s_dead, w2)
    return fallback


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

    def absorption(self, node, facts):
        has_bias = len(node.inputs) > 2 and not node.inputs[2].is_empty()
        return "the bias keeps its share (epsilon rule: z includes it)" if has_bias else None

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
