"""Composites: named rule sets, as data (zennit's ``composites.py``).

A composite says, for each op type, which rule instance (with its parameters) relevance
crosses it by, and which rule the *first layer* (a weighted node with no weighted node
between it and the image) gets instead. Each is built from a rule family of rules/ (every
module's default instances), configured by the composite's parameters, with the entries
the composite names itself:

- ``paper``: the paper's rules as the authors' code runs them (SPEC.md section 1), with the
  Table 2 switches (``identity_skip``, ``split``), the MaxPool rule (``avg2x2`` stand-in or
  exact ``winner``), the first layer's rule (``ones``: w+; ``zplus``) and ``eps``;
- ``conserving``: the paper's rules where they conserve, and where z+ has nothing to
  divide by (a depthwise filter whose positive weights see only zeros) the w^2 rule
  (linear.py); MaxPool by its exact winner. ``paper`` loses 99.9 % of the relevance on
  MobileNetV2 there;
- ``transformer``: CP-LRP (Ali et al. 2022) with AttnLRP's LayerNorm (Achtibat et al.
  2024), as LXT's ``cp_LRP`` composite for torchvision's ViT: the epsilon rule for every
  linear layer and the patch embedding, LayerNorm with its deviation held constant,
  GELU/SiLU by the identity rule, attention weights held constant (relevance flows by the
  value path), residual sums split in proportion; from the logit that is LXT's
  Gradient x Input. These are the epsilon family's rules (the attention MatMul's among
  them), named for the graphs they are the default of;
- ``epsilon``: LRP-epsilon everywhere, captum-style (``epsilon``: captum's 1e-9);
- ``gradient``: the backward pass (``guided``: Guided Backprop's ReLU).

A new composite is one function here, which the method that uses it calls (methods.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from . import family
from .base import Rule
from .conv import ConvOnes, is_depthwise
from .matmul import attention_operand
from .maxpool import MaxPoolWinner


@dataclass(frozen=True)
class Composite:
    name: str
    rules: Mapping[str, Rule]  # op type -> rule instance
    first_layer: Mapping[str, Rule] = field(default_factory=dict)  # op type -> rule instance

    def rule_for(self, node, facts) -> Rule | None:
        """The rule of ``node``, or None where this composite has none for its op."""
        if node.op in self.first_layer and facts.is_first_layer(node):
            return self.first_layer[node.op]
        return self.rules.get(node.op)


def _configured(name: str, **params) -> dict[str, Rule]:
    return {op: rule.with_params(**params) for op, rule in family(name).items()}


def _frozen(name, rules, first_layer=None) -> Composite:
    return Composite(name, MappingProxyType(rules), MappingProxyType(first_layer or {}))


def paper(identity_skip: bool = True, split: str = "ratio", maxpool: str = "avg2x2",
          first_layer: str = "ones", eps: float = 1e-5) -> Composite:
    rules = _configured("lrp", eps=eps, split=split, identity_skip=identity_skip)
    if maxpool == "winner":
        rules["MaxPool"] = MaxPoolWinner()
    first = {"Conv": ConvOnes().with_params(eps=eps)} if first_layer == "ones" else {}
    return _frozen("paper", rules, first)


def conserving(identity_skip: bool = True, split: str = "ratio", first_layer: str = "ones",
               eps: float = 1e-5) -> Composite:
    rules = _configured("lrp", eps=eps, split=split, identity_skip=identity_skip, fallback="w2")
    rules["MaxPool"] = MaxPoolWinner()
    first = {"Conv": ConvOnes().with_params(eps=eps)} if first_layer == "ones" else {}
    return _frozen("conserving", rules, first)


def transformer(epsilon: float = 1e-9) -> Composite:
    return _frozen("transformer", _configured("epsilon", epsilon=epsilon))


def for_graph(facts) -> str:
    """The LRP composite a graph gets by default: ``transformer`` where attention is (a
    MatMul of a Softmax's output with another activation), ``paper`` for the family the
    paper's rules were made for (ResNets, VGG: dense convs, MaxPools the 2x2 stand-in
    covers), ``conserving`` where a depthwise conv can leave z+ nothing to divide by or a
    MaxPool needs the exact rule (AlexNet, SqueezeNet, GoogLeNet's odd-sized pools)."""
    if any(node.op in ("MatMul", "Einsum") and attention_operand(node, facts) is not None
           for node in facts.order):
        return "transformer"
    stand_in = family("lrp")["MaxPool"]
    if any(is_depthwise(node) or (node.op == "MaxPool" and stand_in.check(node, facts))
           for node in facts.order):
        return "conserving"
    return "paper"


def epsilon(epsilon: float = 1e-9) -> Composite:
    return _frozen("epsilon", _configured("epsilon", epsilon=epsilon))


def gradient(guided: bool = False) -> Composite:
    return _frozen("guided-gradient" if guided else "gradient", _configured("gradient", guided=guided))

