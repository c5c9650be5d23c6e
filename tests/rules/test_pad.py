"""Pad (constant 0): relevance cropped back to the input, the sign facts Pad keeps, what it
refuses, and its gradient."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from test_conv import torch_zplus
from tiny import assert_close, explain, head_relevance, model

from lrpgraph import UnsupportedOpsError, preset
from lrpgraph.driver import build_explainer

PADS = (0, 0, 1, 2, 0, 0, 2, 1)  # ONNX order: begins of N, C, H, W, then ends


def _padded_conv(pads=PADS, pad_value=None, relu=True):
    """x -> Relu (or Identity) -> Pad -> Conv(w) -> h, the pads (and value) as Constants."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    value = f"\n        v = Constant <value = float {{{pad_value}}}> ()" if pad_value is not None else ""
    body = f"""a = {'Relu' if relu else 'Identity'} (x)
        pads = Constant <value = int64[8] {{{', '.join(map(str, pads))}}}> (){value}
        p = Pad (a, pads{', v' if value else ''})
        h = Conv (p, w)"""
    height, width = 6 + pads[2] + pads[6] - 2, 6 + pads[3] + pads[7] - 2
    m, fw = model(body, (3, 6, 6), (4, height, width), {"w": w})
    return m, fw, w


def test_pad_crops_relevance_back_to_the_input():
    m, fw, w = _padded_conv()
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    out, report = explain(m, x, first_layer="zplus")
    p = np.pad(np.maximum(x, 0), ((0, 0), (0, 0), (1, 2), (2, 1)))
    h = F.conv2d(torch.from_numpy(p), torch.from_numpy(w)).numpy()
    ref = torch_zplus(p, w, head_relevance(h, fw), 1, 0, 1, 1, False)[:, :, 1:7, 2:8]
    assert_close(out["relevance"], ref)
    # the zero border got no relevance, so cropping it away conserved everything
    np.testing.assert_allclose(out["relevance"].sum((1, 2, 3)), ref.sum((1, 2, 3)), rtol=1e-5)
    # Pad keeps Relu's sign: the conv after it gets the plain z+, not the signed form
    assert [r for _, op, r in report.rules if op == "Conv"] == ["z+"]


def test_negative_pads_crop_and_the_relevance_is_zero_padded_back():
    m, fw, w = _padded_conv(pads=(0, 0, -1, 0, 0, 0, 0, -1))
    x = np.random.default_rng(2).random((2, 3, 6, 6)).astype(np.float32)
    out, _ = explain(m, x, first_layer="zplus")
    p = x[:, :, 1:, :5]
    h = F.conv2d(torch.from_numpy(p), torch.from_numpy(w)).numpy()
    ref = np.zeros_like(x, dtype=np.float64)
    ref[:, :, 1:, :5] = torch_zplus(p, w, head_relevance(h, fw), 1, 0, 1, 1, False)
    assert_close(out["relevance"], ref)


def test_pad_of_a_signed_tensor_is_signed():
    m, _, _ = _padded_conv(relu=False)
    _, report = build_explainer(m, preset("paper", first_layer="zplus"))
    assert [r for _, op, r in report.rules if op == "Conv"] == ["z+ (signed input: a+W+ + a-W-)"]


def test_nonzero_pad_value_and_reflect_are_refused_with_a_reason():
    m, _, _ = _padded_conv(pad_value=-1.0)
    with pytest.raises(UnsupportedOpsError, match="pad value other than 0"):
        build_explainer(m, preset("paper"))
    m, _, _ = _padded_conv()
    next(n for n in m.graph.node if n.op_type == "Pad").attribute.append(
        onnx.helper.make_attribute("mode", "reflect"))
    with pytest.raises(UnsupportedOpsError, match="mode=reflect"):
        build_explainer(m, preset("paper"))


def test_pad_gradient_matches_autograd():
    m, fw, w = _padded_conv()
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    out, _ = explain(m, x, method="gradxinput")
    xt = torch.from_numpy(x).double().requires_grad_(True)
    h = F.conv2d(F.pad(torch.relu(xt), (2, 1, 1, 2)), torch.from_numpy(w).double())
    y = h.flatten(1) @ torch.from_numpy(fw).double().T
    y[torch.arange(2), torch.from_numpy(out["target_used"])].sum().backward()
    assert_close(out["relevance"], (xt.grad * xt).detach().numpy())
