"""Tiny ONNX models around one op under test, and the NumPy/PyTorch pieces to check the
relevance that comes back.

Every model is ``x -> <body> -> h -> Flatten -> Gemm(fw) -> y``: the head's relevance at
``h`` is computed here from SPEC.md (softmax * one-hot, Gemm z+), so each test checks only
its own op's rule.
"""

import numpy as np
import onnx

from conftest import run
from lrpgraph import preset
from lrpgraph.driver import build_explainer

EPS = 1e-5
CLASSES = 5


def model(body: str, x_shape, h_shape, weights: dict, seed=0, opset=17):
    """``body`` is ONNX text computing ``h`` from ``x``; weights are name -> array."""
    rng = np.random.default_rng(seed)
    flat = int(np.prod(h_shape))
    fw = rng.standard_normal((CLASSES, flat)).astype(np.float32)
    decls = ", ".join(f"float[{', '.join(map(str, w.shape))}] {n}" for n, w in weights.items())
    decls = (decls + ", " if decls else "") + f"float[{CLASSES}, {flat}] fw"
    text = f"""
    <ir_version: {9 if opset > 19 else 8}, opset_import: ["" : {opset}]>
    g (float[N, {', '.join(map(str, x_shape))}] x) => (float[N, {CLASSES}] y) <{decls}> {{
        {body}
        f = Flatten (h)
        y = Gemm <transB = 1> (f, fw)
    }}
    """
    m = onnx.parser.parse_model(text)
    for n, w in list(weights.items()) + [("fw", fw)]:
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(w, np.float32), n))
    return m, fw


def explain(m, x, **options):
    """The explainer's outputs on ``x``; LRP on the paper's rules unless ``composite`` says."""
    options = {"composite": "paper", **options}
    explainer, report = build_explainer(m, preset("paper", full_relevance=True, **options))
    out = run(explainer, {"input": x})
    return out, report


def head_relevance(h, fw):
    """Relevance arriving at ``h`` (float64): softmax * one-hot of the argmax, Gemm z+ in
    its signed-input form (a+W+ + a-W-; the plain z+ where h >= 0)."""
    f = h.reshape(len(h), -1).astype(np.float64)
    y = f @ fw.T.astype(np.float64)
    p = np.exp(y - y.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = np.zeros_like(p)
    r[np.arange(len(p)), y.argmax(1)] = p[np.arange(len(p)), y.argmax(1)]
    wp, wn = np.maximum(fw, 0).astype(np.float64), np.minimum(fw, 0).astype(np.float64)
    fp, fn = np.maximum(f, 0), np.minimum(f, 0)
    s = r / (fp @ wp.T + fn @ wn.T + EPS)
    return (fp * (s @ wp) + fn * (s @ wn)).reshape(h.shape)


def assert_close(got, ref, tol=1e-4):
    scale = np.abs(ref).max()
    assert scale > 0
    assert np.abs(got - ref).max() <= tol * scale, np.abs(got - ref).max() / scale
