"""Einsum of attention weights with values (MaxViT writes its attention as
``einsum("bghij,bghjd->bghid", attn, v)``): CP-LRP, as for MatMul (matmul.py). With the
attention weights held constant the product is linear in v, so the epsilon rule is

    s = R / (z + eps * sign(z)),   R_v = v * einsum("<attn>,<out>-><v>", attn, s)

(the transposed product: every index of v appears in attn or in the output). The scores'
einsum (q k^T) receives no relevance, as the Softmax receives none. Equations with an
ellipsis, a repeated index within an operand or an index of v summed over v alone have no
rule here.
"""

from .base import Rule
from .linear import EpsilonParam, epsilon_ratio
from .matmul import attention_operand


def _parse(node):
    """(operand subscripts, output subscripts), or None where the equation is out of reach."""
    equation = str(node.attrs.get("equation", "")).replace(" ", "")
    if "->" not in equation or "." in equation:
        return None
    lhs, out = equation.split("->")
    operands = lhs.split(",")
    if len(operands) != 2 or any(len(set(o)) != len(o) for o in operands + [out]):
        return None
    return operands, out


class _EinsumAttention:
    op_types = ("Einsum",)

    def check(self, node, facts):
        parsed = _parse(node)
        if parsed is None:
            return "only two-operand Einsums with an explicit output and no ellipsis have a rule"
        attn = attention_operand(node, facts)
        if attn is None:
            return "an Einsum with no Softmax's attention weights as an operand has no LRP rule"
        a, b, out = parsed[0][attn], parsed[0][1 - attn], parsed[1]
        if not set(b) <= set(a) | set(out):
            return f"index {sorted(set(b) - set(a) - set(out))} of the values is summed over them alone"
        return None

    def relevance_inputs(self, node, facts):
        return [1 - attention_operand(node, facts)]

    def describe(self, node, facts):
        return "value path, attention constant (CP-LRP)"

    def emit(self, node, relevance, e, facts):
        attn = attention_operand(node, facts)
        operands, out = _parse(node)
        s = epsilon_ratio(e, relevance, node.outputs[0], self.stabiliser())
        equation = f"{operands[attn]},{out}->{operands[1 - attn]}"
        c = e.op("Einsum", [node.inputs[attn], s], {"equation": equation}, hint="c")
        return {1 - attn: e.scaled(node.inputs[1 - attn], c)}


class EinsumLRP(_EinsumAttention, Rule):
    params = ("eps",)
    eps = 1e-5

    def stabiliser(self):
        return self.eps


class EinsumEpsilon(_EinsumAttention, EpsilonParam, Rule):
    def stabiliser(self):
        return self.epsilon


class EinsumGradient(Rule):
    op_types = ("Einsum",)
    families = ("gradient",)

    def check(self, node, facts):
        return ("the gradient of attention needs the Softmax's gradient, which has no rule yet: "
                "explain a transformer with lrp")


RULES = [EinsumLRP(), EinsumEpsilon(), EinsumGradient()]
