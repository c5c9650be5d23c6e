import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from tiny import EPS, assert_close, explain, head_relevance, model

from lrpgraph import preset
from lrpgraph.driver import build_explainer


def torch_zplus(x, w, r, stride, pad, dil, groups, ones):
    """z+ / w+ via autograd: the transposed product is the gradient of z, not ConvTranspose."""
    wp = torch.from_numpy(w).double().clamp(min=0)
    a = torch.from_numpy(x).double()
    inp = (torch.ones_like(a) if ones else a.clone()).requires_grad_(True)
    z = F.conv2d(inp, wp, None, stride, pad, dil, groups)
    (c,) = torch.autograd.grad(z, inp, torch.from_numpy(r) / (z.detach() + EPS))
    return (c if ones else a * c).numpy()


CASES = [  # size, channels out, kernel, stride, pads, dilation, group
    (8, 4, 3, 2, 1, 1, 1),   # ResNet's stride-2 3x3: ConvTranspose needs output_padding 1
    (9, 4, 3, 2, 1, 1, 1),
    (8, 6, 1, 2, 0, 1, 1),   # projection skip 1x1 stride 2
    (8, 4, 3, 1, 2, 2, 1),   # dilated
    (8, 6, 3, 1, 1, 1, 3),   # grouped
    (8, 6, 3, 2, 1, 1, 6),   # depthwise (EfficientNet)
    (8, 6, 5, 2, 2, 1, 6),   # depthwise 5x5
    (9, 6, 3, 2, 1, 1, 6),   # depthwise on an odd size
    (9, 6, 3, 2, 2, 2, 6),   # dilated strided depthwise
    (8, 6, 1, 2, 1, 1, 6),   # pads wider than the kernel: the plain ConvTranspose
    (9, 6, 1, 3, 0, 1, 2),   # grouped 1x1, stride 3: zeros inserted after the conv
    (8, 4, 7, 2, 3, 1, 1),   # ResNet's first conv
]


@pytest.mark.parametrize("first_layer", ["zplus", "ones"])
@pytest.mark.parametrize("size,cout,k,stride,pad,dil,group", CASES)
def test_conv_rule_matches_autograd_reference(size, cout, k, stride, pad, dil, group, first_layer):
    cin = 6
    rng = np.random.default_rng(size + cout + k + stride + group)
    w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
    body = (f"h = Conv <strides = [{stride}, {stride}], pads = [{pad}, {pad}, {pad}, {pad}], "
            f"dilations = [{dil}, {dil}], group = {group}> (x, w)")
    hs = F.conv2d(torch.zeros(1, cin, size, size), torch.from_numpy(w), None, stride, pad, dil, group).shape[1:]
    m, fw = model(body, (cin, size, size), tuple(hs), {"w": w})
    x = rng.random((2, cin, size, size)).astype(np.float32)  # z+ assumes a >= 0
    out, report = explain(m, x, first_layer=first_layer)
    h = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, stride, pad, dil, group).numpy()
    ref = torch_zplus(x, w, head_relevance(h, fw), stride, pad, dil, group, first_layer == "ones")
    assert_close(out["relevance"], ref)
    # The image may be negative as far as the graph knows: z+ takes its signed form, which
    # is the plain z+ on this non-negative x.
    assert [r for _, op, r in report.rules if op == "Conv"] == [
        "w+ (ones input, first layer)" if first_layer == "ones" else "z+ (signed input: a+W+ + a-W-)"]


def test_strided_depthwise_with_asymmetric_pads():
    """EfficientNet's static 'same' padding: a stride-2 depthwise 5x5 with pads 1 before,
    2 after."""
    w = np.random.default_rng(0).standard_normal((16, 1, 5, 5)).astype(np.float32)
    body = "a = Relu (x)\n        h = Conv <strides = [2, 2], pads = [1, 1, 2, 2], group = 16> (a, w)"
    m, fw = model(body, (16, 8, 8), (16, 4, 4), {"w": w})
    x = np.random.default_rng(1).standard_normal((2, 16, 8, 8)).astype(np.float32)
    ap = np.pad(np.maximum(x, 0), ((0, 0), (0, 0), (1, 2), (1, 2)))
    h = F.conv2d(torch.from_numpy(ap), torch.from_numpy(w), None, 2, 0, 1, 16).numpy()
    ref = torch_zplus(ap, w, head_relevance(h, fw), 2, 0, 1, 16, False)[:, :, 1:9, 1:9]
    out, _ = explain(m, x, first_layer="zplus")
    assert_close(out["relevance"], ref)


def test_signed_input_takes_both_positive_contributions():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    m, fw = model("h = Conv <strides = [2, 2], pads = [1, 1, 1, 1]> (x, w)", (3, 8, 8), (4, 4, 4), {"w": w})
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    out, _ = explain(m, x, first_layer="zplus", conservation=True)
    h = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, 2, 1).numpy()
    r = torch.from_numpy(head_relevance(h, fw))
    wt = torch.from_numpy(w).double()
    ap = torch.from_numpy(x).double().clamp(min=0).requires_grad_(True)
    an = torch.from_numpy(x).double().clamp(max=0).requires_grad_(True)
    z = F.conv2d(ap, wt.clamp(min=0), None, 2, 1) + F.conv2d(an, wt.clamp(max=0), None, 2, 1)
    cp, cn = torch.autograd.grad(z, [ap, an], r / (z.detach() + EPS))
    ref = (ap * cp + an * cn).detach().numpy()
    assert_close(out["relevance"], ref)
    assert (z.detach() >= 0).all()
    conv = [k for k in out if k.startswith("relsum/") and "Conv" in k and k.endswith("/out")][0]
    np.testing.assert_allclose(out[conv[:-3] + "in"], out[conv], rtol=1e-4)


