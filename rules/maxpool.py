"""MaxPool, two ways (SPEC.md section 1).

:class:`MaxPoolAvg2x2` (paper preset; the authors' code): propagate as if the layer were a
2x2 average pool with stride 2 and no padding, with the z-rule

    R_in = a * up2(R_out / (avgpool2(a) + eps)) / 4

It does not conserve where a 2x2 window is all zero while the real 3x3 max window was not;
``--conservation`` reports that loss.

:class:`MaxPoolWinner`: all relevance goes to the arg-max of each window; where windows
overlap (3x3 stride 2), a position that wins several windows receives the sum. The forward
MaxPool is asked for its Indices output (flat over N*C*H*W), and ScatterElements with
reduction=add sums per position (MaxUnpool would overwrite). Conserves exactly.

LRP-epsilon routes ``R / (z + eps*sign(z))`` to the winners and multiplies by ``a``
(captum's EpsilonRule on a max pool); the gradient routes ``G`` to the winners.
"""

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .base import Rule, SignKeeping
from .linear import EpsilonParam, epsilon_ratio


class MaxPoolAvg2x2(SignKeeping, Rule):
    op_types = ("MaxPool",)
    params = ("eps",)
    eps = 1e-5
    absorbs = ("the paper's 2x2-average stand-in: a 2x2 window of zeros inside a 3x3 max "
               "window that was not")

    def check(self, node, facts):
        try:
            c_in = facts.static_shape(node.inputs[0], "the input", node)
            c_out = facts.static_shape(node.outputs[0], "the output", node)
        except Exception as exc:
            return str(exc)
        if len(c_in) != 3 or [2 * d for d in c_out[1:]] != list(c_in[1:]):
            return (f"the 2x2-average stand-in needs the output {c_out} to be the input "
                    f"{c_in} halved; build with --maxpool winner")
        return None

    def describe(self, node, facts):
        return "as 2x2 average (paper)"

    def emit(self, node, relevance, e, facts):
        a = node.inputs[0]
        avg = e.op("AveragePool", [a], {"kernel_shape": [2, 2], "strides": [2, 2]}, hint="avg")
        s = e.op("Mul", [e.stabilised_ratio(relevance, avg, self.eps), e.scalar(0.25)], hint="s4")
        # asymmetric + floor: for a scale of 2 the same copies as the defaults, and a
        # faster kernel in ORT's CPU Resize (ResNet50's stem, batch 8: 5.1 -> 3.5 ms)
        up = e.op("Resize", [s, None, np.array([1, 1, 2, 2], dtype=np.float32)],
                  {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                   "nearest_mode": "floor"}, hint="up")
        e.annotate(up, a)  # check() made the input exactly twice the output
        return {0: e.scaled(a, up)}


class MaxPoolWinner(MaxPoolAvg2x2):
    params = ()
    absorbs = None

    def check(self, node, facts):
        return None

    def describe(self, node, facts):
        return "winner takes all"

    def emit(self, node, relevance, e, facts):
        return {0: route_to_winners(e, node, relevance)}


def route_to_winners(e, node, signal):
    """Each output position's ``signal`` added to its window's arg-max input position.
    The indices are flat over one forward pass (N*C*H*W); a stacked signal (several
    targets) is scattered per target, one row of K."""
    a = node.inputs[0]
    if len(node.outputs) < 2:
        node.outputs.append(gs.Variable(f"{node.name}/indices", dtype=np.int64))
    rows = e.targets if e.is_stacked(signal) else 1
    flat = np.array([rows, -1] if rows > 1 else [-1], dtype=np.int64)
    idx = e.op("Reshape", [node.outputs[1], np.array([1, -1] if rows > 1 else [-1], np.int64)], hint="idx")
    values = e.op("Reshape", [signal, flat], hint="flat")
    half = e.dtype == np.float16
    if half:  # ORT's CPU ScatterElements cannot add in float16
        values = e.op("Cast", [values], {"to": onnx.TensorProto.FLOAT})
    size = e.op("Reshape", [e.op("Size", [a]), np.array([1], dtype=np.int64)], hint="size")
    if rows > 1:
        size = e.op("Concat", [np.array([rows], np.int64), size], {"axis": 0}, hint="size_rows")
        idx = e.op("Expand", [idx, np.array([rows, 1], np.int64)], hint="idx_rows")
    zeros = e.op("Expand", [np.zeros((), np.float32) if half else e.scalar(0.0), size], hint="zeros")
    scattered = e.op("ScatterElements", [zeros, idx, values],
                     {"axis": len(flat) - 1, "reduction": "add"}, hint="scatter")
    if half:
        scattered = e.op("Cast", [scattered], {"to": onnx.TensorProto.FLOAT16})
    return e.op("Reshape", [scattered, e.op("Shape", [a])], hint="routed")


class MaxPoolEpsilon(EpsilonParam, MaxPoolWinner):

    def describe(self, node, facts):
        return "epsilon (winner)"

    def emit(self, node, relevance, e, facts):
        s = epsilon_ratio(e, relevance, node.outputs[0], self.epsilon)
        return {0: e.scaled(node.inputs[0], route_to_winners(e, node, s))}


class MaxPoolGradient(MaxPoolWinner):
    families = ("gradient",)

    def describe(self, node, facts):
        return "gradient (winner)"

    def emit(self, node, grad, e, facts):
        return {0: route_to_winners(e, node, grad)}


# MaxPoolWinner serves no family by default: composites name it (--maxpool winner).
RULES = [MaxPoolAvg2x2(), MaxPoolEpsilon(), MaxPoolGradient()]
