"""Smooth and leaky activations: Sigmoid, HardSigmoid, HardSwish, Tanh, LeakyRelu, PRelu,
Elu, Softplus, Gelu (and Erf, inside GELU's decomposed form).

LRP and LRP-epsilon: the identity rule, ``R_in = R_out``, as LXT does for GELU and SiLU
(Achtibat et al. 2024) and zennit's ``Pass`` does for activations: an elementwise
activation moves no relevance between neurons, and the linear rule below it sees its
output as its input. (SiLU exported as ``x * Sigmoid(x)`` is a gating Mul: mul.py.)

Gradient: the derivative, from the forward tensors (``y`` the output, ``x`` the input):

    Sigmoid     y (1 - y)                 Tanh        1 - y^2
    HardSigmoid alpha [0 < alpha x + beta < 1]
    HardSwish   hs(x) + x/6 [-3 < x < 3],  hs = HardSigmoid(1/6, 1/2)
    LeakyRelu   1 if x > 0 else alpha     PRelu       1 if x > 0 else slope
    Elu         1 if x > 0 else y + alpha Softplus    sigmoid(x)
    Gelu        Phi(x) + x phi(x)  (approximate="tanh": the derivative of its tanh form)
    Erf         2/sqrt(pi) exp(-x^2)
"""

import math

from .base import Rule

SMOOTH = ("Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "PRelu", "Elu", "Softplus",
          "Gelu")
POSITIVE = ("Sigmoid", "HardSigmoid", "Softplus")  # outputs that are never negative


class _Activation:
    role = "activation"

    @classmethod
    def output_non_negative(cls, node, facts) -> bool:
        return node.op in POSITIVE

    def check(self, node, facts):
        if node.op == "PRelu" and not facts.is_const(node.inputs[1]):
            return "a PRelu whose slope depends on the image has no rule"
        return None


class ActivationIdentity(_Activation, Rule):
    op_types = SMOOTH
    families = ("lrp", "epsilon")

    def describe(self, node, facts):
        return "identity"

    def emit(self, node, relevance, e, facts):
        return {0: relevance}


def _attr(node, name, default):
    return float(node.attrs.get(name, default))


def _where_positive(e, x, yes, no):
    return e.op("Where", [e.op("Greater", [x, e.scalar(0.0)], hint="x_pos"), yes, no], hint="slope")


def _gelu(e, x, approximate):
    if approximate == "tanh":
        k, c = math.sqrt(2 / math.pi), 0.044715
        x2 = e.op("Mul", [x, x], hint="x2")
        inner = e.op("Mul", [e.op("Add", [e.op("Mul", [x2, e.scalar(c)]), e.scalar(1.0)]), x])
        t = e.op("Tanh", [e.op("Mul", [inner, e.scalar(k)])], hint="t")
        du = e.op("Mul", [e.op("Add", [e.op("Mul", [x2, e.scalar(3 * c)]), e.scalar(1.0)]), e.scalar(k)])
        dt = e.op("Sub", [e.scalar(1.0), e.op("Mul", [t, t])])
        half_x = e.op("Mul", [x, e.scalar(0.5)])
        return e.op("Add", [e.op("Mul", [e.op("Add", [t, e.scalar(1.0)]), e.scalar(0.5)]),
                            e.op("Mul", [half_x, e.op("Mul", [dt, du])])], hint="gelu_d")
    cdf = e.op("Mul", [e.op("Add", [e.op("Erf", [e.op("Mul", [x, e.scalar(1 / math.sqrt(2))])]),
                                    e.scalar(1.0)]), e.scalar(0.5)], hint="cdf")
    pdf = e.op("Mul", [e.op("Exp", [e.op("Mul", [e.op("Mul", [x, x]), e.scalar(-0.5)])]),
                       e.scalar(1 / math.sqrt(2 * math.pi))], hint="pdf")
    return e.op("Add", [cdf, e.op("Mul", [x, pdf])], hint="gelu_d")


def derivative(node, e):
    """dy/dx of an activation node, elementwise, from its forward tensors."""
    x, y, op, one = node.inputs[0], node.outputs[0], node.op, e.scalar(1.0)
    if op == "Sigmoid":
        return e.op("Mul", [y, e.op("Sub", [one, y])])
    if op == "Tanh":
        return e.op("Sub", [one, e.op("Mul", [y, y])])
    if op in ("HardSigmoid", "HardSwish"):
        alpha, beta = (_attr(node, "alpha", 0.2), _attr(node, "beta", 0.5)) if op == "HardSigmoid" \
            else (1 / 6, 0.5)
        z = e.op("Add", [e.op("Mul", [x, e.scalar(alpha)]), e.scalar(beta)], hint="hs_z")
        inside = e.op("And", [e.op("Greater", [z, e.scalar(0.0)]), e.op("Less", [z, one])], hint="inside")
        slope = e.op("Where", [inside, e.scalar(alpha), e.scalar(0.0)], hint="hs_slope")
        if op == "HardSigmoid":
            return slope
        hs = e.op("HardSigmoid", [x], {"alpha": alpha, "beta": beta}, hint="hs")
        return e.op("Add", [hs, e.op("Mul", [x, slope])])
    if op == "LeakyRelu":
        return _where_positive(e, x, one, e.scalar(_attr(node, "alpha", 0.01)))
    if op == "PRelu":
        return _where_positive(e, x, one, node.inputs[1])
    if op == "Elu":
        return _where_positive(e, x, one, e.op("Add", [y, e.scalar(_attr(node, "alpha", 1.0))]))
    if op == "Softplus":
        return e.op("Sigmoid", [x])
    if op == "Erf":
        return e.op("Mul", [e.op("Exp", [e.op("Neg", [e.op("Mul", [x, x])])]), e.scalar(2 / math.sqrt(math.pi))])
    approximate = node.attrs.get("approximate", "none")
    return _gelu(e, x, approximate.decode() if isinstance(approximate, bytes) else approximate)


class ActivationGradient(_Activation, Rule):
    op_types = SMOOTH + ("Erf",)
    families = ("gradient",)

    def describe(self, node, facts):
        return "gradient"

    def emit(self, node, grad, e, facts):
        return {0: e.op("Mul", [grad, derivative(node, e)], hint="g_in")}


RULES = [ActivationIdentity(), ActivationGradient()]
