"""Presets are data: which rule parameters the relevance graph is built with.

``paper`` reproduces the authors' code (SPEC.md section 1); the ablation variants (i)-(iv)
of the paper's Table 2 differ only in the two skip-merge switches.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


# The paper's method and its baselines (SPEC.md section 3), all explainer graphs.
METHODS = ("lrp", "lrp-epsilon", "gradient", "gradxinput", "guided-bp", "ig", "gradcam", "scorecam")


@dataclass(frozen=True)
class Config:
    identity_skip: bool = True  # relevance into identity skips
    split: str = "ratio"  # ratio | symmetric, at skip merges
    maxpool: str = "avg2x2"  # avg2x2 (paper) | winner (exact arg-max)
    first_layer: str = "ones"  # ones (paper, w+) | zplus
    eps: float = 1e-5
    start: str = "probability"  # probability (paper) | logit
    hq_levels: int | None = None  # in-graph Heat Quantization output when set
    full_relevance: bool = False  # also output N x C x H x W relevance
    conservation: bool = False  # per-layer relevance sums as outputs
    dtype: str = "float32"  # float32 | float16 (forward and relevance pass in half precision)
    method: str = "lrp"  # lrp (the paper) | a baseline: see METHODS
    epsilon: float = 1e-9  # LRP-epsilon's stabiliser (captum's default)
    ig_steps: int = 32  # Integrated Gradients: path points (right Riemann sum)
    # False: no optional ``target`` input, so no If node; the predicted class is explained.
    # A graph without control flow is what ORT's CUDA EP needs to capture a CUDA graph.
    target_input: bool = True

    @property
    def rule_kind(self) -> str:
        """Which rule set of rules/ the method runs on."""
        return {"lrp": "lrp", "lrp-epsilon": "epsilon"}.get(self.method, "gradient")

    def __post_init__(self):
        choices = {"split": ("ratio", "symmetric"), "maxpool": ("avg2x2", "winner"),
                   "first_layer": ("ones", "zplus"), "start": ("probability", "logit"),
                   "dtype": ("float32", "float16"), "method": METHODS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {allowed}")
        if not self.eps >= 0:
            raise ValueError(f"eps={self.eps}: must be >= 0")
        if self.ig_steps < 1:
            raise ValueError(f"ig_steps={self.ig_steps}: needs at least 1 step")
        if self.hq_levels is not None and self.hq_levels < 2:
            raise ValueError(f"hq_levels={self.hq_levels}: needs at least 2 levels")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


# The paper's Table 2: (identity-skip relevance, split).
VARIANTS = {
    "i": {"identity_skip": False, "split": "symmetric"},
    "ii": {"identity_skip": True, "split": "symmetric"},
    "iii": {"identity_skip": False, "split": "ratio"},
    "iv": {"identity_skip": True, "split": "ratio"},
}

PRESETS = {"paper": Config()}


def preset(name: str = "paper", variant: str | None = None, **overrides) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    changes = dict(VARIANTS[variant]) if variant else {}
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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)
