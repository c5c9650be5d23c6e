"""Skip merges: which operand is the skip, the ratio and symmetric splits, the 0/0 case,
identity skips switched off, bias adds."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run
from lrpgraph import preset
from lrpgraph.driver import build_explainer
from tiny import EPS, assert_close, explain, head_relevance, model

# x -> Relu -> a ; branch: a -> Conv(w) -> Mul(k) -> m ; h = a + m in either order.
BLOCK = """a = Relu (x)
        c = Conv <pads = [1, 1, 1, 1]> (a, w)
        m = Mul (c, k)
        h = Add ({first}, {second})"""


def _block(order, k_scale=1.0, seed=0, relu=False):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, 3, 3, 3)).astype(np.float32)
    k = (rng.standard_normal((1, 3, 1, 1)) * k_scale).astype(np.float32)
    body = BLOCK.format(first=order[0], second=order[1])
    if relu:  # the merge feeds a Relu, as in every ResNet block
        body = body.replace("h = Add", "s = Add") + "\n        h = Relu (s)"
    m, fw = model(body, (3, 4, 4), (3, 4, 4), {"w": w, "k": k})
    return m, fw, w, k


def _reference(x, w, k, fw, split, identity_skip, relu=False):
    a = np.maximum(x, 0).astype(np.float64)
    at = torch.from_numpy(a).requires_grad_(True)
    wp = torch.from_numpy(w).double().clamp(min=0)
    mm = F.conv2d(torch.from_numpy(a), torch.from_numpy(w).double(), padding=1).numpy() * k
    r = head_relevance(np.maximum(mm + a, 0) if relu else mm + a, fw)
    if not identity_skip:
        r_s, r_m = 0.0, r
    elif split == "symmetric":
        r_s, r_m = r / 2, r / 2
    else:
        den = np.abs(a) + np.abs(mm)
        frac = np.where(den == 0, 0.5, np.abs(a) / np.where(den == 0, 1, den))
        r_s, r_m = r * frac, r * (1 - frac)
    z = F.conv2d(at, wp, padding=1)
    (c,) = torch.autograd.grad(z, at, torch.from_numpy(r_m) / (z.detach() + EPS))
    return r_s + a * c.numpy(), r


@pytest.mark.parametrize("order", [("m", "a"), ("a", "m")])
@pytest.mark.parametrize("split,identity_skip", [("ratio", True), ("symmetric", True), ("ratio", False)])
def test_skip_merge_split(order, split, identity_skip):
    m, fw, w, k = _block(order)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    out, report = explain(m, x, split=split, identity_skip=identity_skip, first_layer="zplus")
    note = [r for _, op, r in report.rules if op == "Add"][0]
    assert note.startswith(f"skip merge (identity, skip=input {order.index('a')})")
    assert ("none to the skip" in note) == (not identity_skip)
    ref, _ = _reference(x, w, k, fw, split, identity_skip)
    assert_close(out["relevance"], ref)


def test_ratio_split_never_nan_when_both_operands_are_zero():
    m, fw, w, k = _block(("m", "a"), k_scale=0.0)  # the branch is 0 everywhere
    x = -np.abs(np.random.default_rng(2).standard_normal((2, 3, 4, 4))).astype(np.float32)
    x[:, :, 0, 0] = 1.0  # the skip is 0 except here
    out, _ = explain(m, x, first_layer="zplus", conservation=True)
    assert np.isfinite(out["relevance"]).all()
    ref, r = _reference(x, w, k, fw, "ratio", True)
    assert_close(out["relevance"], ref)
    (add,) = [key[7:-4] for key in out if key.startswith("relsum/Add") and key.endswith("/out")]
    # 0/0 positions split evenly: what enters the merge leaves it in full.
    np.testing.assert_allclose(out[f"relsum/{add}/in"], r.sum((1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("k_scale", [1.0, 0.0])
def test_ratio_split_above_a_relu(k_scale):
    """A merge whose relevance comes down through a Relu gets 0 wherever the merge output
    is <= 0, so the split divides once, P = R / (|h_s| + |h_m|), with both shares left as
    products, and the 0/0 positions (k_scale=0: the branch is 0, the skip mostly 0) stay
    finite."""
    m, fw, w, k = _block(("m", "a"), k_scale=k_scale, relu=True)
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 4)).astype(np.float32)
    explainer, _ = build_explainer(m, preset("paper", full_relevance=True, first_layer="zplus",
                                             conservation=True))
    out = run(explainer, {"input": x})
    assert np.isfinite(out["relevance"]).all()
    ref, r = _reference(x, w, k, fw, "ratio", True, relu=True)
    assert_close(out["relevance"], ref)
    (add,) = [key[7:-4] for key in out if key.startswith("relsum/Add") and key.endswith("/out")]
    np.testing.assert_allclose(out[f"relsum/{add}/in"], r.sum((1, 2, 3)), rtol=1e-5)
    plain, _ = build_explainer(m, preset("paper", first_layer="zplus"))  # no probes
    # the split reads h_m itself (the forward Add and one Abs), nothing derived from Relu(h)
    readers = sorted(n.op_type for n in plain.graph.node if "m" in n.input)
    assert readers == ["Abs", "Add"], readers
    assert "Sub" not in {n.op_type for n in plain.graph.node}
    # the skip's share and the conv's meet at a: one product a * (P + c), not two
    products = [n for n in plain.graph.node if n.op_type == "Mul" and "a" in n.input]
    assert len(products) == 1, [n.name for n in products]


def test_bias_add_passes_relevance():
    rng = np.random.default_rng(4)
    b = rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    m, fw = model("h = Add (x, b)", (3, 2, 2), (3, 2, 2), {"b": b})
    x = rng.random((2, 3, 2, 2)).astype(np.float32)
    out, report = explain(m, x)
    assert report.merges == {}
    assert_close(out["relevance"], head_relevance(x + b, fw))


def test_projection_skip_is_told_from_the_branch():
    rng = np.random.default_rng(5)
    weights = {n: rng.standard_normal(s).astype(np.float32) for n, s in
               (("w1", (3, 3, 3, 3)), ("w2", (3, 3, 3, 3)), ("wd", (3, 3, 1, 1)))}
    body = """a = Relu (x)
        b1 = Conv <pads = [1, 1, 1, 1]> (a, w1)
        b2 = Conv <pads = [1, 1, 1, 1]> (b1, w2)
        d = Conv (a, wd)
        h = Add (d, b2)"""
    m, _ = model(body, (3, 4, 4), (3, 4, 4), weights)
    _, report = explain(m, np.ones((1, 3, 4, 4), np.float32))
    assert report.merges == {"projection": 1}
    note = [r for _, op, r in report.rules if op == "Add"][0]
    assert note.startswith("skip merge (projection, skip=input 0)")
