"""QuantizeLinear / DequantizeLinear (rules/qdq.py) on a tiny QDQ model as onnxruntime's
quantizer writes them: uint8 activations (zero point 0 after the convs: the Relus it removed),
per-channel int8 weights behind DequantizeLinear. Checked against a NumPy/PyTorch
re-derivation: the quantized forward computed by hand, the paper's rules on the dequantized
weights and activations, and autograd through torch's fake quantization (straight-through,
masked where the clamp saturates)."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from conftest import exact_session
from tiny import CLASSES, assert_close, explain, head_relevance

S_X, S_1, S_2 = 1 / 255, 0.02, 0.03  # the grids of the input and the two conv outputs


def _qdq_model(seed=0, z1=np.uint8(0)):
    rng = np.random.default_rng(seed)
    # 7-bit weights, as quantize_static(reduce_range=True) makes them: ORT's u8s8 conv kernel
    # without VNNI sums pairs of u8*s8 products in int16, which saturates for full-range int8
    # weights (on this CPU a1 came out up to 14 grid steps off the QDQ semantics)
    w1 = rng.integers(-63, 64, (4, 3, 3, 3)).astype(np.int8)
    w2 = rng.integers(-63, 64, (6, 4, 3, 3)).astype(np.int8)
    s1 = (rng.random(4) * 0.004 + 0.001).astype(np.float32)
    s2 = (rng.random(6) * 0.004 + 0.001).astype(np.float32)
    fw = rng.standard_normal((CLASSES, 6 * 4 * 4)).astype(np.float32)
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 8, 8] x) => (float[N, {CLASSES}] y)
      <int8[4, 3, 3, 3] w1q, float[4] w1s, int8[4] w1z, int8[6, 4, 3, 3] w2q, float[6] w2s, int8[6] w2z,
       float[{CLASSES}, 96] fw, float sx, uint8 zx, float s1, {np.asarray(z1).dtype} z1, float s2, uint8 z2> {{
        xq = QuantizeLinear (x, sx, zx)
        xd = DequantizeLinear (xq, sx, zx)
        w1 = DequantizeLinear <axis = 0> (w1q, w1s, w1z)
        c1 = Conv <pads = [1, 1, 1, 1]> (xd, w1)
        q1 = QuantizeLinear (c1, s1, z1)
        a1 = DequantizeLinear (q1, s1, z1)
        w2 = DequantizeLinear <axis = 0> (w2q, w2s, w2z)
        c2 = Conv <strides = [2, 2], pads = [1, 1, 1, 1]> (a1, w2)
        q2 = QuantizeLinear (c2, s2, z2)
        h = DequantizeLinear (q2, s2, z2)
        f = Flatten (h)
        y = Gemm <transB = 1> (f, fw)
    }}
    """
    m = onnx.parser.parse_model(text)
    values = {"w1q": w1, "w1s": s1, "w1z": np.zeros(4, np.int8), "w2q": w2, "w2s": s2, "w2z": np.zeros(6, np.int8),
              "fw": fw, "sx": np.float32(S_X), "zx": np.uint8(0), "s1": np.float32(S_1), "z1": z1,
              "s2": np.float32(S_2), "z2": np.uint8(0)}
    for name, v in values.items():
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(v), name))
    weights = (w1.astype(np.float32) * s1[:, None, None, None], w2.astype(np.float32) * s2[:, None, None, None])
    return m, weights, fw


class _FakeQuant(torch.autograd.Function):
    """DQ(Q(t)) on a uint8 grid with zero point 0 (torch's fake quantization: round half to
    even, clamp to 0..255); backward: straight through where 0 < t < 255 * scale, the
    clamp's (the recovered Relu's) mask. (torch's own fake-quant gradient also passes
    t in (-scale/2, 0], which rounds to the grid's 0: not the Relu's mask.)"""

    @staticmethod
    def forward(ctx, t, scale, guided):
        ctx.save_for_backward(t)
        ctx.high, ctx.guided = 255 * scale, guided
        return torch.fake_quantize_per_tensor_affine(t, scale, 0, 0, 255)

    @staticmethod
    def backward(ctx, grad):
        (t,) = ctx.saved_tensors
        g = grad * ((t > 0) & (t < ctx.high))
        return (g.clamp(min=0) if ctx.guided else g), None, None  # Guided Backprop at a Relu


