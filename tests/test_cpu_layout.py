"""lrpgraph.cpu_layout: elementwise ops moved into ORT's blocked (NCHWc) layout give ORT's
own numbers, move only where every channel block is whole, and leave fewer reorders."""

import collections
import tempfile
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import image_batch
from lrpgraph import cpu_layout, preset
from lrpgraph.cpu_layout import block_size, cpu_session, move_elementwise
from lrpgraph.driver import build_explainer

pytestmark = pytest.mark.skipif(block_size() == 0, reason="ORT uses no NCHWc layout on this CPU")


def plain(model_bytes):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def counts(model):
    return collections.Counter(n.op_type for n in model.graph.node if n.op_type.startswith("Reorder"))


def plain_divs(model):
    """Divs of two image-dependent tensors reading one made by a reorder out of the blocked
    layout (the first layer's z, a constant batch of one, is broadcast: that Div stays)."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "Div" and all(i in made_by for i in n.input)
            and any(made_by[i].op_type == "ReorderOutput" for i in n.input)]


def test_resnet_explainer_same_numbers_far_fewer_reorders(resnets):
    _, path = resnets["resnet18"]
    explainer, _ = build_explainer(path, preset("paper"))
    data = explainer.SerializeToString()
    with tempfile.TemporaryDirectory() as d:
        opt = cpu_layout._optimized_nodes(data, d)
        before, divs_before = counts(opt), plain_divs(opt)
        moved = move_elementwise(opt, cpu_layout._shapes(explainer), block_size())
    after = counts(opt)
    assert divs_before and not plain_divs(opt)
    assert moved >= len(divs_before)
    assert after["ReorderOutput"] + after["ReorderInput"] < (before["ReorderOutput"] + before["ReorderInput"]) / 3

    x = image_batch(3, seed=4)
    target = np.array([1, 500, 999], np.int64)
    ours, orts = cpu_session(data), plain(data)
    for feeds in ({"input": x, "target": np.full(3, -1, np.int64)}, {"input": x, "target": target}):
        got, want = ours.run(None, feeds), orts.run(None, feeds)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6 * np.abs(w).max())
    assert ours.get_modelmeta().custom_metadata_map == orts.get_modelmeta().custom_metadata_map


def ratio_net(channels):
    """z = Conv(x) + 1 > 0 and a = Conv(x); out = Conv(a / z) and |a - z|: a Div between
    two blocked conv outputs, as at every LRP conv, and a conv reading its result."""
    rng = np.random.default_rng(0)
    w_a = rng.standard_normal((channels, 16, 3, 3)).astype(np.float32)
    w_z = np.abs(rng.standard_normal((channels, 16, 1, 1))).astype(np.float32)
    w_out = rng.standard_normal((16, channels, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Relu", ["x"], ["xp"]),
        helper.make_node("Conv", ["x", "w_a"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["xp", "w_z", "one"], ["z"]),
        helper.make_node("Div", ["a", "z"], ["s"]),
        helper.make_node("Conv", ["s", "w_out"], ["out"]),
        helper.make_node("Sub", ["a", "z"], ["d"]),
        helper.make_node("Abs", ["d"], ["gap"]),
    ]
    inits = [numpy_helper.from_array(w_a, "w_a"), numpy_helper.from_array(w_z, "w_z"),
             numpy_helper.from_array(w_out, "w_out"),
             numpy_helper.from_array(np.ones(channels, np.float32), "one")]
    graph = helper.make_graph(nodes, "ratio", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("gap", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("blocks", [1.0, 2.0, 1.25, 2.5])
def test_moves_only_whole_blocks(blocks):
    """With a partial block ORT pads z's channels with 0; a Div moved there would give
    0 / 0 = NaN and the next conv's sum would carry it into every output channel."""
    channels = int(blocks * block_size())
    model = ratio_net(channels)
    with tempfile.TemporaryDirectory() as d:
        opt = cpu_layout._optimized_nodes(model.SerializeToString(), d)
        moved = move_elementwise(opt, cpu_layout._shapes(model), block_size())
    assert moved == (3 if blocks.is_integer() else 0)

    x = np.random.default_rng(1).standard_normal((2, 16, 8, 8)).astype(np.float32)
    got = cpu_session(model.SerializeToString()).run(None, {"x": x})
    want = plain(model.SerializeToString()).run(None, {"x": x})
    for g, w in zip(got, want):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6 * np.abs(w).max())


def test_nothing_moves_in_a_plain_forward(resnets):
    """ORT already runs a ResNet's forward wholly in its layout: the pass finds nothing."""
    _, path = resnets["resnet18"]
    with tempfile.TemporaryDirectory() as d:
        opt = cpu_layout._optimized_nodes(path, d)
        assert move_elementwise(opt, cpu_layout._shapes(onnx.load(path)), block_size()) == 0


@pytest.mark.parametrize("step, error", [
    ("move_elementwise", ValueError("unexpected graph")),
    ("_optimized_nodes", OSError(28, "No space left on device")),  # ORT saving to a full disk
])
def test_a_failing_step_warns_and_keeps_orts_layout(monkeypatch, step, error):
    model = ratio_net(block_size()).SerializeToString()

    def failing(*args):
        raise error

    monkeypatch.setattr(cpu_layout, step, failing)
    with pytest.warns(UserWarning, match=f"keeping ORT's CPU layout .*{error.args[-1]}"):
        sess = cpu_session(model)
    x = np.ones((1, 16, 8, 8), np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], plain(model).run(None, {"x": x})[0])


def test_a_model_ort_cannot_load_fails_once_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Exception, match="(?i)protobuf|parse|load"):
            cpu_session(b"not an onnx model")

