"""What a rule is.

A rule knows how relevance crosses one kind of ONNX node: ``check`` says why it cannot
(a reason string, or None), ``relevance_inputs`` names the inputs that receive relevance,
``emit`` adds the nodes that compute it. Rules see the forward graph only through
``facts`` (match.GraphFacts) and build nodes only through ``e`` (emit.Emitter); they know
nothing of the driver.
"""

from __future__ import annotations


class Rule:
    op_types: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ("lrp",)  # which rule sets (rules/__init__.py) it belongs to

    def check(self, node, facts, config) -> str | None:
        return None

    def relevance_inputs(self, node, facts) -> list[int]:
        """By default the first input: the data operand of every op that has weights or
        shape arguments after it."""
        return [0]

    def describe(self, node, facts, config) -> str:
        return type(self).__name__

    def emit(self, node, relevance, e, facts, config) -> dict:
        """Return {input index: relevance} for the inputs in relevance_inputs: a tensor, or
        ``e.scaled(a, c)`` for ``a * c``, multiplied out where the parts at ``a`` meet."""
        raise NotImplementedError
