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
