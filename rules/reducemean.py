"""ReduceMean over the spatial axes (global average pooling as the dynamo exporter and
TensorFlow write it): the rules of GlobalAveragePool (SPEC.md section 1), z-rule

    R_in = a * R_out / (n * (mean(a) + eps))

with R_out broadcast back over the reduced axes; LRP-epsilon and the gradient likewise
(averagepool.py's mean rules).
"""

import numpy as np

from .averagepool import AveragePoolZ, GlobalPoolEpsilon, GlobalPoolGradient


def _axes(node, facts):
    if len(node.inputs) > 1 and not node.inputs[1].is_empty():
        value = facts.const_value(node.inputs[1])
        return None if value is None else [int(a) for a in np.ravel(value)]
    return node.attrs.get("axes")


class _ReduceMean:
    """A mean over static non-batch axes; the pool rule it is mixed into gives the maths."""

    op_types = ("ReduceMean",)

    def check(self, node, facts):
        axes = _axes(node, facts)
        shape = node.inputs[0].shape
        if axes is None or shape is None:
            return "the reduced axes or the input shape are unknown"
        rank = len(shape)
        axes = [a % rank for a in axes]
        if 0 in axes:
            return "a mean over the batch axis has no LRP rule"
        if any(not isinstance(shape[a], (int, np.integer)) for a in axes):
            return "the reduced axes must have static sizes"
        return None

    def emit(self, node, signal, e, facts):
        a = node.inputs[0]
        rank = len(a.shape)
        axes = sorted(x % rank for x in _axes(node, facts))
        n = e.scalar(int(np.prod([a.shape[x] for x in axes])))
        mean = node.outputs[0]
        if not node.attrs.get("keepdims", 1):
            keep = np.array(axes, dtype=np.int64)
            mean = e.op("Unsqueeze", [mean, keep], hint="mean_keep")
            signal = e.op("Unsqueeze", [signal, keep], hint="signal_keep")
        return {0: self.mean_rule(e, a, mean, signal, n)}


class ReduceMeanZ(_ReduceMean, AveragePoolZ):
    pass


class ReduceMeanEpsilon(_ReduceMean, GlobalPoolEpsilon):
    pass


class ReduceMeanGradient(_ReduceMean, GlobalPoolGradient):
    pass


RULES = [ReduceMeanZ(), ReduceMeanEpsilon(), ReduceMeanGradient()]
