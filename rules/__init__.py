"""Rules, one module per ONNX op type (or family of ops that share one rule).

Each rule belongs to one or more *kinds* (zennit's composites): ``lrp`` (the paper's rules,
parameterised by Config), ``epsilon`` (LRP-epsilon everywhere, captum-style) and
``gradient`` (the backward pass: plain gradient, Gradient x Input, Integrated Gradients,
Guided Backprop, Grad-CAM). A registry maps op types to the rules of one kind; a new op is
one module here with a ``RULES`` list, one line in ``_MODULES``, and its test in tests/rules/.
"""

from importlib import import_module

_MODULES = ("add", "affine", "averagepool", "conv", "gemm", "matmul", "maxpool",
            "passthrough", "reducemean", "reshape", "transpose")


KINDS = ("lrp", "epsilon", "gradient")


def build_registry(kind: str) -> dict:
    registry = {}
    for name in _MODULES:
        for rule in import_module(f"{__name__}.{name}").RULES:
            if kind not in rule.kinds:
                continue
            for op_type in rule.op_types:
                if op_type in registry:
                    raise RuntimeError(f"two {kind} rules claim op type {op_type}")
                registry[op_type] = rule
    return registry


REGISTRIES = {kind: build_registry(kind) for kind in KINDS}