def test_auto_pad_same_upper():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    m, fw = model("h = Conv <strides = [2, 2], auto_pad = \"SAME_UPPER\"> (x, w)", (3, 8, 8), (4, 4, 4), {"w": w})
    x = rng.random((2, 3, 8, 8)).astype(np.float32)
    out, _ = explain(m, x, first_layer="zplus")
    # SAME_UPPER on 8 with k=3, s=2: total pad 1, all of it at the end.
    xp = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)))
    h = F.conv2d(torch.from_numpy(xp), torch.from_numpy(w), None, 2).numpy()
    ref = torch_zplus(xp, w, head_relevance(h, fw), 2, 0, 1, 1, False)[:, :, :8, :8]
    assert_close(out["relevance"], ref)


def test_conservation_of_zplus():
    rng = np.random.default_rng(2)
    w = np.abs(rng.standard_normal((4, 3, 3, 3))).astype(np.float32)
    m, _ = model("h = Conv <strides = [2, 2], pads = [1, 1, 1, 1]> (x, w)", (3, 8, 8), (4, 4, 4), {"w": w})
    x = rng.random((2, 3, 8, 8)).astype(np.float32) + 0.1
    out, _ = explain(m, x, first_layer="zplus", conservation=True)
    conv = [k for k in out if k.startswith("relsum/") and "Conv" in k and k.endswith("/out")][0]
    np.testing.assert_allclose(out[conv[:-3] + "in"], out[conv], rtol=1e-4)


@pytest.mark.parametrize("k,pad,group,transposes", [
    (3, 1, 6, [("zeros", 1, 1)]),  # strided depthwise: zeros in, then a stride-1 Conv
    (5, 2, 6, [("zeros", 1, 1)]),
    (1, 0, 1, [("zeros", 1, 1)]),  # projection skip: stride-1 Conv, then zeros in
    (3, 1, 1, [("w+", 3, 3)]),     # dense strided 3x3 keeps its ConvTranspose
])
def test_strided_transposes_avoid_per_channel_convtranspose(k, pad, group, transposes):
    """ORT's ConvTranspose runs a depthwise kernel one channel at a time (EfficientNet-Lite0:
    11.4 ms where the forward conv takes 2-3); the strided adjoints are built so that the
    only ConvTransposes left insert zeros (1x1 kernels of ones, one per channel), except for
    a dense kxk kernel (see adjoint)."""
    w = np.random.default_rng(k).standard_normal((6, 6 // group, k, k)).astype(np.float32)
    body = (f"a = Relu (x)\n        h = Conv <strides = [2, 2], pads = [{pad}, {pad}, {pad}, {pad}], "
            f"group = {group}> (a, w)")
    hs = F.conv2d(torch.zeros(1, 6, 8, 8), torch.from_numpy(w), None, 2, pad, 1, group).shape[1:]
    m, _ = model(body, (6, 8, 8), tuple(hs), {"w": w})
    explainer, _ = build_explainer(m, preset("paper", first_layer="zplus", composite="paper"))
    init = {t.name: onnx.numpy_helper.to_array(t) for t in explainer.graph.initializer}
    found = []
    for n in explainer.graph.node:
        if n.op_type != "ConvTranspose":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        kernel = init.get(n.input[1])  # None: W+, computed from the weight
        ones = kernel is not None and kernel.shape == (6, 1, 1, 1) and (kernel == 1).all()
        what = "zeros" if ones and attrs.get("group") == 6 else "w+"
        found.append((what, *(kernel.shape[2:] if kernel is not None else attrs["kernel_shape"])))
    assert found == transposes


def test_conserving_composite_sends_what_z_plus_cannot_by_w_squared():
    """A depthwise 3x3 after a Relu: where every positive weight of a window sees a 0, z+
    is 0 and the paper's rule loses the relevance; the conserving composite sends it by
    the w^2 rule there (re-derived with autograd) and keeps all of it."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    body = "a = Relu (x)\n        h = Conv <pads = [1, 1, 1, 1], group = 6> (a, w)"
    m, fw = model(body, (6, 6, 6), (6, 6, 6), {"w": w})
    x = (rng.standard_normal((2, 6, 6, 6)) - 0.8).astype(np.float32)  # mostly zeros after the Relu
    out, report = explain(m, x, composite="conserving", first_layer="zplus", conservation=True)
    assert "w^2 where z+ vanishes" in [n for _, op, n in report.rules if op == "Conv"][0]
    a = torch.from_numpy(np.maximum(x, 0)).double().requires_grad_(True)
    wt = torch.from_numpy(w).double()
    z = F.conv2d(a, wt.clamp(min=0), None, 1, 1, 1, 6)
    r = torch.from_numpy(head_relevance(F.conv2d(a, wt, None, 1, 1, 1, 6).detach().numpy(), fw))
    dead = (z + EPS) < 2 * EPS
    assert dead.any() and (r[dead] != 0).any()  # the case under test occurs
    (c,) = torch.autograd.grad(z, a, torch.where(dead, 0.0, r / (z.detach() + EPS)))
    ones = torch.ones_like(a).requires_grad_(True)
    z2 = F.conv2d(ones, wt ** 2, None, 1, 1, 1, 6)
    (c2,) = torch.autograd.grad(z2, ones, torch.where(dead, r, 0.0) / z2.detach())
    ref = (a * c + c2).detach().numpy()
    assert_close(out["relevance"], ref)
    kept = out["relsum/input"] / r.sum((1, 2, 3)).numpy()
    paper, _ = explain(m, x, first_layer="zplus", conservation=True)
    lost = paper["relsum/input"] / r.sum((1, 2, 3)).numpy()
    assert (kept > 0.999).all() and (lost < kept - 0.01).all(), (kept, lost)
