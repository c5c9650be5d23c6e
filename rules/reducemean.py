"""ReduceMean over the spatial axes (global average pooling as the dynamo exporter and
TensorFlow write it): the z-rule of GlobalAveragePool (SPEC.md section 1),

    R_in = a * R_out / (n * (mean(a) + eps))

with R_out broadcast back over the reduced axes.
"""

import numpy as np

from .base import Rule


def _axes(node, facts):
    if len(node.inputs) > 1 and not node.inputs[1].is_empty():
        value = facts.const_value(node.inputs[1])
        return None if value is None else [int(a) for a in np.ravel(value)]
    return node.attrs.get("axes")


class ReduceMeanZ(Rule):
    op_types = ("ReduceMean",)

    def check(self, node, facts, config):
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

    def describe(self, node, facts, config):
        return "z"

    def emit(self, node, relevance, e, facts, config):
        a = node.inputs[0]
        rank = len(a.shape)
        axes = sorted(x % rank for x in _axes(node, facts))
        n = int(np.prod([a.shape[x] for x in axes]))
        mean = node.outputs[0]
        s = e.op("Div", [e.stabilised_ratio(relevance, mean), e.scalar(n)], hint="s_n")
        if not node.attrs.get("keepdims", 1):
            s = e.op("Unsqueeze", [s, np.array(axes, dtype=np.int64)], hint="s_keep")
        return {0: e.op("Mul", [a, s], hint="r_in")}


class ReduceMeanEpsilon(ReduceMeanZ):
    kinds = ("epsilon", "gradient")

    def describe(self, node, facts, config):
        return "epsilon" if config.rule_kind == "epsilon" else "gradient"

    def emit(self, node, signal, e, facts, config):
        from .averagepool import spread_mean

        a = node.inputs[0]
        rank = len(a.shape)
        axes = sorted(x % rank for x in _axes(node, facts))
        n = e.scalar(int(np.prod([a.shape[x] for x in axes])))
        mean = node.outputs[0]
        if not node.attrs.get("keepdims", 1):
            keep = np.array(axes, dtype=np.int64)
            mean = e.op("Unsqueeze", [mean, keep], hint="mean_keep")
            signal = e.op("Unsqueeze", [signal, keep], hint="signal_keep")
        return {0: spread_mean(e, a, mean, signal, n, config)}


RULES = [ReduceMeanZ(), ReduceMeanEpsilon()]
