"""Sub and Div with one constant operand: the pieces of a BatchNormalization that an
exporter decomposed (``(x - mean) / std + shift``) or of input normalisation. They pass
relevance unchanged, exactly as BatchNormalization does in the paper preset (SPEC.md
section 1). Two image-dependent operands have no rule here (Mul, with its gates, is
mul.py). The same holds for LRP-epsilon; the gradient is ``G`` (Sub: ``-G`` for
``c - x``) or ``G / c``.
"""

from .base import Rule


def broadcast_reason(node, facts):
    """Why a node with one image-dependent operand and a constant one has no pass-through
    rule: the constant broadcasts the activation to another shape (or None)."""
    a, out = node.inputs[facts.activations(node)[0]], node.outputs[0]
    if a.shape is None or out.shape is None or list(a.shape)[1:] != list(out.shape)[1:]:
        return "the constant operand broadcasts the activation to another shape"
    return None


class ConstantAffine(Rule):
    op_types = ("Sub", "Div")
    role = "norm"  # an exporter's decomposed BatchNormalization
    families = ("lrp", "epsilon")

    def check(self, node, facts):
        if len(facts.activations(node)) != 1:
            return f"a {node.op} of two image-dependent tensors has no LRP rule"
        if node.op == "Div" and facts.activations(node) != [0]:
            return "a constant divided by an activation has no LRP rule"
        return broadcast_reason(node, facts)

    def relevance_inputs(self, node, facts):
        return facts.activations(node)

    def describe(self, node, facts):
        return "pass"

    def emit(self, node, relevance, e, facts):
        (index,) = facts.activations(node)
        return {index: relevance}


class ConstantAffineGradient(ConstantAffine):
    families = ("gradient",)

    def describe(self, node, facts):
        return "gradient"

    def emit(self, node, grad, e, facts):
        (index,) = facts.activations(node)
        other = node.inputs[1 - index]
        if node.op == "Div":
            grad = e.op("Div", [grad, other], hint="g_in")
        elif index == 1:
            grad = e.op("Neg", [grad], hint="g_in")
        return {index: grad}


RULES = [ConstantAffine(), ConstantAffineGradient()]
