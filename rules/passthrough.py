"""Elementwise nodes under which relevance passes unchanged (SPEC.md section 1):
``R_in = R_out``.

Relu and ReLU6 (Clip) keep the sign pattern that the next linear rule already sees in its
input activation; BatchNormalization is not folded into the conv in the paper preset, so z+
uses the raw conv weights and BN only forwards relevance. Identity, Dropout (inference) and
Cast change nothing that relevance depends on.
"""

from .base import Rule


class PassThrough(Rule):
    op_types = ("Relu", "Clip", "BatchNormalization", "Identity", "Dropout", "Cast")

    def describe(self, node, facts, config):
        return "pass"

    def emit(self, node, relevance, e, facts, config):
        return {0: relevance}


RULES = [PassThrough()]
