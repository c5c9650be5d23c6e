"""MatMul.

With a constant right operand (TensorFlow's dense layers, a transformer's projections):
the z+ rule, as for Gemm (SPEC.md section 1),

    z    = a @ W+
    s    = R_out / (z + eps)
    R_in = a * (s @ W+^T)

and LRP-epsilon's rule with the layer's own output for z in the epsilon family.

With two image-dependent operands, one of them attention weights (a Softmax's output,
through Dropout/Identity/Cast): ``attn @ v``, as CP-LRP treats it (Ali et al., ICML 2022;
LXT's ``cp_LRP``): the attention weights are held constant, so the product is a linear
layer of ``v`` whose weights the image computed, and takes the epsilon rule,

    R_v = v * (attn^T @ (R / (z + eps * sign(z)))),   z = attn @ v

which conserves exactly up to eps (no bias). No relevance reaches the Softmax, so q k^T
and the query/key projections are off the relevance path, as in LXT. A product of two
activations neither of which is attention (AttnLRP's uniform rule) has no rule yet.
"""

from .base import Rule
from .linear import EpsilonKind, GradientKind, LinearZPlus, epsilon_ratio, zplus

_THROUGH = ("Identity", "Dropout", "Cast")


def attention_operand(node, facts) -> int | None:
    """The index of the operand of a MatMul of two activations that is a Softmax's output
    (attention weights), or None."""
    if sorted(facts.activations(node)) != [0, 1]:
        return None
    for index, tensor in enumerate(node.inputs):
        producer = tensor.inputs[0] if tensor.inputs else None
        while producer is not None and producer.op in _THROUGH:
            producer = producer.inputs[0].inputs[0] if producer.inputs[0].inputs else None
        if producer is not None and producer.op == "Softmax":
            return index
    return None


def _swap_last(e, t):
    rank = len(t.shape)
    return e.op("Transpose", [t], {"perm": list(range(rank - 2)) + [rank - 1, rank - 2]}, hint="attn_t")


class _Attention:
    """The CP-LRP value path, shared by the LRP and LRP-epsilon families' MatMul rules."""

    def check(self, node, facts):
        if len(facts.activations(node)) == 2:
            if attention_operand(node, facts) is None:
                return ("a product of two image-dependent tensors where neither is a Softmax's "
                        "attention weights has no LRP rule")
            if any(t.shape is None or len(t.shape) < 2 for t in node.inputs):
                return "the operands' ranks are unknown"
            return None
        return super().check(node, facts)

    def relevance_inputs(self, node, facts):
        attn = attention_operand(node, facts)
        return [1 - attn] if attn is not None else [0]

    def describe(self, node, facts):
        if attention_operand(node, facts) is not None:
            return "value path, attention constant (CP-LRP)"
        return super().describe(node, facts)

    def emit(self, node, relevance, e, facts):
        attn = attention_operand(node, facts)
        if attn is None:
            return super().emit(node, relevance, e, facts)
        s = epsilon_ratio(e, relevance, node.outputs[0], self.stabiliser())
        weights = node.inputs[attn]
        if attn == 0:  # attn @ v: attn^T @ s
            c = e.op("MatMul", [_swap_last(e, weights), s], hint="c")
        else:  # v @ attn: s @ attn^T
            c = e.op("MatMul", [s, _swap_last(e, weights)], hint="c")
        return {1 - attn: e.scaled(node.inputs[1 - attn], c)}


class MatMulZPlus(LinearZPlus):
    op_types = ("MatMul",)
    role = "dense"

    def check_layer(self, node, facts):
        shape = node.inputs[1].shape
        if shape is None or len(shape) != 2:
            return "the weight must be a 2-D matrix"
        return None

    def describe(self, node, facts):
        return self.note(facts.non_negative(node.inputs[0]))

    def backward(self, e, node, facts):
        return lambda s, wt: e.op("MatMul", [s, e.op("Transpose", [wt], {"perm": [1, 0]})], hint="c")

    def emit(self, node, relevance, e, facts):
        a, w = node.inputs[0], node.inputs[1]

        def forward(x, wt, eps):
            return e.op("Add", [e.op("MatMul", [x, wt], hint="z"), e.scalar(eps)], hint="z_eps")

        backward = self.backward(e, node, facts)
        return {0: zplus(e, relevance, a, w, forward, backward, facts.non_negative(a), self.eps,
                         self.rescue(e, node, facts, relevance, forward, backward))}


class MatMulLRP(_Attention, MatMulZPlus):
    def stabiliser(self):
        return self.eps


class MatMulEpsilon(_Attention, EpsilonKind, MatMulZPlus):
    def stabiliser(self):
        return self.epsilon


class MatMulGradient(GradientKind, MatMulZPlus):
    def check(self, node, facts):
        if len(facts.activations(node)) == 2:
            return ("the gradient of a product of two activations (attention) needs the Softmax's "
                    "gradient, which has no rule yet: explain a transformer with lrp")
        return super().check(node, facts)


RULES = [MatMulLRP(), MatMulEpsilon(), MatMulGradient()]
