"""Concat: each operand gets its slice of the relevance back; the sign facts it keeps; what
it refuses; its gradient."""

import numpy as np
import pytest
import torch

from tiny import assert_close, explain, head_relevance, model

from lrpgraph import UnsupportedOpsError, preset
from lrpgraph.driver import build_explainer


def test_concat_sends_each_operand_its_slice():
    body = """a = Relu (x)
        h = Concat <axis = 1> (a, x)"""
    m, fw = model(body, (3, 4, 4), (6, 4, 4), {})
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    out, _ = explain(m, x, conservation=True)
    h = np.concatenate([np.maximum(x, 0), x], axis=1)
    r = head_relevance(h, fw)
    assert_close(out["relevance"], r[:, :3] + r[:, 3:])  # Relu passes its slice unchanged
    np.testing.assert_allclose(out["relsum/input"], r.sum((1, 2, 3)), rtol=1e-5)


def test_concat_along_a_spatial_axis():
    body = """a = Relu (x)
        h = Concat <axis = -1> (x, a, x)"""
    m, fw = model(body, (2, 3, 4), (2, 3, 12), {})
    x = np.random.default_rng(1).standard_normal((3, 2, 3, 4)).astype(np.float32)
    out, _ = explain(m, x)
    r = head_relevance(np.concatenate([x, np.maximum(x, 0), x], axis=-1), fw)
    assert_close(out["relevance"], r[..., :4] + r[..., 4:8] + r[..., 8:])


def _concat_conv(second):
    w = np.random.default_rng(2).standard_normal((4, 6, 3, 3)).astype(np.float32)
    body = f"""a = Relu (x)
        b = {second}
        c = Concat <axis = 1> (a, b)
        h = Conv (c, w)"""
    return model(body, (3, 5, 5), (4, 3, 3), {"w": w}) + (w,)


def test_concat_keeps_the_sign_only_when_every_operand_does():
    for second, note in (("Relu (x)", "z+"), ("Identity (x)", "z+ (signed input: a+W+ + a-W-)")):
        m, _, _ = _concat_conv(second)
        _, report = build_explainer(m, preset("paper", first_layer="zplus"))
        assert [r for _, op, r in report.rules if op == "Conv"] == [note], second


def test_concat_over_the_batch_axis_is_refused():
    m, _ = model("h = Concat <axis = 0> (x, x)", (3, 2, 2), (3, 2, 2), {})
    with pytest.raises(UnsupportedOpsError, match="batch axis"):
        build_explainer(m, preset("paper"))


def test_concat_gradient_matches_autograd():
    m, fw, w = _concat_conv("Identity (x)")
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 5)).astype(np.float32)
    out, _ = explain(m, x, method="gradxinput")
    xt = torch.from_numpy(x).double().requires_grad_(True)
    h = torch.nn.functional.conv2d(torch.cat([torch.relu(xt), xt], 1), torch.from_numpy(w).double())
    y = h.flatten(1) @ torch.from_numpy(fw).double().T
    y[torch.arange(2), torch.from_numpy(out["target_used"])].sum().backward()
    assert_close(out["relevance"], (xt.grad * xt).detach().numpy())
