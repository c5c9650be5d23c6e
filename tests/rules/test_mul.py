"""Mul: a constant factor passes relevance; a gate (SE scale, SiLU's sigmoid) leaves all
relevance to the signal (signal-take-all); two activations without a gate are refused;
the gradient is the product rule, the broadcast gate's summed over what it spans."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import assert_close, explain, head_relevance, model

from lrpgraph import UnsupportedOpsError, preset
from lrpgraph.driver import build_explainer

RNG = np.random.default_rng(0)
W_SE = RNG.standard_normal((3, 3, 1, 1)).astype(np.float32)
SCALE = np.array([0.5, -2.0, 3.0], np.float32).reshape(3, 1, 1)
SE = """a = Relu (x)
        s = GlobalAveragePool (a)
        q = Conv (s, wse)
        g = Sigmoid (q)
        h = Mul (a, g)"""


def _se_torch(x):
    a = torch.relu(x)
    g = torch.sigmoid(F.conv2d(a.mean((2, 3), keepdim=True), torch.from_numpy(W_SE).double()))
    return a * g


def test_squeeze_excitation_gate_leaves_all_relevance_to_the_signal():
    m, fw = model(SE, (3, 4, 4), (3, 4, 4), {"wse": W_SE})
    x = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    out, report = explain(m, x, conservation=True)
    h = _se_torch(torch.from_numpy(x).double()).numpy()
    r = head_relevance(h, fw)
    assert_close(out["relevance"], r)  # Relu passes it; nothing reaches the squeeze branch
    np.testing.assert_allclose(out["relsum/input"], r.sum((1, 2, 3)), rtol=1e-5)
    notes = {op: note for _, op, note in report.rules}
    assert notes["Mul"] == "signal takes all (gate: input 1, broadcast scale)"
    assert "Conv" not in notes and "Sigmoid" not in notes


def test_silu_as_x_times_sigmoid():
    m, fw = model("g = Sigmoid (x)\n        h = Mul (g, x)", (3, 4, 4), (3, 4, 4), {})
    x = 2 * RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    out, report = explain(m, x)
    assert_close(out["relevance"], head_relevance(F.silu(torch.from_numpy(x).double()).numpy(), fw))
    assert "signal takes all (gate: input 0, Sigmoid output)" in [n for _, _, n in report.rules]


def test_a_constant_factor_passes_relevance():
    m, fw = model("h = Mul (scale, x)", (3, 4, 4), (3, 4, 4), {"scale": SCALE})
    x = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    out, _ = explain(m, x)
    assert_close(out["relevance"], head_relevance(x * SCALE, fw))


def test_two_activations_without_a_gate_are_refused():
    m, _ = model("a = Relu (x)\n        h = Mul (a, x)", (3, 2, 2), (3, 2, 2), {})
    with pytest.raises(UnsupportedOpsError, match="neither is a gate"):
        build_explainer(m, preset("paper"))


@pytest.mark.parametrize("body", [SE, "g = Sigmoid (x)\n        h = Mul (g, x)"])
def test_mul_gradient_is_the_product_rule(body):
    m, fw = model(body, (3, 4, 4), (3, 4, 4), {"wse": W_SE} if "wse" in body else {})
    x = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    out, _ = explain(m, x, method="gradxinput")
    xt = torch.from_numpy(x).double().requires_grad_(True)
    h = _se_torch(xt) if "wse" in body else F.silu(xt)
    y = h.flatten(1) @ torch.from_numpy(fw).double().T
    y[torch.arange(len(x)), torch.from_numpy(out["target_used"])].sum().backward()
    assert_close(out["relevance"], (xt.grad * xt).detach().numpy())
