"""Add (and two-input Sum, canonicalised to Add): skip merges and bias adds.

A skip merge ``h = h_s + h_m`` has two operands that depend on the image; match.py tells
the skip ``h_s`` (identity, or projection through a 1x1 conv [+BN]) from the residual
branch ``h_m`` by structure, not by operand position. The split (SPEC.md section 1 and
Table 2):

    ratio:      R_s = R * |h_s| / (|h_s| + |h_m|),  R_m = R - R_s
                (where both are 0, split evenly: never 0/0 = NaN)
    symmetric:  R_s = R_m = R / 2
    identity_skip=False: an identity skip gets nothing, R_m = R (variants i, iii)

Where the relevance arriving is a multiple of h or of Relu(h) (every ResNet block: the
next rules are z-rules, R = a * c), it is 0 wherever both operands are, so the even split
there is 0 to each and the ratio is computed as ``P = R / (|h_s| + |h_m|)`` once with
``R_s = |h_s| * P``, ``R_m = |h_m| * P`` left as products for the fan-in.

An Add with one constant operand (a bias, a folded BN shift) is no merge: relevance passes
to the other operand unchanged. The parameters (``split``, ``identity_skip``) are the
rule instance's; composites.py sets them per variant.

LRP-epsilon: every operand gets ``R * h_i / (h + eps*sign(h))`` (a constant operand keeps
its share: the bias absorbs). Gradient: every image-dependent operand gets ``G``.
"""

import numpy as np

from .base import Rule, SignKeeping, zero_where
from .linear import EpsilonParam, epsilon_ratio


def _abs(e, facts, t):
    """|t|, skipped where the graph shows t is never negative (after Relu, ReLU6, ...): Abs
    is a costly no-op there on ORT's CPU provider."""
    return t if facts.non_negative(t) else e.op("Abs", [t], hint="abs")


def _tiny(dtype):
    """A stand-in for 0 that no activation reaches, where one is representable (the ratio
    split uses it instead of Equal + Where); float16 has none, as its subnormals are
    activation-sized and flushed on some devices."""
    return np.float32(1e-30) if np.dtype(dtype) == np.float32 else None


def _vanishes_with(relevance, h) -> bool:
    """Whether ``relevance`` is known to be a multiple of ``h`` or of ``Relu(h)``, hence 0
    wherever ``h`` is (what every z-rule and LRP-epsilon rule above a merge sends down)."""
    a = zero_where(relevance)
    return a is h or (a is not None and any(p.op == "Relu" and p.inputs[0] is h for p in a.inputs))


class AddRule(SignKeeping, Rule):
    op_types = ("Add",)
    role = "merge"
    params = ("split", "identity_skip")
    split = "ratio"  # ratio | symmetric
    identity_skip = True

    @classmethod
    def reads_constant(cls, node, index) -> bool:
        return True  # a bias adds its value

    def check(self, node, facts):
        acts = facts.activations(node)
        if len(node.inputs) != 2:
            return "an Add with more than two inputs"
        if len(acts) == 2 and facts.skip_merge(node) is None:
            return "two image-dependent operands with no common ancestor"
        return None

    def relevance_inputs(self, node, facts):
        return facts.activations(node)

    def describe(self, node, facts):
        merge = facts.skip_merge(node) if len(facts.activations(node)) == 2 else None
        if merge is None:
            return "pass (constant operand)"
        split = self.split
        if merge.kind == "identity" and not self.identity_skip:
            split = "none to the skip"
        return f"skip merge ({merge.kind}, skip=input {merge.skip_index}): {split}"

    def emit(self, node, relevance, e, facts):
        acts = facts.activations(node)
        if len(acts) == 1:
            return {acts[0]: relevance}
        merge = facts.skip_merge(node)
        k_s, k_m = merge.skip_index, 1 - merge.skip_index
        if merge.kind == "identity" and not self.identity_skip:
            return {k_m: relevance}
        if self.split == "symmetric":
            r_s = e.op("Mul", [relevance, e.scalar(0.5)], hint="r_skip")
        else:
            tiny = _tiny(e.dtype)
            abs_s, abs_m = _abs(e, facts, node.inputs[k_s]), _abs(e, facts, node.inputs[k_m])
            if tiny is not None and _vanishes_with(relevance, node.outputs[0]):
                return _split_vanishing(e, relevance, abs_s, abs_m, tiny, k_s, k_m)
            r_s = e.op("Mul", [relevance, _skip_fraction(e, abs_s, abs_m, tiny)], hint="r_skip")
        r_m = e.op("Sub", [relevance, r_s], hint="r_branch")
        return {k_s: r_s, k_m: r_m}


def _split_vanishing(e, relevance, abs_s, abs_m, tiny, k_s, k_m):
    """The ratio split of relevance that is 0 wherever h is: where both operands are 0 an
    even split is 0 to each, so the plain ratio needs no stand-in numerators: R/den once,
    and each part left as a product for the fan-in (the skip's shares its Mul with the
    block's first conv: x * (R/den + c1)).

    h_m itself, not Relu(h) - h_s (equal wherever R can be nonzero): that kept h_m to one
    reader so ORT fused the forward Add + Relu into the branch's last conv, but the fused
    conv writes beside the skip input (still read here), and since the CPU layout pass the
    Sub it cost outweighs an Add and a Relu (0.98x)."""
    # 2t only keeps 0/0 (R = 0 there) out of the Div
    den = e.op("Add", [e.op("Add", [abs_s, abs_m]), e.scalar(2 * tiny)], hint="den")
    per_unit = e.ratio(relevance, den, hint="r_per_unit")
    return {k_s: e.scaled(abs_s, per_unit), k_m: e.scaled(abs_m, per_unit)}


def _skip_fraction(e, abs_s, abs_m, tiny):
    """|h_s| / (|h_s| + |h_m|), exactly 1/2 where both are 0."""
    if tiny is not None:
        # (|h_s| + t) / (|h_s| + |h_m| + 2t) with t far below any activation: exactly 1/2
        # where both are 0, the plain ratio elsewhere; cheaper on ORT's CPU than Equal + Where.
        t = e.scalar(tiny)
        abs_s = e.op("Add", [abs_s, t], hint="abs_skip")
        den = e.op("Add", [e.op("Add", [abs_s, abs_m]), t], hint="den")
        return e.op("Div", [abs_s, den], hint="frac_skip")
    den = e.op("Add", [abs_s, abs_m], hint="den")
    is_zero = e.op("Equal", [den, e.scalar(0.0)], hint="den_is_0")
    safe = e.op("Where", [is_zero, e.scalar(1.0), den], hint="den_safe")
    return e.op("Where", [is_zero, e.scalar(0.5), e.op("Div", [abs_s, safe])], hint="frac_skip")


class AddEpsilon(EpsilonParam, AddRule):

    def absorption(self, node, facts):
        if len(facts.activations(node)) == 1:
            return "the constant operand (a bias, a position embedding) keeps its share"
        return None

    def describe(self, node, facts):
        return "epsilon (z-rule split)"

    def emit(self, node, relevance, e, facts):
        s = epsilon_ratio(e, relevance, node.outputs[0], self.epsilon)
        return {i: e.scaled(node.inputs[i], s) for i in facts.activations(node)}


class AddGradient(AddRule):
    families = ("gradient",)

    def describe(self, node, facts):
        return "gradient"

    def emit(self, node, grad, e, facts):
        return {i: grad for i in facts.activations(node)}


RULES = [AddRule(), AddEpsilon(), AddGradient()]
