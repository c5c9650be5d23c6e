"""What a rule is, and the facts about an op that the rest of lrpgraph asks the rules.

A rule knows how relevance crosses one kind of ONNX node (onnxscript's rewriter: pattern,
check, rewrite): ``op_types`` is its pattern, ``check`` says why it cannot apply (a reason
string, or None), ``relevance_inputs`` names the inputs that receive relevance and ``emit``
adds the nodes that compute it. A rule instance carries its parameters (zennit's rules: the
split of a skip merge, LRP-epsilon's stabiliser, Guided Backprop's ReLU); a composite
(composites.py) says which instance serves which op type.

Rules also own what is true of their op whatever the composite, so that match.py, the
driver and check.py never keep op-type tables of their own:

- ``weighted``: the op carries weights (a conv, a dense layer). Skip merges are told from
  residual branches, and the first layer from the rest, by counting these.
- ``role``: what the layer is for the methods around it: ``"pool"`` (a spatial pooling:
  Grad-CAM reads the feature map at the pooling nearest the output), ``"conv"``,
  ``"norm"`` (a BatchNormalization, or its decomposed affine pieces: without one beside a
  conv, BN was folded at export).
- ``output_non_negative(node, facts)``: the output can never be negative (Relu, or a
  max/mean/reshape of such). z+ is the paper's rule exactly there, and |h| costs nothing.
- ``absorbs`` (or ``absorption(node, facts)`` where it depends on the node): why the rule,
  by design, does not conserve relevance (``None`` when it does, up to its stabiliser);
  ``lrpgraph check`` reports such losses as expected.

Rules see the forward graph only through ``facts`` (match.GraphFacts) and build nodes only
through ``e`` (emit.Emitter); they know nothing of the driver.
"""

from __future__ import annotations

import copy


class Relevance:
    """A relevance tensor and what is known of it: ``zero_where``, a forward tensor
    wherever whose entries are 0 this relevance is 0 too (a z-rule's ``a * c``). The ratio
    split needs no 0/0 guard for such relevance. Emitter.op takes it where a tensor goes."""

    __slots__ = ("tensor", "zero_where", "factors")

    def __init__(self, tensor, zero_where=None, factors=None):
        # factors: (a, c) where the tensor is the product a * c (Emitter.ratio reads it)
        self.tensor, self.zero_where, self.factors = tensor, zero_where, factors


class Scaled:
    """Relevance ``a * c`` with the product left for the fan-in. Most rules end in ``R_in =
    a * c`` (the activation times a backward signal); where several of them meet at one
    tensor (a block input read by the first conv, the skip and a projection), one
    multiplication serves them all: ``a * (c1 + c2 + ...)``, a full pass over the block-sized
    tensor saved per extra consumer."""

    __slots__ = ("a", "c")

    def __init__(self, a, c):
        self.a, self.c = a, c


def zero_where(relevance):
    """The forward tensor ``relevance`` vanishes with (see :class:`Relevance`), or None."""
    return relevance.zero_where if isinstance(relevance, Relevance) else None


class Rule:
    """One rule, with its parameters as attributes named in ``params`` (class-level
    defaults; :meth:`with_params` makes a configured copy)."""

    op_types: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    # the rule sets (composites.py) this rule serves by default; a composite may replace it
    families: tuple[str, ...] = ("lrp",)
    weighted: bool = False
    role: str | None = None
    absorbs: str | None = None
    # emit gets a list, the relevance at each output (None where none arrives: Split)
    multi_output: bool = False

    def with_params(self, **values) -> "Rule":
        """A copy with those of ``values`` that are parameters of this rule set."""
        mine = {k: v for k, v in values.items() if k in self.params}
        if not mine:
            return self
        rule = copy.copy(self)
        for key, value in mine.items():
            setattr(rule, key, value)
        return rule

    def check(self, node, facts) -> str | None:
        return None

    def absorption(self, node, facts) -> str | None:
        """Why this node's rule loses relevance by design, if it does (default: ``absorbs``)."""
        return self.absorbs

    def relevance_inputs(self, node, facts) -> list[int]:
        """By default the first input: the data operand of every op that has weights or
        shape arguments after it."""
        return [0]

    def describe(self, node, facts) -> str:
        return type(self).__name__

    def emit(self, node, relevance, e, facts) -> dict:
        """Return {input index: relevance} for the inputs in relevance_inputs: a tensor, a
        :class:`Relevance`, or ``Scaled(a, c)`` for ``a * c``, multiplied out where the
        parts at ``a`` meet."""
        raise NotImplementedError

    @classmethod
    def output_non_negative(cls, node, facts) -> bool:
        return False


class SignKeeping:
    """Mixed into the rules of ops whose output is never negative where every input is
    not (pools, reshapes, merges, concatenation): constant operands are read to tell."""

    @classmethod
    def output_non_negative(cls, node, facts) -> bool:
        acts = facts.activations(node)
        if not acts or not all(facts.non_negative(node.inputs[i]) for i in acts):
            return False
        return all(facts.const_non_negative(t) for i, t in enumerate(node.inputs)
                   if i not in acts and cls.reads_constant(node, i))

    @classmethod
    def reads_constant(cls, node, index) -> bool:
        """Whether constant input ``index`` enters the output's values (not a shape or axes
        argument). By default none does."""
        return False
