"""MaxPool (2x2-average stand-in, winner), GlobalAveragePool, AveragePool, ReduceMean."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import EPS, assert_close, explain, head_relevance, model


def resnet_maxpool(seed, maxpool):
    """ResNet's 3x3 stride-2 pad-1 MaxPool on 8x8: (x, explainer outputs, R at its output)."""
    x = np.random.default_rng(seed).random((2, 3, 8, 8)).astype(np.float32)
    m, fw = model("h = MaxPool <kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]> (x)",
                  (3, 8, 8), (3, 4, 4), {})
    out, _ = explain(m, x, maxpool=maxpool)
    return x, out, head_relevance(F.max_pool2d(torch.from_numpy(x), 3, 2, 1).numpy(), fw)


def test_maxpool_avg2x2_stand_in():
    x, out, r = resnet_maxpool(0, "avg2x2")
    ref = np.zeros_like(x, dtype=np.float64)
    for i in range(4):
        for j in range(4):
            win = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].astype(np.float64)
            s = r[:, :, i, j] / (win.mean((2, 3)) + EPS)
            ref[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = win * s[:, :, None, None] / 4
    assert_close(out["relevance"], ref)


def test_maxpool_winner_sums_overlapping_windows():
    x, out, r = resnet_maxpool(1, "winner")
    ref = np.zeros_like(x, dtype=np.float64)
    for n in range(2):
        for c in range(3):
            for i in range(4):
                for j in range(4):
                    r0, c0 = max(2 * i - 1, 0), max(2 * j - 1, 0)
                    win = x[n, c, r0:2 * i + 2, c0:2 * j + 2]
                    wi, wj = np.unravel_index(win.argmax(), win.shape)
                    ref[n, c, r0 + wi, c0 + wj] += r[n, c, i, j]
    assert_close(out["relevance"], ref)
    np.testing.assert_allclose(out["relevance"].sum((1, 2, 3)), r.sum((1, 2, 3)), rtol=1e-5)


def test_maxpool_avg2x2_refuses_odd_sizes():
    from lrpgraph import UnsupportedOpsError

    m, _ = model("h = MaxPool <kernel_shape = [3, 3], strides = [2, 2]> (x)", (3, 9, 9), (3, 4, 4), {})
    with pytest.raises(UnsupportedOpsError, match="--maxpool winner"):
        explain(m, np.zeros((1, 3, 9, 9), np.float32), maxpool="avg2x2")


def z_rule_global(x, r):
    n = x.shape[2] * x.shape[3]
    return x * r.reshape(r.shape[0], r.shape[1], 1, 1) / (x.sum((2, 3), keepdims=True) + n * EPS)


@pytest.mark.parametrize("body,h_shape", [
    ("h = GlobalAveragePool (x)", (3, 1, 1)),
    ("h = AveragePool <kernel_shape = [4, 4]> (x)", (3, 1, 1)),  # Caffe2's whole-map head
    ("h = ReduceMean <axes = [2, 3], keepdims = 0> (x)", (3,)),
    ("h = ReduceMean <axes = [-1, -2]> (x)", (3, 1, 1)),
])
def test_global_average_z_rule(body, h_shape):
    x = np.random.default_rng(2).random((2, 3, 4, 4)).astype(np.float32)
    m, fw = model(body, (3, 4, 4), h_shape, {})
    out, _ = explain(m, x)
    r = head_relevance(x.mean((2, 3)).reshape((2,) + h_shape), fw)
    assert_close(out["relevance"], z_rule_global(x.astype(np.float64), r))


def test_sliding_average_pool_z_rule():
    x = np.random.default_rng(3).random((2, 3, 6, 6)).astype(np.float32)
    m, fw = model("h = AveragePool <kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]> (x)",
                  (3, 6, 6), (3, 3, 3), {})
    out, _ = explain(m, x)
    h = F.avg_pool2d(torch.from_numpy(x), 3, 2, 1, count_include_pad=False).numpy()  # ONNX default
    r = torch.from_numpy(head_relevance(h, fw))
    a = torch.from_numpy(x).double().requires_grad_(True)
    window_sum = F.avg_pool2d(a, 3, 2, 1, count_include_pad=True) * 9
    (c,) = torch.autograd.grad(window_sum, a, r / (window_sum.detach() + 9 * EPS))
    assert_close(out["relevance"], (a * c).detach().numpy())


@pytest.mark.parametrize("method", ["lrp", "lrp-epsilon", "gradient"])
def test_a_1x1_average_pool_is_the_identity_in_every_family(method):
    """AdaptiveAvgPool2d(7) on a 7x7 map exports as a 1x1 AveragePool (torchvision's VGG)."""
    m, fw = model("h = AveragePool <kernel_shape = [1, 1]> (x)", (3, 4, 4), (3, 4, 4), {})
    x = np.random.default_rng(5).random((2, 3, 4, 4)).astype(np.float32)
    out, report = explain(m, x, method=method)
    assert [r for _, op, r in report.rules if op == "AveragePool"] == ["pass (1x1 window)"]
    without, _ = explain(model("h = Identity (x)", (3, 4, 4), (3, 4, 4), {})[0], x, method=method)
    np.testing.assert_allclose(out["relevance"], without["relevance"], rtol=1e-6, atol=1e-12)
    if method == "lrp":
        assert_close(out["relevance"], head_relevance(x, fw))


def test_sliding_average_pool_takes_the_epsilon_rule():
    """LRP-epsilon through a sliding AveragePool (MaxViT's MBConv shortcut: 3x3, stride 2,
    pad 1) under a bias-free head is Gradient x Input of that linear map (autograd)."""
    m, fw = model("h = AveragePool <kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1], "
                  "count_include_pad = 1> (x)", (2, 5, 5), (2, 3, 3), {})
    x = np.random.default_rng(3).standard_normal((2, 2, 5, 5)).astype(np.float32)
    out, report = explain(m, x, method="lrp-epsilon")
    xt = torch.from_numpy(x).double().requires_grad_(True)
    y = F.avg_pool2d(xt, 3, 2, 1, count_include_pad=True).flatten(1) @ torch.from_numpy(fw).double().T
    y[torch.arange(2), torch.from_numpy(out["target_used"])].sum().backward()
    assert_close(out["relevance"], (xt * xt.grad).detach().numpy())
    assert ("AveragePool", "epsilon") in [(op, n) for _, op, n in report.rules]
