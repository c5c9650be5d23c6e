"""Ops under which relevance passes unchanged (reshaped or transposed back as needed)."""

import numpy as np
import pytest

from lrpgraph import UnsupportedOpsError
from tiny import assert_close, explain, head_relevance, model

BN = {"s": np.array([1.5, 0.5, 2.0], np.float32), "b": np.array([0.1, -0.2, 0.3], np.float32),
      "mu": np.array([0.2, 0.1, -0.1], np.float32), "var": np.array([1.2, 0.8, 1.0], np.float32)}


@pytest.mark.parametrize("body,forward", [
    ("h = Relu (x)", lambda x: np.maximum(x, 0)),
    ("h = Clip (x, lo, hi)", lambda x: np.clip(x, 0, 6)),
    ("h = BatchNormalization (x, s, b, mu, var)",
     lambda x: (x - BN["mu"][:, None, None]) / np.sqrt(BN["var"][:, None, None] + 1e-5)
     * BN["s"][:, None, None] + BN["b"][:, None, None]),
    ("t = Sub (x, k)\n        h = Div (t, k)", lambda x: (x - 0.5) / 0.5),
    ("h = Identity (x)", lambda x: x),
])
def test_elementwise_pass(body, forward):
    weights = dict(BN) if "Batch" in body else {}
    if "Clip" in body:
        weights = {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    if "Sub" in body:
        weights = {"k": np.full((1, 3, 1, 1), 0.5, np.float32)}
    m, fw = model(body, (3, 2, 2), (3, 2, 2), weights)
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2)).astype(np.float32) * 4
    out, _ = explain(m, x)
    assert_close(out["relevance"], head_relevance(forward(x), fw))


def test_transpose_and_squeeze_move_relevance_back():
    body = """t = Transpose <perm = [0, 2, 3, 1]> (x)
        u = Unsqueeze (t, ax)
        h = Squeeze (u, ax)"""
    m, fw = model(body, (3, 2, 4), (2, 4, 3), {})
    m.graph.initializer.append(__import__("onnx").numpy_helper.from_array(np.array([1], np.int64), "ax"))
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 4)).astype(np.float32)
    out, _ = explain(m, x)
    r = head_relevance(x.transpose(0, 2, 3, 1), fw).transpose(0, 3, 1, 2)
    assert_close(out["relevance"], r)


def test_product_of_two_activations_is_refused():
    m, _ = model("h = Mul (x, x)", (3, 2, 2), (3, 2, 2), {})
    with pytest.raises(UnsupportedOpsError, match="two image-dependent"):
        explain(m, np.ones((1, 3, 2, 2), np.float32))
