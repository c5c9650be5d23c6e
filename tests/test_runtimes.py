"""The portable explainer on other runtimes: onnxruntime-web (wasm, in Node), OpenVINO CPU
and onnx's reference evaluator agree with ORT CPU (tools/runtimes.py). ORT CPU is checked
against the PyTorch references elsewhere; here every runtime is held to it."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import image_batch
from lrpgraph import preset
from lrpgraph.driver import build_explainer
from runtimes import PORTABLE_OPS, compare

CONTROL_FLOW = {"If", "Loop", "Scan", "Optional", "OptionalHasElement", "OptionalGetElement", "SequenceConstruct"}


def square_strided_net(size=32, classes=10):
    """conv 3->8, a strided 8->8 3x3 conv (a square weight: the case OpenVINO's CPU plugin
    miscomputed while the ConvTranspose of its adjoint read the Conv's own weight), a strided
    1x1 projection skip, global pooling, a dense head."""
    rng = np.random.default_rng(3)
    weights = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.4, "b1": rng.standard_normal(8) * 0.1,
               "w2": rng.standard_normal((8, 8, 3, 3)) * 0.3, "b2": rng.standard_normal(8) * 0.1,
               "wp": rng.standard_normal((8, 8, 1, 1)) * 0.3, "wf": rng.standard_normal((classes, 8)) * 0.5,
               "bf": rng.standard_normal(classes) * 0.1}
    n = helper.make_node
    nodes = [n("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["a1"]),
             n("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]), n("Relu", ["c2"], ["a2"]),
             n("Conv", ["a1", "wp"], ["p"], strides=[2, 2]), n("Add", ["a2", "p"], ["s"]), n("Relu", ["s"], ["a3"]),
             n("GlobalAveragePool", ["a3"], ["g"]), n("Flatten", ["g"], ["f"]), n("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "square_strided",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds_for(x, target=-1):
    return {"input": x, "target": np.full(len(x), target, np.int64)}


def assert_agree(rows, tol=1e-4):
    assert [r["runtime"] for r in rows if "error" in r] == [], rows
    for r in rows:
        assert r["diff"]["relevance_map"] <= tol and r["diff"]["logits"] <= tol, r
        assert r["diff"]["target_used"] == 0, r


def test_default_explainer_is_portable(resnets):
    """No control flow, no Optional: ``target`` is a plain int64[N] input (-1: predicted),
    and every op is on the list the docs promise (docs/RUNTIMES.md)."""
    _, path = resnets["resnet18"]
    for method in ("lrp", "lrp-epsilon", "gradient", "gradcam", "ig"):
        explainer, _ = build_explainer(path, preset(method=method, hq_levels=8, ig_steps=2))
        ops = {node.op_type for node in explainer.graph.node}
        assert not ops & CONTROL_FLOW, (method, ops & CONTROL_FLOW)
        assert ops <= PORTABLE_OPS, (method, ops - PORTABLE_OPS)
        target = next(i for i in explainer.graph.input if i.name == "target")
        assert target.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param or d.dim_value for d in target.type.tensor_type.shape.dim] == ["N"]


def test_conv_transposes_have_weights_of_their_own(tmp_path):
    explainer, _ = build_explainer(square_strided_net(), preset("paper"))
    conv_weights = {node.input[1] for node in explainer.graph.node if node.op_type == "Conv"}
    transposed = [node for node in explainer.graph.node if node.op_type == "ConvTranspose"]
    assert transposed and not {node.input[1] for node in transposed} & conv_weights


@pytest.mark.parametrize("method", ["lrp", "lrp-epsilon", "gradient", "gradcam"])
def test_every_runtime_agrees_on_a_square_strided_net(method, tmp_path):
    explainer, _ = build_explainer(square_strided_net(), preset(method=method))
    path = tmp_path / "net.lrp.onnx"
    onnx.save(explainer, path)
    x = image_batch(3, size=32, seed=5)
    assert_agree(compare(path, feeds_for(x), ("web", "openvino", "reference"), rounds=0))
    # a chosen target crosses the plain input on every runtime too
    assert_agree(compare(path, feeds_for(x, 7), ("web", "openvino"), rounds=0))


def test_resnet18_explainer_agrees_on_web_and_openvino(resnets, tmp_path):
    _, path = resnets["resnet18"]
    explainer, _ = build_explainer(path, preset("paper"))
    out = tmp_path / "r18.lrp.onnx"
    onnx.save(explainer, out)
    assert_agree(compare(out, feeds_for(image_batch(2, seed=8)), ("web", "openvino"), rounds=0))


def test_a_quantized_net_agrees_on_every_runtime(tmp_path):
    """The weight copy also reaches a ConvTranspose whose square weight is a DequantizeLinear
    of int8 initializers (a QDQ model's), and Q/DQ run alike everywhere."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    onnx.save(square_strided_net(), tmp_path / "float.onnx")
    batches = iter([{"input": image_batch(1, size=32, seed=s)} for s in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "qdq.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True)
    explainer, _ = build_explainer(str(tmp_path / "qdq.onnx"), preset("paper"))
    transposed = [n for n in explainer.graph.node if n.op_type == "ConvTranspose"]
    conv_weights = {n.input[1] for n in explainer.graph.node if n.op_type == "Conv"}
    assert transposed and not {n.input[1] for n in transposed} & conv_weights
    onnx.save(explainer, tmp_path / "qdq.lrp.onnx")
    assert_agree(compare(tmp_path / "qdq.lrp.onnx", feeds_for(image_batch(3, size=32, seed=9)),
                         ("web", "openvino"), rounds=0))
