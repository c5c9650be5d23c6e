"""Rules, one module per ONNX op type (or family of ops that share one rule), registered by
the explicit imports below (ONNX's reference ops: a new op is one module and one line here,
plus its test in tests/rules/).

Each module's ``RULES`` lists rule instances with their default parameters; each instance
serves the rule *families* it names (``lrp``: the paper's rules; ``epsilon``: LRP-epsilon,
captum-style; ``gradient``: the backward pass of the gradient methods). composites.py
builds the named rule sets (zennit's composites) from these families, with parameters.
"""

from __future__ import annotations

from . import add, affine, averagepool, conv, gemm, matmul, maxpool, passthrough, reducemean
from . import reshape, transpose
from . import pad
from . import concat
from . import activations, layernorm, mul, slice
from . import qdq
from . import gather, einsum
from .base import Rule

MODULES = (add, affine, averagepool, conv, gemm, matmul, maxpool, passthrough, reducemean, reshape,
           transpose, pad, concat, activations, layernorm, mul, slice, qdq, gather, einsum)


def family(name: str) -> dict[str, Rule]:
    """Op type -> the default rule instance of family ``name``."""
    rules: dict[str, Rule] = {}
    for module in MODULES:
        for rule in module.RULES:
            if name not in rule.families:
                continue
            for op_type in rule.op_types:
                if op_type in rules:
                    raise RuntimeError(f"two {name} rules claim op type {op_type}: "
                                       f"{type(rules[op_type]).__name__}, {type(rule).__name__}")
                rules[op_type] = rule
    return rules


def _op_facts() -> dict[str, type]:
    """Op type -> the rule class that declares its facts (weighted, role, sign, ...): the
    first of the op's rules; the other families' rules for the op derive from it."""
    facts: dict[str, type] = {}
    for module in MODULES:
        for rule in module.RULES:
            for op_type in rule.op_types:
                facts.setdefault(op_type, type(rule))
    return facts


OP_FACTS = _op_facts()


def op_facts(op_type: str) -> type:
    """The facts of ``op_type``; an op without a rule gets the conservative ones of
    :class:`Rule` (unweighted, no role, sign unknown, absorbs nothing)."""
    return OP_FACTS.get(op_type, Rule)
