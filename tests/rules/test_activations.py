"""Smooth and leaky activations: LRP passes relevance unchanged (the identity rule); the
gradient methods get each op's derivative, checked against autograd."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import assert_close, explain, head_relevance, model

SLOPE = np.array([0.25, -0.5, 2.0], np.float32).reshape(3, 1, 1)
# op text, its PyTorch twin, the opset it needs
CASES = {
    "Sigmoid": ("h = Sigmoid (x)", torch.sigmoid, 17),
    "HardSigmoid": ("h = HardSigmoid <alpha = 0.25, beta = 0.4> (x)",
                    lambda t: (0.25 * t + 0.4).clamp(0, 1), 17),
    "HardSwish": ("h = HardSwish (x)", F.hardswish, 17),
    "Tanh": ("h = Tanh (x)", torch.tanh, 17),
    "LeakyRelu": ("h = LeakyRelu <alpha = 0.1> (x)", lambda t: F.leaky_relu(t, 0.1), 17),
    "PRelu": ("h = PRelu (x, slope)", lambda t: torch.where(t > 0, t, t * torch.from_numpy(SLOPE).double()), 17),
    "Elu": ("h = Elu <alpha = 0.7> (x)", lambda t: F.elu(t, 0.7), 17),
    "Softplus": ("h = Softplus (x)", F.softplus, 17),
    "Gelu": ("h = Gelu (x)", F.gelu, 20),
    "Gelu-tanh": ('h = Gelu <approximate = "tanh"> (x)', lambda t: F.gelu(t, approximate="tanh"), 20),
}


def _case(name, seed=0):
    body, fn, opset = CASES[name]
    weights = {"slope": SLOPE} if "slope" in body else {}
    m, fw = model(body, (3, 4, 4), (3, 4, 4), weights, opset=opset)
    x = 2 * np.random.default_rng(seed).standard_normal((2, 3, 4, 4)).astype(np.float32)
    return m, fw, x, fn


@pytest.mark.parametrize("name", sorted(CASES))
def test_activation_passes_relevance_unchanged(name):
    m, fw, x, fn = _case(name)
    out, report = explain(m, x)
    h = fn(torch.from_numpy(x).double()).numpy()
    assert_close(out["relevance"], head_relevance(h, fw))
    assert [r for _, op, r in report.rules if op == name.split("-")[0]] == ["identity"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_activation_gradient_matches_autograd(name):
    m, fw, x, fn = _case(name, seed=1)
    out, _ = explain(m, x, method="gradxinput")
    xt = torch.from_numpy(x).double().requires_grad_(True)
    y = fn(xt).flatten(1) @ torch.from_numpy(fw).double().T
    y[torch.arange(len(x)), torch.from_numpy(out["target_used"])].sum().backward()
    assert_close(out["relevance"], (xt.grad * xt).detach().numpy(), tol=2e-4)


def test_gelu_in_erf_form_is_a_gate_and_its_gradient_is_exact():
    """torch's TorchScript export writes nn.GELU as x * (1 + Erf(x / sqrt 2)) * 0.5."""
    body = """d = Div (x, r2)
        e = Erf (d)
        g = Add (e, one)
        p = Mul (x, g)
        h = Mul (p, half)"""
    weights = {"r2": np.array([np.sqrt(2)], np.float32), "one": np.array([1], np.float32),
               "half": np.array([0.5], np.float32)}
    m, fw = model(body, (3, 4, 4), (3, 4, 4), weights)
    x = 2 * np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    out, report = explain(m, x)
    h = F.gelu(torch.from_numpy(x).double()).numpy()
    assert_close(out["relevance"], head_relevance(h, fw))
    assert "signal takes all (gate: input 1, Erf output)" in [r for _, _, r in report.rules]
    grad, _ = explain(m, x, method="gradxinput")
    xt = torch.from_numpy(x).double().requires_grad_(True)
    y = F.gelu(xt).flatten(1) @ torch.from_numpy(fw).double().T
    y[torch.arange(len(x)), torch.from_numpy(grad["target_used"])].sum().backward()
    assert_close(grad["relevance"], (xt.grad * xt).detach().numpy(), tol=2e-4)
