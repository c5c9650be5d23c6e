"""LRP rules, one module per ONNX op type (or family of ops that share one rule).

The registry maps op types to rule objects; a new op is one module here with a ``RULES``
list, one line in ``_MODULES``, and its test in tests/rules/.
"""

from importlib import import_module

_MODULES = ("add", "affine", "averagepool", "conv", "gemm", "matmul", "maxpool",
            "passthrough", "reducemean", "reshape", "transpose")


def build_registry() -> dict:
    registry = {}
    for name in _MODULES:
        for rule in import_module(f"{__name__}.{name}").RULES:
            for op_type in rule.op_types:
                if op_type in registry:
                    raise RuntimeError(f"two rules claim op type {op_type}")
                registry[op_type] = rule
    return registry


REGISTRY = build_registry()
