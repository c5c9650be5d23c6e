"""QuantizeLinear / DequantizeLinear: the quantized model's own ops, explained as deployed.

A QDQ model (onnxruntime.quantization, QDQ format) computes each activation as
``DQ(Q(x))``: rounded to the int8/uint8 grid and clamped to its range. The explainer keeps
those nodes in its forward pass, so its logits are the quantized model's, and its relevance
pass runs in float32 on the dequantized tensors (the activations the quantized model
actually computed; the weights as ``DQ(int8 W)``, which the rules read like any constant).

LRP and LRP-epsilon: relevance crosses Q and DQ unchanged (``R_in = R_out``; rounding
moves no relevance between positions). Gradient: the straight-through estimator through
rounding, masked where the clamp saturates: ``dDQ(Q(x))/dx = 1`` where
``qmin < x / scale + zero_point < qmax``, else 0. That mask is also the Relu the quantizer
removed: ``quantize_static`` folds a Relu into the Q that follows it by giving the uint8
grid its zero point 0 (int8: -128), so the clamp at the bottom of the range *is* the Relu,
and ``output_non_negative`` says so, as for the Relu it was.
"""

import numpy as np
import onnx

from .base import Rule, SignKeeping

_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
          np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767)}


def grid(node, facts):
    """(scale, zero point) of a Q or DQ node as arrays, or None where not constant."""
    scale = facts.const_value(node.inputs[1])
    if scale is None:
        return None
    if len(node.inputs) > 2 and not node.inputs[2].is_empty():
        zero = facts.const_value(node.inputs[2])
        return None if zero is None else (scale, zero)
    # no zero point: 0 of opset 21's output_dtype, uint8 by default
    dtype = onnx.helper.tensor_dtype_to_np_dtype(node.attrs.get("output_dtype", 0) or onnx.TensorProto.UINT8)
    return scale, np.zeros((), dtype)


def grid_problem(node, facts):
    """Why a Q/DQ cannot be explained here, or None."""
    found = grid(node, facts)
    if found is None:
        return "a scale or zero point computed at run time"
    if np.asarray(found[1]).dtype not in _RANGE:
        return (f"a {np.asarray(found[1]).dtype} grid (int4/uint4/float8 are not supported; "
                "quantize to int8/uint8 QDQ)")
    return None


def clamps_at_zero(node, facts) -> bool:
    """The Q (or the Q behind this DQ) maps everything below 0 to the grid's bottom: a
    per-tensor zero point at the lowest value of its type (the folded Relu)."""
    if node.op == "DequantizeLinear":
        producer = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
        if producer is None or producer.op != "QuantizeLinear":
            return False
        node = producer
    found = grid(node, facts)
    if found is None:
        return False
    scale, zero = found
    zero = np.asarray(zero)
    low = _RANGE.get(zero.dtype, (None, None))[0]
    return low is not None and bool(np.all(zero == low)) and bool(np.all(np.asarray(scale) > 0))


class QDQPass(SignKeeping, Rule):
    """Relevance crosses the rounding unchanged; the quantized tensor keeps the sign of the
    input, and is never negative where the grid starts at 0."""

    op_types = ("QuantizeLinear", "DequantizeLinear")
    families = ("lrp", "epsilon")
    role = "activation"

    def check(self, node, facts):
        return grid_problem(node, facts)

    def describe(self, node, facts):
        return "pass (recovered Relu)" if clamps_at_zero(node, facts) else "pass"

    @classmethod
    def output_non_negative(cls, node, facts) -> bool:
        return clamps_at_zero(node, facts) or super().output_non_negative(node, facts)

    def emit(self, node, relevance, e, facts):
        return {0: relevance}


class QDQGradient(QDQPass):
    """Straight through the rounding of a Q; zero where its clamp saturates. DQ is affine
    on the integers, so its gradient with respect to the float tensor behind the Q is the
    Q's (the pair is one fake-quantization step): DQ passes, Q masks."""

    families = ("gradient",)
    params = ("guided",)
    guided = False  # Guided Backprop: negative gradients stop at the recovered Relus too

    def describe(self, node, facts):
        relu = clamps_at_zero(node, facts)
        return ("guided " if relu and self.guided else "") + "straight-through gradient" + \
            (" (recovered Relu)" if relu else "")

    def emit(self, node, grad, e, facts):
        if node.op == "DequantizeLinear":
            return {0: grad}
        scale, zero = grid(node, facts)
        lo, hi = _RANGE[np.asarray(zero).dtype]
        axis = int(node.attrs.get("axis", 1))
        x = node.inputs[0]
        shape = []
        if np.asarray(scale).size > 1:  # per-channel along ``axis``: needs the rank
            shape = [1] * (1 + len(facts.static_shape(x, "the quantized tensor", node)))
            shape[axis] = -1
        scale = np.asarray(scale, np.float64).reshape(shape)
        zero = np.asarray(zero, np.float64).reshape(shape)
        low = e.const(((lo - zero) * scale).astype(e.dtype), "q_low")
        high = e.const(((hi - zero) * scale).astype(e.dtype), "q_high")
        inside = e.op("And", [e.op("Greater", [x, low]), e.op("Less", [x, high])], hint="unclamped")
        g = e.op("Where", [inside, grad, e.scalar(0.0)], hint="g_in")
        if self.guided and clamps_at_zero(node, facts):
            g = e.op("Relu", [g], hint="g_guided")
        return {0: g}


RULES = [QDQPass(), QDQGradient()]


def quantization(facts) -> dict | None:
    """What ``inspect`` says of a QDQ model: its Q/DQ counts and the Relus recovered from
    the grid (a zero-clamping Q of a tensor that can be negative: what the Relu removed by
    the quantizer did); None for a float model."""
    nodes = [n for n in facts.order if n.op in ("QuantizeLinear", "DequantizeLinear")]
    if not nodes:
        return None
    recovered = []
    for node in nodes:
        producer = node.inputs[0].inputs[0] if node.op == "QuantizeLinear" and node.inputs[0].inputs else None
        if producer is not None and not facts.non_negative(node.inputs[0]) and clamps_at_zero(node, facts):
            recovered.append((node.name, producer.name))
    return {"quantize": sum(n.op == "QuantizeLinear" for n in nodes),
            "dequantize": sum(n.op == "DequantizeLinear" for n in nodes), "recovered_relus": recovered}
