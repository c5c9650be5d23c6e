"""Elementwise nodes: Relu, Clip (ReLU6), BatchNormalization, Identity, Dropout, Cast.

LRP (SPEC.md section 1): relevance passes unchanged, ``R_in = R_out``. Relu and ReLU6 keep
the sign pattern that the next linear rule already sees in its input; BatchNormalization
is not folded into the conv in the paper preset, so z+ uses the raw conv weights and BN only
forwards relevance.

LRP-epsilon (captum-style): BN is a per-channel linear layer ``z = k*a + b'`` with
``k = scale/sqrt(var+eps)``, so ``R_in = a * k * R / (z + eps*sign(z))``; activations pass.

Gradient: Relu multiplies by ``x > 0`` (Guided Backprop also by ``G > 0``), ReLU6 by
``lo < x < hi``, BN by ``k``.
Identity, Dropout (inference) and Cast pass everything unchanged in every kind.
"""

import numpy as np

from .base import Rule
from .linear import EpsilonKind, GradientKind


class PassThrough(Rule):
    op_types = ("Identity", "Dropout", "Cast")
    kinds = ("lrp", "epsilon", "gradient")

    def describe(self, node, facts, config):
        return "pass"

    def emit(self, node, relevance, e, facts, config):
        return {0: relevance}


class ActivationPass(PassThrough):
    op_types = ("Relu", "Clip")
    kinds = ("lrp", "epsilon")


class BatchNormPass(PassThrough):
    op_types = ("BatchNormalization",)
    kinds = ("lrp",)


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

    def backward(self, e, node, facts):
        return lambda s, _: e.op("Mul", [s, _bn_scale(node, e)], hint="c")


class BatchNormEpsilon(EpsilonKind, BatchNormLinear):
    def describe(self, node, facts, config):
        return "epsilon (per-channel linear)"


class BatchNormGradient(GradientKind, BatchNormLinear):
    pass


class ActivationGradient(Rule):
    op_types = ("Relu", "Clip")
    kinds = ("gradient",)

    def check(self, node, facts, config):
        if node.op == "Clip" and None in facts.clip_bounds(node):
            return "a Clip whose bounds are computed at run time has no gradient rule here"
        return None

    def describe(self, node, facts, config):
        return "guided gradient" if node.op == "Relu" and config.method == "guided-bp" else "gradient"

    def emit(self, node, grad, e, facts, config):
        x, zero = node.inputs[0], e.scalar(0.0)
        if node.op == "Relu":
            mask = e.op("Greater", [x, zero], hint="active")
        else:
            lo, hi = facts.clip_bounds(node)
            mask = e.op("And", [e.op("Greater", [x, e.scalar(lo)]), e.op("Less", [x, e.scalar(hi)])],
                        hint="active")
        g = e.op("Where", [mask, grad, zero], hint="g_in")
        if node.op == "Relu" and config.method == "guided-bp":
            g = e.op("Relu", [g], hint="g_guided")
        return {0: g}


RULES = [PassThrough(), ActivationPass(), BatchNormPass(), BatchNormEpsilon(), BatchNormGradient(),
         ActivationGradient()]
