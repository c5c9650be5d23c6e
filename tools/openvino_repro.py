"""Minimal reproduction of an OpenVINO CPU bug met by lrpgraph's explainers: a
ConvTranspose whose weight tensor (square, C x C x k x k) is also read by a Conv computes
wrong numbers on the CPU plugin: it computes ConvTranspose(s, W with its first two axes
swapped), as if it read the Conv's layout (a square weight has the same shape either way).
The same graph with a copy of the weight is right; ONNX Runtime and onnx's reference
evaluator agree on both.

    python tools/openvino_repro.py        # prints one line per case; exit 1 if OpenVINO errs

Why it matters: the adjoint of a strided conv is a ConvTranspose with the conv's own
weight (LRP's z+ uses Relu(W) for both), so lrpgraph gives each ConvTranspose a copy of
its weight (rules/conv.py); this script shows what happens without that copy.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator


def model(c_out: int, c_in: int, shared: bool) -> onnx.ModelProto:
    """y = ConvTranspose(Conv(x, W), W or a copy of W); 3x3, stride 2, pads 1."""
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}
    w = np.random.default_rng(0).standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    if not shared:
        inits.append(numpy_helper.from_array(w.copy(), "W_copy"))
    nodes = [helper.make_node("Conv", ["x", "W"], ["s"], **attrs),
             helper.make_node("ConvTranspose", ["s", "W" if shared else "W_copy"], ["y"], output_padding=[1, 1], **attrs)]
    graph = helper.make_graph(nodes, "repro", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, c_in, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def main() -> int:
    import onnxruntime as ort
    import openvino as ov

    core = ov.Core()
    print(f"openvino {ov.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}")
    wrong = False
    for c_out, c_in, shared in [(8, 8, True), (8, 8, False), (4, 8, True), (8, 4, True)]:
        m = model(c_out, c_in, shared)
        x = np.random.default_rng(1).standard_normal((2, c_in, 8, 8)).astype(np.float32)
        ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
        got_ort = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got_ov = core.compile_model(core.read_model(model=m.SerializeToString()), "CPU")({"x": x})[0]
        err = {k: float(np.abs(v - ref).max() / np.abs(ref).max()) for k, v in (("ort", got_ort), ("openvino", got_ov))}
        bad = err["openvino"] > 1e-4
        wrong |= bad
        print(f"W {c_out}x{c_in}x3x3, ConvTranspose reads {'the same W' if shared else 'a copy of W'}: "
              f"max rel err vs onnx reference: ORT {err['ort']:.1e}, OpenVINO {err['openvino']:.1e}"
              + ("   <- wrong" if bad else ""))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
