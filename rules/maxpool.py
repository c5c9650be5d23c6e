"""MaxPool, two ways (SPEC.md section 1).

``maxpool="avg2x2"`` (paper preset; the authors' code): propagate as if the layer were a
2x2 average pool with stride 2 and no padding, with the z-rule

    R_in = a * up2(R_out / (avgpool2(a) + eps)) / 4

It does not conserve where a 2x2 window is all zero while the real 3x3 max window was not;
``--conservation`` reports that loss.

``maxpool="winner"``: all relevance goes to the arg-max of each window; where windows
overlap (3x3 stride 2), a position that wins several windows receives the sum. The forward
MaxPool is asked for its Indices output (flat over N*C*H*W), and ScatterElements with
reduction=add sums per position (MaxUnpool would overwrite). Conserves exactly.

LRP-epsilon routes ``R / (z + eps*sign(z))`` to the winners and multiplies by ``a``
(captum's EpsilonRule on a max pool); the gradient routes ``G`` to the winners.
"""

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .base import Rule
from .linear import epsilon_ratio


class MaxPoolRule(Rule):
    op_types = ("MaxPool",)

    def check(self, node, facts, config):
        if config.maxpool == "avg2x2":
            try:
                c_in = facts.static_shape(node.inputs[0], "the input", node)
                c_out = facts.static_shape(node.outputs[0], "the output", node)
            except Exception as exc:
                return str(exc)
            if len(c_in) != 3 or [2 * d for d in c_out[1:]] != list(c_in[1:]):
                return (f"the 2x2-average stand-in needs the output {c_out} to be the input "
                        f"{c_in} halved; build with --maxpool winner")
        return None

    def describe(self, node, facts, config):
        return "as 2x2 average (paper)" if config.maxpool == "avg2x2" else "winner takes all"

    def emit(self, node, relevance, e, facts, config):
        a = node.inputs[0]
        if config.maxpool == "avg2x2":
            avg = e.op("AveragePool", [a], {"kernel_shape": [2, 2], "strides": [2, 2]}, hint="avg")
            s = e.op("Mul", [e.stabilised_ratio(relevance, avg), e.scalar(0.25)], hint="s4")
            # asymmetric + floor: for a scale of 2 the same copies as the defaults, and a
            # faster kernel in ORT's CPU Resize (ResNet50's stem, batch 8: 5.1 -> 3.5 ms)
            up = e.op("Resize", [s, None, np.array([1, 1, 2, 2], dtype=np.float32)],
                      {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                       "nearest_mode": "floor"}, hint="up")
            up.shape, up.dtype = a.shape, e.dtype  # check() made the input exactly twice the output
            return {0: e.scaled(a, up)}
        return {0: route_to_winners(e, node, relevance)}


def route_to_winners(e, node, signal):
    """Each output position's ``signal`` added to its window's arg-max input position."""
    a = node.inputs[0]
    if len(node.outputs) < 2:
        node.outputs.append(gs.Variable(f"{node.name}/indices", dtype=np.int64))
    flat = np.array([-1], dtype=np.int64)
    idx = e.op("Reshape", [node.outputs[1], flat], hint="idx")
    values = e.op("Reshape", [signal, flat], hint="flat")
    half = e.dtype == np.float16
    if half:  # ORT's CPU ScatterElements cannot add in float16
        values = e.op("Cast", [values], {"to": onnx.TensorProto.FLOAT})
    size = e.op("Reshape", [e.op("Size", [a]), np.array([1], dtype=np.int64)], hint="size")
    zeros = e.op("Expand", [np.zeros((), np.float32) if half else e.scalar(0.0), size], hint="zeros")
    scattered = e.op("ScatterElements", [zeros, idx, values],
                     {"axis": 0, "reduction": "add"}, hint="scatter")
    if half:
        scattered = e.op("Cast", [scattered], {"to": onnx.TensorProto.FLOAT16})
    return e.op("Reshape", [scattered, e.op("Shape", [a])], hint="routed")


class MaxPoolEpsilon(MaxPoolRule):
    kinds = ("epsilon",)

    def check(self, node, facts, config):
        return None

    def describe(self, node, facts, config):
        return "epsilon (winner)"

    def emit(self, node, relevance, e, facts, config):
        s = epsilon_ratio(e, relevance, node.outputs[0], config.epsilon)
        return {0: e.scaled(node.inputs[0], route_to_winners(e, node, s))}


class MaxPoolGradient(MaxPoolEpsilon):
    kinds = ("gradient",)

    def describe(self, node, facts, config):
        return "gradient (winner)"

    def emit(self, node, grad, e, facts, config):
        return {0: route_to_winners(e, node, grad)}


RULES = [MaxPoolRule(), MaxPoolEpsilon(), MaxPoolGradient()]
