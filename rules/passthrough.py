"""Elementwise nodes: Relu, Clip (ReLU6), BatchNormalization, Identity, Dropout, Cast.

LRP (SPEC.md section 1): relevance passes unchanged, ``R_in = R_out``. Relu and ReLU6 keep
the sign pattern that the next linear rule already sees in its input; BatchNormalization
is not folded into the conv in the paper preset, so z+ uses the raw conv weights and BN only
forwards relevance.

LRP-epsilon (captum-style): BN is a per-channel linear layer ``z = k*a + b'`` with
``k = scale/sqrt(var+eps)``, so ``R_in = a * k * R / (z + eps*sign(z))``; activations pass.

Gradient: Relu multiplies by ``x > 0`` (Guided Backprop, ``guided=True``, also by
``G > 0``), ReLU6 by ``lo < x < hi``, BN by ``k``.
Identity, Dropout (inference) and Cast pass everything unchanged in every kind.
"""

import numpy as np

from .base import Rule, SignKeeping
from .linear import EpsilonKind, GradientKind


def clip_bounds(node, facts) -> tuple:
    """(min, max) of a Clip, from its inputs (opset 11+) or attributes; -inf / inf where
    absent, None where computed at run time."""
    def bound(i, attr, default):
        if len(node.inputs) > i and not node.inputs[i].is_empty():
            value = facts.const_value(node.inputs[i])
            return None if value is None else float(np.asarray(value))
        return float(node.attrs.get(attr, default))

    return bound(1, "min", -np.inf), bound(2, "max", np.inf)


class PassThrough(SignKeeping, Rule):
    op_types = ("Identity", "Dropout", "Cast")
    families = ("lrp", "epsilon", "gradient")

    def describe(self, node, facts):
        return "pass"

    def emit(self, node, relevance, e, facts):
        return {0: relevance}


class _Rectifier:
    """Relu's output is never negative; a Clip's where its lower bound is not."""

    role = "activation"

    @classmethod
    def output_non_negative(cls, node, facts) -> bool:
        if node.op == "Relu":
            return True
        lo = clip_bounds(node, facts)[0]
        return lo is not None and lo >= 0


class ActivationPass(_Rectifier, PassThrough):
    op_types = ("Relu", "Clip")
    families = ("lrp", "epsilon")


class BatchNormPass(PassThrough):
    op_types = ("BatchNormalization",)
    families = ("lrp",)
    role = "norm"

    @classmethod
    def output_non_negative(cls, node, facts) -> bool:
        return False  # its shift can make any value negative


def _bn_scale(node, e):
    """k = scale / sqrt(var + epsilon), shaped (C, 1, ..., 1): folded by ORT at load."""
    scale, var = node.inputs[1], node.inputs[4]
    eps = e.const(np.asarray(node.attrs.get("epsilon", 1e-5), dtype=e.dtype), "bn_eps")
    k = e.op("Div", [scale, e.op("Sqrt", [e.op("Add", [var, eps])])], hint="bn_k")
    rank = len(node.inputs[0].shape or [0, 0, 0, 0])
    return e.op("Reshape", [k, np.array([-1] + [1] * (rank - 2), np.int64)], hint="bn_k_c")


class BatchNormLinear(Rule):
    """BN as the per-channel linear map ``z = k*a + b'``: its transposed product is ``s * k``,
    so LRP-epsilon and the gradient are linear.py's, as for Conv and Gemm."""

    op_types = ("BatchNormalization",)
    role = "norm"

    def backward(self, e, node, facts):
        return lambda s, _: e.op("Mul", [s, _bn_scale(node, e)], hint="c")


class BatchNormEpsilon(EpsilonKind, BatchNormLinear):
    def describe(self, node, facts):
        return "epsilon (per-channel linear)"


class BatchNormGradient(GradientKind, BatchNormLinear):
    pass


class ActivationGradient(_Rectifier, Rule):
    op_types = ("Relu", "Clip")
    families = ("gradient",)
    params = ("guided",)
    guided = False  # Guided Backprop: negative gradients stop at every Relu

    def check(self, node, facts):
        if node.op == "Clip" and None in clip_bounds(node, facts):
            return "a Clip whose bounds are computed at run time has no gradient rule here"
        return None

    def describe(self, node, facts):
        return "guided gradient" if node.op == "Relu" and self.guided else "gradient"

    def emit(self, node, grad, e, facts):
        x, zero = node.inputs[0], e.scalar(0.0)
        if node.op == "Relu":
            mask = e.op("Greater", [x, zero], hint="active")
        else:
            lo, hi = clip_bounds(node, facts)
            mask = e.op("And", [e.op("Greater", [x, e.scalar(lo)]), e.op("Less", [x, e.scalar(hi)])],
                        hint="active")
        g = e.op("Where", [mask, grad, zero], hint="g_in")
        if node.op == "Relu" and self.guided:
            g = e.op("Relu", [g], hint="g_guided")
        return {0: g}


RULES = [PassThrough(), ActivationPass(), BatchNormPass(), BatchNormEpsilon(), BatchNormGradient(),
         ActivationGradient()]
