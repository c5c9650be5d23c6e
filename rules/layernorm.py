"""LayerNormalization, as AttnLRP treats it (Achtibat et al., ICML 2024): the standard
deviation is held constant, so the layer is linear in its input,

    y = gamma * (x - mean(x)) / sigma + beta,   J^T s = (gamma s - mean(gamma s)) / sigma

(means over the normalised axes), and takes the epsilon rule of a linear layer:

    R_in = x * J^T(R / (y + eps * sign(y)))

Conserving up to the shift: ``sum(R_in) = sum(R * (y - beta) / (y + eps sign y))``, so
beta absorbs its share as a bias does (check reports it). The LRP family uses its ``eps``
(the composite's), LRP-epsilon its ``epsilon``.

Gradient: the exact one, with the deviation's own derivative,
``(g' - mean(g') - xhat * mean(g' xhat)) / sigma`` with ``g' = gamma G``.
"""

from .base import Rule
from .linear import EpsilonParam, epsilon_ratio


def _axes(node):
    rank = len(node.inputs[0].shape)
    return list(range(int(node.attrs.get("axis", -1)) % rank, rank))


def _statistics(e, node):
    """(x - mean, sigma) over the normalised axes, recomputed from the input."""
    x, axes = node.inputs[0], _axes(node)
    centred = e.op("Sub", [x, e.reduce("ReduceMean", x, axes, keepdims=True, hint="mean")], hint="centred")
    var = e.reduce("ReduceMean", e.op("Mul", [centred, centred]), axes, keepdims=True, hint="var")
    eps = e.scalar(float(node.attrs.get("epsilon", 1e-5)))
    return centred, e.op("Sqrt", [e.op("Add", [var, eps])], hint="sigma")


def _centre(e, t, axes):
    return e.op("Sub", [t, e.reduce("ReduceMean", t, axes, keepdims=True)], hint="centred_s")


class _LayerNorm:
    op_types = ("LayerNormalization",)
    role = "norm"

    def check(self, node, facts):
        if len(facts.activations(node)) != 1 or facts.is_const(node.inputs[0]):
            return "a LayerNormalization whose scale or shift depends on the image has no rule"
        if node.inputs[0].shape is None:
            return "the input's rank is unknown"
        return None

    def absorption(self, node, facts):
        has_shift = len(node.inputs) > 2 and not node.inputs[2].is_empty()
        return "the shift (beta) keeps its share, as a bias" if has_shift else None

    def transposed(self, e, node, s):
        """J^T s with sigma held constant."""
        scaled = e.op("Mul", [s, node.inputs[1]], hint="gs")
        _, sigma = _statistics(e, node)
        return e.op("Div", [_centre(e, scaled, _axes(node)), sigma], hint="c")

    def emit(self, node, relevance, e, facts):
        s = epsilon_ratio(e, relevance, node.outputs[0], self.stabiliser())
        return {0: e.scaled(node.inputs[0], self.transposed(e, node, s))}


class LayerNormLRP(_LayerNorm, Rule):
    params = ("eps",)
    eps = 1e-5

    def stabiliser(self):
        return self.eps

    def describe(self, node, facts):
        return "epsilon (sigma constant, AttnLRP)"


class LayerNormEpsilon(_LayerNorm, EpsilonParam, Rule):
    def stabiliser(self):
        return self.epsilon

    def describe(self, node, facts):
        return "epsilon (sigma constant)"


class LayerNormGradient(_LayerNorm, Rule):
    families = ("gradient",)

    def absorption(self, node, facts):
        return None

    def describe(self, node, facts):
        return "gradient"

    def emit(self, node, grad, e, facts):
        axes = _axes(node)
        centred, sigma = _statistics(e, node)
        xhat = e.op("Div", [centred, sigma], hint="xhat")
        g = e.op("Mul", [grad, node.inputs[1]], hint="gs")
        along = e.reduce("ReduceMean", e.op("Mul", [g, xhat]), axes, keepdims=True, hint="g_xhat")
        inner = e.op("Sub", [_centre(e, g, axes), e.op("Mul", [xhat, along])])
        return {0: e.op("Div", [inner, sigma], hint="g_in")}


RULES = [LayerNormLRP(), LayerNormEpsilon(), LayerNormGradient()]
