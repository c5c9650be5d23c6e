"""Mul: by a constant (layer scale, a decomposed BatchNormalization's scale), or a gate.

By a constant: relevance passes unchanged (``z = c x`` gives ``R_x = x c / z * R = R``).

A gate ``x * g``, both image-dependent, where ``g`` is a gate: a Squeeze-and-Excitation
scale (the operand that broadcasts: N x C x 1 x 1 against N x C x H x W), or the output
of a squashing function (Sigmoid, HardSigmoid, Erf, Tanh, through constant shifts and
scales: SiLU's ``x * Sigmoid(x)``, GELU's ``x * (1 + Erf(x / sqrt 2)) / 2``). The
signal-take-all rule (Arras et al. 2017, LSTM gates; LXT's gated units): the gate is
treated as a constant, so all relevance goes to the signal, ``R_x = R``, ``R_g = 0``.
Conserving. A product of two activations with no gate has no rule.

Gradient: ``G c`` by a constant; the product rule ``(G g, G x)`` for two activations.
"""

from .affine import broadcast_reason
from .base import Rule, SignKeeping

SQUASH = ("Sigmoid", "HardSigmoid", "Erf", "Tanh")
_SHIFTS = ("Add", "Sub", "Mul", "Div", "Identity", "Cast")


def _squashed(tensor, facts) -> str | None:
    """The squashing op ``tensor`` is an affine function of, if any."""
    while tensor.inputs:
        node = tensor.inputs[0]
        if node.op in SQUASH:
            return node.op
        acts = facts.activations(node)
        if node.op not in _SHIFTS or len(acts) != 1:
            return None
        tensor = node.inputs[acts[0]]
    return None


def _broadcasts(tensor, out) -> bool:
    if tensor.shape is None or out.shape is None or len(tensor.shape) != len(out.shape):
        return False
    return list(tensor.shape)[1:] != list(out.shape)[1:]


def gate(node, facts) -> tuple[int, str] | None:
    """(index of the gate operand, why it is one) of a Mul of two activations, or None."""
    out = node.outputs[0]
    squash = [(i, _squashed(node.inputs[i], facts)) for i in (0, 1)]
    squash = [(i, f"{op} output") for i, op in squash if op]
    wide = [(i, "broadcast scale") for i in (0, 1) if _broadcasts(node.inputs[i], out)]
    for found in (wide, squash):
        if len(found) == 1 and not _broadcasts(node.inputs[1 - found[0][0]], out):
            return found[0]
    return None


class MulPass(SignKeeping, Rule):
    op_types = ("Mul",)
    role = "norm"  # a decomposed BatchNormalization's scale; see base.py
    families = ("lrp", "epsilon")

    @classmethod
    def reads_constant(cls, node, index) -> bool:
        return True  # the factor enters the output's sign

    def check(self, node, facts):
        if len(facts.activations(node)) == 1:
            return broadcast_reason(node, facts)
        if gate(node, facts) is None:
            return ("a product of two image-dependent tensors where neither is a gate (a "
                    "Sigmoid/HardSigmoid/Erf/Tanh output or a broadcast scale) has no LRP rule")
        return None

    def relevance_inputs(self, node, facts):
        acts = facts.activations(node)
        return acts if len(acts) == 1 else [1 - gate(node, facts)[0]]

    def describe(self, node, facts):
        if len(facts.activations(node)) == 1:
            return "pass"
        index, why = gate(node, facts)
        return f"signal takes all (gate: input {index}, {why})"

    def emit(self, node, relevance, e, facts):
        return {self.relevance_inputs(node, facts)[0]: relevance}


class MulGradient(Rule):
    op_types = ("Mul",)
    families = ("gradient",)

    def relevance_inputs(self, node, facts):
        return facts.activations(node)

    def describe(self, node, facts):
        return "gradient"

    def emit(self, node, grad, e, facts):
        a, b = node.inputs
        return {i: _unbroadcast(e, e.op("Mul", [grad, (b, a)[i]], hint="g_in"), node.inputs[i], node.outputs[0])
                for i in facts.activations(node)}


def _unbroadcast(e, grad, operand, out):
    """The gradient of a broadcast operand (an SE scale) is summed over the axes it spans."""
    if not _broadcasts(operand, out):
        return grad
    axes = [k for k, (d, o) in enumerate(zip(operand.shape, out.shape)) if k and d == 1 and o != 1]
    return e.reduce("ReduceSum", grad, axes, keepdims=True, hint="g_gate")


RULES = [MulPass(), MulGradient()]
