import numpy as np
import pytest

from tiny import EPS, assert_close, explain, head_relevance, model


def zplus_dense(a, w_kxm, r):
    wp = np.maximum(w_kxm, 0).astype(np.float64)
    return a * ((r / (a @ wp + EPS)) @ wp.T)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_zplus(trans_b):
    rng = np.random.default_rng(trans_b)
    w = rng.standard_normal((6, 12)).astype(np.float32)  # K=12 -> M=6 in transB=1 layout
    w_stored = w if trans_b else w.T.copy()
    body = f"""g0 = Flatten (x)
        h = Gemm <transB = {trans_b}> (g0, w, b)"""
    b = rng.standard_normal(6).astype(np.float32)
    m, fw = model(body, (3, 2, 2), (6,), {"w": w_stored, "b": b})
    x = rng.random((2, 3, 2, 2)).astype(np.float32)
    out, _ = explain(m, x)
    a = x.reshape(2, -1).astype(np.float64)
    h = a @ w.T + b  # the bias shapes the forward pass, not the z+ denominator
    ref = zplus_dense(a, w.T, head_relevance(h, fw)).reshape(x.shape)
    assert_close(out["relevance"], ref)


def test_matmul_zplus():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((12, 6)).astype(np.float32)
    # seed 0 gives the head's predicted class an all-negative row: W+ = 0 absorbs everything.
    m, fw = model("g0 = Flatten (x)\n        h = MatMul (g0, w)", (3, 2, 2), (6,), {"w": w}, seed=1)
    x = rng.random((2, 3, 2, 2)).astype(np.float32)
    out, _ = explain(m, x)
    a = x.reshape(2, -1).astype(np.float64)
    ref = zplus_dense(a, w, head_relevance(a @ w, fw)).reshape(x.shape)
    assert_close(out["relevance"], ref)
