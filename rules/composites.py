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
from .conv import ConvModified, ConvOnes, is_depthwise
from .gemm import GemmEpsilon
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


def _first(first_layer: str, eps: float, bounds=None) -> dict[str, Rule]:
    """The first layer's rule: ``ones`` (the authors' w+), ``zplus`` (none of its own),
    ``box`` (z^B with the pixel ``bounds``) or ``flat``."""
    if first_layer == "ones":
        return {"Conv": ConvOnes().with_params(eps=eps)}
    if first_layer in ("box", "flat"):
        return {"Conv": ConvModified().with_params(table=first_layer, bounds=bounds)}
    return {}


def paper(identity_skip: bool = True, split: str = "ratio", maxpool: str = "avg2x2",
          first_layer: str = "ones", eps: float = 1e-5, bounds=None) -> Composite:
    rules = _configured("lrp", eps=eps, split=split, identity_skip=identity_skip)
    if maxpool == "winner":
        rules["MaxPool"] = MaxPoolWinner()
    return _frozen("paper", rules, _first(first_layer, eps, bounds))


def conserving(identity_skip: bool = True, split: str = "ratio", first_layer: str = "ones",
               eps: float = 1e-5, bounds=None) -> Composite:
    rules = _configured("lrp", eps=eps, split=split, identity_skip=identity_skip, fallback="w2")
    rules["MaxPool"] = MaxPoolWinner()
    return _frozen("conserving", rules, _first(first_layer, eps, bounds))


# zennit's composites and the search's grid (#25): the conv rule (a basic.py table with its
# parameters, or None for the paper's z+), the head's (epsilon, as zennit's composites give
# Linear layers, or the paper's z+) and the first layer's (_first). Everything else, pools,
# merges, activations, is the paper's composite.
SEARCH = {
    "epsilon-gamma-box": ({"table": "gamma", "gamma": 0.25}, "epsilon", "box"),
    "epsilon-plus-flat": ({"table": "alphabeta", "alpha": 1.0, "beta": 0.0}, "epsilon", "flat"),
    "epsilon-plus": ({"table": "alphabeta", "alpha": 1.0, "beta": 0.0}, "epsilon", "zplus"),
    "epsilon-alpha2-beta1-flat": ({"table": "alphabeta", "alpha": 2.0, "beta": 1.0}, "epsilon", "flat"),
    **{f"gamma-{g}": ({"table": "gamma", "gamma": g}, "epsilon", "ones") for g in (0.1, 0.25, 1)},
    "gamma-0.25-flat": ({"table": "gamma", "gamma": 0.25}, "epsilon", "flat"),
    "alpha2-beta1": ({"table": "alphabeta", "alpha": 2.0, "beta": 1.0}, "epsilon", "ones"),
    "alpha1-beta0": ({"table": "alphabeta", "alpha": 1.0, "beta": 0.0}, "epsilon", "ones"),
    "paper-epsilon-head": (None, "epsilon", "ones"),
    "paper-box": (None, "zplus", "box"),
    "paper-flat": (None, "zplus", "flat"),
}


def searched(name: str, bounds=None, eps: float = 1e-5, epsilon: float = 1e-6) -> Composite:
    """One of SEARCH's composites; ``bounds``: the normalised pixel range, for the box rule."""
    conv, head, first_layer = SEARCH[name]
    rules = _configured("lrp", eps=eps)
    rules["MaxPool"] = MaxPoolWinner()  # zennit's: the gradient, the winner takes all
    if conv is not None:
        rules["Conv"] = ConvModified().with_params(**conv)
    if head == "epsilon":
        rules["Gemm"] = GemmEpsilon().with_params(epsilon=epsilon)
    return _frozen(name, rules, _first(first_layer, eps, bounds))


def transformer(epsilon: float = 1e-9) -> Composite:
    return _frozen("transformer", _configured("epsilon", epsilon=epsilon))


# Why each family gets its default (inspect prints it): measured, docs/RESULTS.md.
DEFAULT_REASONS = {
    "transformer": "attention: CP-LRP, as LXT's cp_LRP composite (docs/TRANSFORMERS.md)",
    "epsilon-plus-flat": ("depthwise convs: zennit's EpsilonPlusFlat, the best LRP composite of the search on the "
                          "real EfficientNet-Lite0: tie-robust ID +0.041 over lrp-paper on 50 tuning photos, "
                          "+0.026 [+0.012, +0.041] on 50 held-out ones; Grad-CAM still ranks higher "
                          "(docs/RESULTS.md)"),
    "conserving": "a MaxPool the 2x2 stand-in does not cover: the exact MaxPool rule, z+ kept where it vanishes",
    "paper": "dense convs (ResNets, VGG): the paper's rules, as the authors' code runs them",
}


def for_graph(facts) -> str:
    """The LRP composite a graph gets by default (DEFAULT_REASONS says why): ``transformer``
    where attention is (a MatMul of a Softmax's output with another activation),
    ``epsilon-plus-flat`` where depthwise convs are (MobileNets, EfficientNets: the search's
    best on real EfficientNet-Lite0), ``conserving`` where a MaxPool needs the exact rule
    (AlexNet, SqueezeNet, GoogLeNet's odd-sized pools), ``paper`` for the family the paper's
    rules were made for (ResNets, VGG: dense convs, MaxPools the 2x2 stand-in covers)."""
    if any(node.op in ("MatMul", "Einsum") and attention_operand(node, facts) is not None
           for node in facts.order):
        return "transformer"
    if any(is_depthwise(node) for node in facts.order):
        return "epsilon-plus-flat"
    stand_in = family("lrp")["MaxPool"]
    if any(node.op == "MaxPool" and stand_in.check(node, facts) for node in facts.order):
        return "conserving"
    return "paper"


def epsilon(epsilon: float = 1e-9) -> Composite:
    return _frozen("epsilon", _configured("epsilon", epsilon=epsilon))


def gradient(guided: bool = False) -> Composite:
    return _frozen("guided-gradient" if guided else "gradient", _configured("gradient", guided=guided))

