"""LayerNormalization with the deviation held constant (AttnLRP): the epsilon rule of the
linear map it becomes, re-derived in NumPy; conserving up to beta's share; the gradient
exact (autograd)."""

import numpy as np
import torch
import torch.nn.functional as F

from tiny import EPS, assert_close, explain, head_relevance, model

RNG = np.random.default_rng(0)
GAMMA = RNG.uniform(0.5, 2.0, 6).astype(np.float32) * np.array([1, -1, 1, 1, -1, 1], np.float32)
BETA = RNG.standard_normal(6).astype(np.float32)
LN_EPS = 1e-5


def _model():
    body = "h = LayerNormalization <axis = -1, epsilon = 0.00001> (x, gamma, beta)"
    return model(body, (4, 6), (4, 6), {"gamma": GAMMA, "beta": BETA})


def _reference(x, r):
    """R_in = x * J^T(R / (y + eps sign y)), J the LN's Jacobian with sigma constant."""
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + LN_EPS)
    y = GAMMA * (x - mu) / sigma + BETA
    s = r / (y + np.where(y >= 0, EPS, -EPS))
    g = GAMMA * s
    return x * (g - g.mean(-1, keepdims=True)) / sigma, y


def test_layernorm_is_the_epsilon_rule_of_its_linear_map():
    m, fw = _model()
    x = RNG.standard_normal((3, 4, 6)).astype(np.float32) * 3 + 1
    out, report = explain(m, x, conservation=True)
    y = F.layer_norm(torch.from_numpy(x).double(), (6,), torch.from_numpy(GAMMA).double(),
                     torch.from_numpy(BETA).double(), LN_EPS).numpy()
    r = head_relevance(y, fw)
    ref, y_ref = _reference(x, r)
    assert_close(out["relevance"], ref)
    # conserving up to the shift's share: sum R_in = sum R (y - beta) / (y + eps)
    kept = (r * (y_ref - BETA) / (y_ref + np.where(y_ref >= 0, EPS, -EPS))).sum((1, 2))
    np.testing.assert_allclose(out["relsum/input"], kept, rtol=1e-4)
    assert [n for _, op, n in report.rules if op == "LayerNormalization"] == ["epsilon (sigma constant, AttnLRP)"]


def test_layernorm_gradient_matches_autograd():
    m, fw = _model()
    x = RNG.standard_normal((3, 4, 6)).astype(np.float32)
    out, _ = explain(m, x, method="gradxinput")
    xt = torch.from_numpy(x).double().requires_grad_(True)
    y = F.layer_norm(xt, (6,), torch.from_numpy(GAMMA).double(), torch.from_numpy(BETA).double(), LN_EPS)
    z = y.flatten(1) @ torch.from_numpy(fw).double().T
    z[torch.arange(len(x)), torch.from_numpy(out["target_used"])].sum().backward()
    assert_close(out["relevance"], (xt.grad * xt).detach().numpy())
