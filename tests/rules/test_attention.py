"""The attention product ``attn @ v`` as CP-LRP treats it: the Softmax's weights held
constant, v gets R_v = v * attn^T (R / (z + eps sign z)), re-derived in NumPy; nothing
reaches the Softmax; conserving; a product of two activations without attention and the
gradient methods refused with the reason."""

import numpy as np
import pytest

from tiny import EPS, assert_close, explain, head_relevance, model

from lrpgraph import UnsupportedOpsError, preset
from lrpgraph.driver import build_explainer

RNG = np.random.default_rng(0)
SCORES = """xt = Transpose <perm = [0, 2, 1]> (x)
        s = MatMul (x, xt)
        a = Softmax <axis = -1> (s)
"""


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("value_first", [False, True])
def test_the_value_path_takes_the_relevance_with_attention_constant(value_first):
    body = SCORES + ("        h = MatMul (xt, a)" if value_first else "        h = MatMul (a, x)")
    m, fw = model(body, (4, 6), (6, 4) if value_first else (4, 6), {})
    x = RNG.standard_normal((3, 4, 6)).astype(np.float32)
    out, report = explain(m, x, conservation=True)
    x64 = x.astype(np.float64)
    a = _softmax(x64 @ x64.transpose(0, 2, 1))
    h = x64.transpose(0, 2, 1) @ a if value_first else a @ x64
    r = head_relevance(h, fw)
    s = r / (h + np.where(h >= 0, EPS, -EPS))
    if value_first:  # R_xt = xt * (s @ a^T), back through the Transpose
        ref = (x64.transpose(0, 2, 1) * (s @ a.transpose(0, 2, 1))).transpose(0, 2, 1)
    else:
        ref = x64 * (a.transpose(0, 2, 1) @ s)
    assert_close(out["relevance"], ref)
    np.testing.assert_allclose(out["relsum/input"], (r * h / (h + np.where(h >= 0, EPS, -EPS))).sum((1, 2)),
                               rtol=1e-4)
    notes = {op: n for _, op, n in report.rules}
    assert "Softmax" not in notes  # no relevance reaches the scores
    assert [n for _, op, n in report.rules if op == "MatMul"] == ["value path, attention constant (CP-LRP)"]


def test_the_lrp_epsilon_family_takes_the_same_rule():
    m, fw = model(SCORES + "        h = MatMul (a, x)", (4, 6), (4, 6), {})
    x = RNG.standard_normal((2, 4, 6)).astype(np.float32)
    out, _ = explain(m, x, method="lrp-epsilon")
    x64 = x.astype(np.float64)
    a = _softmax(x64 @ x64.transpose(0, 2, 1))
    h = a @ x64
    y = h.reshape(len(h), -1) @ fw.T.astype(np.float64)
    r = np.zeros_like(y)
    top = y.argmax(1)
    r[np.arange(len(y)), top] = y[np.arange(len(y)), top]  # from the logit, captum-style
    f = h.reshape(len(h), -1)
    r_h = (f * ((r / (y + np.where(y >= 0, 1e-9, -1e-9))) @ fw)).reshape(h.shape)
    ref = x64 * (a.transpose(0, 2, 1) @ (r_h / (h + np.where(h >= 0, 1e-9, -1e-9))))
    assert_close(out["relevance"], ref)


def test_a_product_of_two_activations_without_attention_is_refused():
    m, _ = model("xt = Transpose <perm = [0, 2, 1]> (x)\n        h = MatMul (x, xt)", (4, 6), (4, 4), {})
    with pytest.raises(UnsupportedOpsError, match="attention weights"):
        build_explainer(m, preset("paper"))


def test_the_gradient_methods_refuse_attention_with_the_reason():
    m, _ = model(SCORES + "        h = MatMul (a, x)", (4, 6), (4, 6), {})
    with pytest.raises(UnsupportedOpsError, match="Softmax's gradient"):
        build_explainer(m, preset("paper", method="gradient"))
