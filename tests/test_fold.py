"""Run-time shape arithmetic: a TF-style 'same' padding (Shape -> Gather -> ... -> Pad, as
the PyTorch ports of TensorFlow models write it) is folded before matching, and the
explainer matches a PyTorch re-derivation of the paper's rules on the padded convs. A
symbolic image size builds with --size; without it, one clear error."""

import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import reference
from conftest import rel_err, run

from lrpgraph import LrpGraphError, preset
from lrpgraph.cli import main
from lrpgraph.driver import build_explainer


def same_pads(x, conv):
    ih, iw = x.size()[-2:]
    (kh, kw), (sh, sw) = conv.weight.size()[-2:], conv.stride
    ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
    pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
    return [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]


class SameConv(nn.Conv2d):
    """EfficientNet-PyTorch's Conv2dDynamicSamePadding: pads computed from the input size."""

    def forward(self, x):
        return F.conv2d(F.pad(x, same_pads(x, self)), self.weight, self.bias, self.stride)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = SameConv(3, 8, 3, stride=2), SameConv(8, 8, 3, stride=2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.c2(F.relu(self.c1(x)))).mean((2, 3)))


def _export(path, symbolic):
    torch.manual_seed(0)
    net = Net().eval()
    axes = {0: "N", 2: "H", 3: "W"} if symbolic else {0: "N"}
    torch.onnx.export(net, (torch.randn(1, 3, 30, 30),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": axes})
    return net


def _crop(r, pads, like):
    left, _, top, _ = pads
    return r[:, :, top:top + like.shape[2], left:left + like.shape[3]]


def _reference(net, x):
    """The paper's rules on the padded convs (float64): w+ first layer, z+, the mean's
    z-rule, dense z+, from the target's probability."""
    x = torch.from_numpy(x).double()
    pads1 = same_pads(x, net.c1)
    p1 = F.pad(x, pads1)
    a1 = F.relu(reference._conv(net.c1, p1))
    pads2 = same_pads(a1, net.c2)
    p2 = F.pad(a1, pads2)
    a2 = F.relu(reference._conv(net.c2, p2))
    m = a2.mean((2, 3))
    p = torch.softmax(m @ net.fc.weight.double().T + net.fc.bias.double(), 1)
    r = torch.zeros_like(p)
    rows, t = torch.arange(len(p)), p.argmax(1)
    r[rows, t] = p[rows, t]
    r = reference.gap_z(a2, reference.linear_zplus(net.fc, m, r))
    r = _crop(reference.conv_zplus(net.c2, p2, r), pads2, a1)
    return _crop(reference.conv_zplus(net.c1, p1, r, ones=True), pads1, x).detach().numpy()


def test_same_padding_computed_at_run_time_is_folded_and_explained(tmp_path):
    net = _export(tmp_path / "same.onnx", symbolic=False)
    ops = {n.op_type for n in onnx.load(tmp_path / "same.onnx").graph.node}
    assert {"Shape", "Gather", "Pad"} <= ops  # the arithmetic is there to fold
    explainer, report = build_explainer(str(tmp_path / "same.onnx"), preset("paper", full_relevance=True))
    assert {op for _, op, _ in report.rules} == {"Gemm", "ReduceMean", "Relu", "Conv", "Pad"}
    x = np.random.default_rng(0).standard_normal((3, 3, 30, 30)).astype(np.float32)
    out = run(explainer, {"input": x})
    with torch.no_grad():
        assert rel_err(out["logits"], net(torch.from_numpy(x)).numpy()) < 1e-5
    assert rel_err(out["relevance"], _reference(net, x)) < 1e-4


def test_symbolic_size_needs_size_and_builds_with_it(tmp_path):
    _export(tmp_path / "sym.onnx", symbolic=True)
    with pytest.raises(LrpGraphError, match=r"--size H W"):
        build_explainer(str(tmp_path / "sym.onnx"))
    net = _export(tmp_path / "static.onnx", symbolic=False)
    sized, _ = build_explainer(str(tmp_path / "sym.onnx"), preset("paper", full_relevance=True), size=(30, 30))
    x = np.random.default_rng(1).standard_normal((2, 3, 30, 30)).astype(np.float32)
    assert rel_err(run(sized, {"input": x})["relevance"], _reference(net, x)) < 1e-4
    assert main(["build", str(tmp_path / "sym.onnx"), "-o", str(tmp_path / "sym.lrp.onnx"), "--size", "30"]) == 0
    assert main(["build", str(tmp_path / "sym.onnx"), "-o", str(tmp_path / "bad.lrp.onnx"), "--size", "30", "31"]) == 2
    assert not (tmp_path / "bad.lrp.onnx").exists()


def _batch_shaped_model():
    """Reshapes to [N * 4, ...] (a window partition) and back, a token expanded to [N, 1, C]
    (a class token), their shapes computed from the batch at run time; and a float scale
    read off a shape, which does not depend on the batch."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 2, 4, 4] x) => (float[N, 5, 8] y) <float[1, 1, 8] tok>
    {
        s = Shape (x)
        n = Gather <axis = 0> (s, zero)
        nw = Mul (n, four)
        shape = Concat <axis = 0> (nw, rest)
        w = Reshape (x, shape)
        back = Concat <axis = 0> (n, tail)
        t = Reshape (w, back)
        c = Gather <axis = 0> (s, three)
        cf = Cast <to = 1> (c)
        scale = Sqrt (cf)
        ts = Mul (t, scale)
        eshape = Concat <axis = 0> (n, ones)
        ex = Expand (tok, eshape)
        y = Concat <axis = 1> (ex, ts)
    }
    """
    m = onnx.parser.parse_model(text)
    ints = {"zero": [0], "four": [4], "rest": [2, 2, 2], "tail": [4, 8], "three": [3], "ones": [1, 1]}
    for name, value in ints.items():
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(value, np.int64), name))
    tok = np.random.default_rng(0).standard_normal((1, 1, 8)).astype(np.float32)
    m.graph.initializer.append(onnx.numpy_helper.from_array(tok, "tok"))
    return m


def test_batch_dependent_shapes_become_the_batch_times_constants():
    import onnxruntime as ort

    from lrpgraph.load import canonicalise

    original = _batch_shaped_model()
    folded = canonicalise(original)
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in list(folded.graph.value_info) + list(folded.graph.output)}
    assert shapes["y"][1:] == [5, 8] and shapes["w"][1:] == [2, 2, 2] and shapes["ex"][1:] == [1, 8]
    assert isinstance(shapes["y"][0], str)  # the batch stays free
    assert not {"Sqrt", "Where", "Cast"} & {n.op_type for n in folded.graph.node}  # the scale is a constant now
    for batch in (1, 2, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 4, 4)).astype(np.float32)
        got, ref = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                    .run(None, {"x": x})[0] for m in (folded, original))
        np.testing.assert_array_equal(got, ref)
