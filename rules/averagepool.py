"""GlobalAveragePool and AveragePool: the z-rule (SPEC.md section 1).

    R_in = a * R_out / (sum_window(a) + n*eps)        n = window size

For a global pool, or an AveragePool whose one window covers the whole map (Caffe2's
7x7 head), ``sum_window(a) + n*eps = n * (mean(a) + eps)`` and the rule is one broadcast
multiply. A sliding AveragePool sums its windows with a depthwise ones-kernel Conv and
spreads ``s`` back with the matching ConvTranspose.

LRP-epsilon: ``R_in = a * (R / (mean + eps*sign(mean))) / n`` (for a sliding pool through
the same window sums and ConvTranspose); gradient: ``G_in = G / n`` over the window, whole-map
pools only.
"""

import numpy as np

from .base import Rule, SignKeeping
from .conv import adjoint, transpose_attrs
from .linear import EpsilonParam, epsilon_ratio


def _is_identity(node) -> bool:
    """A 1x1 window with stride 1 and no pads (AdaptiveAvgPool2d(7) on a 7x7 map, as
    torchvision's VGG exports it) averages nothing: relevance passes in every family."""
    kernel = node.attrs.get("kernel_shape", [])
    return (node.op == "AveragePool" and kernel and all(k == 1 for k in kernel)
            and all(s == 1 for s in node.attrs.get("strides", [1] * len(kernel)))
            and not any(node.attrs.get("pads", [])) and not node.attrs.get("ceil_mode", 0))


def _covers_whole_map(node, facts):
    spatial = facts.static_shape(node.inputs[0], "the input", node)[1:]
    pads = node.attrs.get("pads", [0] * (2 * len(spatial)))
    return list(node.attrs.get("kernel_shape", [])) == list(spatial) and not any(pads)


class AveragePoolZ(SignKeeping, Rule):
    op_types = ("GlobalAveragePool", "AveragePool")
    role = "pool"
    params = ("eps",)
    eps = 1e-5
    note = "z"  # what inspect says of a pool that averages (a 1x1 window passes)

    def check(self, node, facts):
        if _is_identity(node):
            return None
        try:
            shape = facts.static_shape(node.inputs[0], "the input", node)
        except Exception as exc:
            return str(exc)
        if node.op == "AveragePool" and not _covers_whole_map(node, facts):
            if node.attrs.get("ceil_mode", 0):
                return "ceil_mode=1 is not supported for a sliding AveragePool"
            auto_pad = node.attrs.get("auto_pad", "NOTSET")
            if auto_pad not in ("NOTSET", b"NOTSET", "VALID", b"VALID"):
                return f"auto_pad={auto_pad} is not supported for a sliding AveragePool"
        if len(shape) < 2:
            return "expects N x C x spatial input"
        return None

    def describe(self, node, facts):
        return "pass (1x1 window)" if _is_identity(node) else self.note

    def emit(self, node, relevance, e, facts):
        if _is_identity(node):
            return {0: relevance}
        a = node.inputs[0]
        shape = facts.static_shape(a, "the input", node)
        if node.op == "GlobalAveragePool" or _covers_whole_map(node, facts):
            # the forward pool already is the window mean
            return {0: self.mean_rule(e, a, node.outputs[0], relevance, e.scalar(int(np.prod(shape[1:]))))}
        channels, kernel = shape[0], list(node.attrs["kernel_shape"])
        ones = np.ones([channels, 1] + kernel, dtype=e.dtype)
        box = e.const(ones, "box")
        attrs = {k: node.attrs[k] for k in ("strides", "pads") if k in node.attrs}
        attrs.update(kernel_shape=kernel, group=channels)
        window_sum = e.op("Conv", [a, box], attrs, hint="window_sum")
        s = self.window_ratio(e, relevance, window_sum, float(np.prod(kernel)))
        tattrs = transpose_attrs(_ConvView(node, kernel, channels), facts, [channels, 1] + kernel)
        return {0: e.scaled(a, adjoint(e, s, box, tattrs))}

    def window_ratio(self, e, relevance, window_sum, n):
        """``R / (sum_window(a) + n*eps)``: the z-rule's share per unit of a window's sum."""
        return e.op("Div", [relevance, e.op("Add", [window_sum, e.scalar(n * float(self.eps))])], hint="s")

    def mean_rule(self, e, a, mean, signal, n):
        """The z-rule of a mean over some axes (``n`` values each), ``mean`` and ``signal``
        broadcasting back over them: ``a * R / (n * (mean + eps))``."""
        return e.scaled(a, e.op("Div", [e.stabilised_ratio(signal, mean, self.eps), n], hint="s_n"))


class _ConvView:
    """The pool seen as the depthwise conv that transpose_attrs knows how to invert."""

    def __init__(self, node, kernel, channels):
        self.op, self.name = node.op, node.name
        self.inputs, self.outputs = node.inputs, node.outputs
        self.attrs = dict(node.attrs, kernel_shape=kernel, group=channels)


class GlobalPoolEpsilon(EpsilonParam, AveragePoolZ):
    note = "epsilon"

    def window_ratio(self, e, relevance, window_sum, n):
        """LRP-epsilon of the window mean ``sum/n``: ``R / (mean + eps sign) / n`` (the
        border windows' own divisor only rescales eps)."""
        return epsilon_ratio(e, relevance, window_sum, n * float(self.epsilon))

    def mean_rule(self, e, a, mean, signal, n):
        """LRP-epsilon: ``a * (R / (mean + eps*sign(mean))) / n``."""
        return e.scaled(a, e.op("Div", [epsilon_ratio(e, signal, mean, self.epsilon), n], hint="s_n"))


class GlobalPoolGradient(GlobalPoolEpsilon):
    families = ("gradient",)
    params = ()
    note = "gradient"

    def check(self, node, facts):
        reason = super().check(node, facts)
        if reason is None and node.op == "AveragePool" and not _is_identity(node) \
                and not _covers_whole_map(node, facts):
            return "a sliding AveragePool has no gradient rule here"
        return reason

    def mean_rule(self, e, a, mean, signal, n):
        """The gradient of a mean: ``G / n`` everywhere in the window."""
        return e.op("Expand", [e.op("Div", [signal, n], hint="g_n"), e.op("Shape", [a])], hint="g_in")


RULES = [AveragePoolZ(), GlobalPoolEpsilon(), GlobalPoolGradient()]