def _fake_quant(t, scale, guided=False):
    return _FakeQuant.apply(t, scale, guided)


def _forward(x, weights, fw, guided=False):
    """The quantized model by hand, float64 after each rounding step: (xd, a1, h, y)."""
    w1, w2 = (torch.from_numpy(w).double() for w in weights)
    xd = _fake_quant(x.float(), S_X, guided).double()
    a1 = _fake_quant(F.conv2d(xd, w1, padding=1).float(), S_1, guided).double()
    h = _fake_quant(F.conv2d(a1, w2, stride=2, padding=1).float(), S_2, guided).double()
    return xd, a1, h, h.flatten(1) @ torch.from_numpy(fw).double().T


def _zplus(a, w, r, stride, ones=False):
    wp = torch.from_numpy(w).double().clamp(min=0)
    inp = (torch.ones_like(a) if ones else a.clone()).requires_grad_(True)
    z = F.conv2d(inp, wp, None, stride, 1)
    (c,) = torch.autograd.grad(z, inp, torch.from_numpy(r) / (z.detach() + 1e-5))
    return (c if ones else a * c).numpy()


def test_qdq_passes_relevance_and_the_forward_stays_quantized():
    m, weights, fw = _qdq_model()
    x = np.random.default_rng(1).random((2, 3, 8, 8)).astype(np.float32)
    out, report = explain(m, x)
    # the explainer's logits are the QDQ model's, bit for bit, on the same provider
    np.testing.assert_array_equal(out["logits"], exact_session(m).run(None, {"x": x})[0])
    xd, a1, h, y = _forward(torch.from_numpy(x), weights, fw)
    assert np.abs(out["logits"] - y.numpy()).max() <= 1e-4 * np.abs(y.numpy()).max()
    r_h = head_relevance(h.numpy(), fw)
    r_a1 = _zplus(a1, weights[1], r_h, 2)
    assert_close(out["relevance"], _zplus(xd, weights[0], r_a1, 1, ones=True))
    rules = {name: rule for name, _, rule in report.rules}
    # the zero-point-0 grid after conv 1 is the Relu the quantizer folded: conv 2's input is
    # known non-negative, so it gets the paper's plain z+ (not the signed form)
    assert [rule for _, op, rule in report.rules if op == "Conv"] == ["z+", "w+ (ones input, first layer)"]
    assert sum(r == "pass (recovered Relu)" for r in rules.values()) == 6  # Q and DQ of x, c1, c2


@pytest.mark.parametrize("method", ["gradxinput", "guided-bp"])
def test_qdq_gradient_is_straight_through_masked_where_it_clamps(method):
    """Guided Backprop also stops negative gradients at the Relus the grid replaced."""
    m, weights, fw = _qdq_model(seed=2)
    x = (np.random.default_rng(3).random((2, 3, 8, 8)) * 1.2 - 0.1).astype(np.float32)  # some clamp
    out, _ = explain(m, x, method=method)
    xt = torch.from_numpy(x).double().requires_grad_(True)
    *_, y = _forward(xt, weights, fw, guided=method == "guided-bp")
    y[torch.arange(len(x)), torch.from_numpy(out["target_used"])].sum().backward()
    assert (xt.grad == 0).any() and (xt.grad != 0).any()  # the clamp masks part of the input
    ref = (xt.grad * xt) if method == "gradxinput" else xt.grad
    assert_close(out["relevance"], ref.detach().numpy(), tol=2e-4)


@pytest.mark.parametrize("zero,relu", [(-128, True), (0, False)])
def test_int8_activation_grid_is_a_relu_only_at_the_bottom_of_its_range(zero, relu):
    """An int8 grid clamps at 0 where its zero point is -128: conv 2 then reads a known
    non-negative input (plain z+); with zero point 0 it can read negatives (signed z+)."""
    m, _, _ = _qdq_model(z1=np.int8(zero))
    _, report = explain(m, np.random.default_rng(1).random((1, 3, 8, 8)).astype(np.float32))
    conv2 = [rule for _, op, rule in report.rules if op == "Conv"][0]
    assert conv2 == ("z+" if relu else "z+ (signed input: a+W+ + a-W-)")
