"""Presets are data: which rule parameters the relevance graph is built with.

``paper`` reproduces the authors' code (SPEC.md section 1); the ablation variants (i)-(iv)
of the paper's Table 2 differ only in the two skip-merge switches.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .rules.composites import SEARCH


# The paper's Table 2: (identity-skip relevance, split).
VARIANTS = {
    "i": {"identity_skip": False, "split": "symmetric"},
    "ii": {"identity_skip": True, "split": "symmetric"},
    "iii": {"identity_skip": False, "split": "ratio"},
    "iv": {"identity_skip": True, "split": "ratio"},
}

# Every method name that build, eval and the API accept: name -> (the method it runs, in
# methods.py, the Config fields the name implies, what it is). The paper's method and its
# baselines (SPEC.md section 3), each an explainer graph. Each method's defaults are its
# reference's: LRP-epsilon starts from the logit, as captum's does.
METHOD_NAMES = {
    "lrp": ("lrp", {}, "LRP with the composite the graph's family gets: lrp-paper for dense-conv nets "
                       "(ResNets, VGG), lrp-conserving where depthwise convs are, lrp-transformer where "
                       "attention is (inspect says which)"),
    "lrp-paper": ("lrp", {"composite": "paper"},
                  "the paper's LRP (reference: the authors' code, tests/reference.py): z+, ratio split at "
                  "skip merges, w+ first layer, MaxPool as 2x2 average, eps 1e-5, from the probability"),
    "lrp-conserving": ("lrp", {"composite": "conserving"},
                       "lrp-paper plus the w^2 rule where z+ has nothing to divide by, exact MaxPool: "
                       "keeps the relevance on MobileNets/EfficientNets (docs/COVERAGE.md)"),
    "lrp-transformer": ("lrp", {"composite": "transformer", "start": "logit", "epsilon": 1e-12},
                        "CP-LRP with AttnLRP's LayerNorm (reference: LXT's cp_LRP composite for torchvision's "
                        "ViT, its Gradient x Input): epsilon rule (1e-12), attention weights constant, from "
                        "the logit"),
    "lrp-winner": ("lrp", {"maxpool": "winner", "composite": "paper"},
                   "lrp-paper with the exact MaxPool rule (arg-max winner)"),
    **{f"lrp-{v}": ("lrp", {**VARIANTS[v], "composite": "paper"}, f"the paper's ablation variant ({v}, Table 2)")
       for v in VARIANTS},
    **{f"lrp-{name}": ("lrp", {"composite": name}, f"LRP on the search composite {name} (rules/composites.py "
                                                   f"SEARCH: conv {conv['table'] if conv else 'z+'}, head {head}, "
                                                   f"first layer {first})")
       for name, (conv, head, first) in SEARCH.items()},
    "lrp-epsilon": ("lrp-epsilon", {"start": "logit"},
                    "LRP-epsilon everywhere (reference: captum LRP, EpsilonRule; epsilon 1e-9, from the logit)"),
    "gradient": ("gradient", {}, "|gradient| (reference: captum Saliency, abs=True)"),
    "gradxinput": ("gradxinput", {}, "Gradient x Input (reference: captum InputXGradient)"),
    "guided-bp": ("guided-bp", {}, "Guided Backprop (reference: captum GuidedBackprop)"),
    "ig": ("ig", {}, "Integrated Gradients (reference: captum IntegratedGradients; baseline 0, riemann_right, "
                     "32 steps: --ig-method, --ig-steps)"),
    "ig-paper": ("ig", {"ig_method": "gausslegendre", "ig_steps": 50},
                 "Integrated Gradients with captum's defaults, as the authors ran it (gausslegendre, 50 steps)"),
    "gradcam": ("gradcam", {}, "Grad-CAM (reference: pytorch-grad-cam GradCAM, re-derived in tests/reference.py) "
                               "at the input of the last pooling"),
    "scorecam": ("scorecam", {}, "Score-CAM (reference: pytorch-grad-cam ScoreCAM, tests/reference.py; masked "
                                 "forward passes in a Scan, chunks of 16)"),
}
METHODS = tuple(dict.fromkeys(base for base, _, _ in METHOD_NAMES.values()))


@dataclass(frozen=True)
class Config:
    identity_skip: bool = True  # relevance into identity skips
    split: str = "ratio"  # ratio | symmetric, at skip merges
    maxpool: str = "avg2x2"  # avg2x2 (paper) | winner (exact arg-max)
    first_layer: str = "ones"  # ones (paper, w+) | zplus | box (z^B, the pixel bounds) | flat
    eps: float = 1e-5
    start: str = "probability"  # probability (paper) | logit
    hq_levels: int | None = None  # in-graph Heat Quantization output when set
    full_relevance: bool = False  # also output N x C x H x W relevance
    # also output relevance_tokens N x h x w: relevance at the patch embedding's output
    # (a transformer's tokens before the class token and position embedding), channel-summed
    tokens: bool = False
    conservation: bool = False  # per-layer relevance sums as outputs
    dtype: str = "float32"  # float32 | float16 (forward and relevance pass in half precision)
    method: str = "lrp"  # lrp (the paper) | a baseline: see METHODS
    # lrp's rule set: auto (composites.for_graph: paper for dense-conv nets, conserving
    # where depthwise convs are, transformer where attention is) | paper | conserving | transformer
    composite: str = "auto"
    epsilon: float = 1e-9  # LRP-epsilon's stabiliser (captum's default)
    ig_steps: int = 32  # Integrated Gradients: path points
    ig_method: str = "riemann-right"  # riemann-right | gausslegendre (captum's default)
    # False: no optional ``target`` input, so no If node; the predicted class is explained.
    # A graph without control flow is what ORT's CUDA EP needs to capture a CUDA graph.
    target_input: bool = True
    # K: explain K classes per image in one call (input ``targets`` int64[N, K], outputs
    # ``relevance_maps`` N x K x H x W, ``targets_used`` N x K); None: one class per image.
    targets: int | None = None

    def __post_init__(self):
        choices = {"split": ("ratio", "symmetric"), "maxpool": ("avg2x2", "winner"),
                   "first_layer": ("ones", "zplus", "box", "flat"), "start": ("probability", "logit"),
                   "dtype": ("float32", "float16"), "method": METHODS,
                   "composite": ("auto", "paper", "conserving", "transformer", *SEARCH),
                   "ig_method": ("riemann-right", "gausslegendre")}
        if self.method in METHOD_NAMES and self.method not in METHODS:
            raise ValueError(f"method={self.method!r} names a method with settings "
                             f"{METHOD_NAMES[self.method][1]}: use lrpgraph.preset(method={self.method!r})")
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {allowed}")
        if not self.eps >= 0:
            raise ValueError(f"eps={self.eps}: must be >= 0")
        if self.ig_steps < 1:
            raise ValueError(f"ig_steps={self.ig_steps}: needs at least 1 step")
        if self.targets is not None and not (isinstance(self.targets, int) and self.targets >= 1):
            raise ValueError(f"targets={self.targets!r}: the number of classes per image, at least 1")
        if self.hq_levels is not None and self.hq_levels < 2:
            raise ValueError(f"hq_levels={self.hq_levels}: needs at least 2 levels")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


PRESETS = {"paper": Config()}


def preset(name: str = "paper", variant: str | None = None, method: str | None = None,
           **overrides) -> Config:
    """A preset, with what the method name implies (METHOD_NAMES), then the variant's
    switches, then every override that is not None."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    changes = {}
    if method is not None:
        if method not in METHOD_NAMES:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_NAMES)}")
        base, implied, _ = METHOD_NAMES[method]
        changes.update(implied, method=base)
    changes.update(VARIANTS[variant] if variant else {})
    changes.update({k: v for k, v in overrides.items() if v is not None})
    return PRESETS[name].replace(**changes)


@dataclass(frozen=True)
class Preprocess:
    """How images are brought to the model; stored in the explainer's metadata so that
    ``explain`` needs no flags for a model built by us."""

    size: int = 224  # centre crop
    resize: int = 256  # short side before the crop
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    fit: str = "crop"  # crop: resize the short side, centre crop | pad: the whole image, padded square

    def region(self) -> str:
        """Which part of a photo a heatmap covers."""
        if self.fit == "pad":
            return f"the whole image, resized to {self.size} on its long side and padded to a square"
        return f"the centre {self.size}x{self.size} crop of the image resized to {self.resize} on its short side"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)
