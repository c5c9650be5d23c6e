"""Slice and Split: each piece's relevance goes back to where it was cut from, zeros where
nothing was kept; conserving; strided slices refused; the gradient is the same scatter."""

import numpy as np
import onnx
import pytest
import torch

from tiny import assert_close, explain, head_relevance, model

from lrpgraph import UnsupportedOpsError, preset
from lrpgraph.driver import build_explainer

RNG = np.random.default_rng(0)
SPLIT = np.array([2, 1], np.int64)


def _with_ints(m, **arrays):
    for name, value in arrays.items():
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value, np.int64), name))
    return m


def _slice_model(steps=1):
    m, fw = model("h = Slice (x, st, en, ax, sp)", (4, 3, 3), (2, 3, 2),
                  {})
    return _with_ints(m, st=[1, -2], en=[3, 100], ax=[1, 3], sp=[1, steps]), fw


def test_slice_pads_relevance_back():
    m, fw = _slice_model()
    x = RNG.standard_normal((2, 4, 3, 3)).astype(np.float32)
    out, _ = explain(m, x, conservation=True)
    ref = np.zeros_like(x, dtype=np.float64)
    ref[:, 1:3, :, 1:] = head_relevance(x[:, 1:3, :, 1:], fw)
    assert_close(out["relevance"], ref)
    np.testing.assert_allclose(out["relsum/input"], ref.sum((1, 2, 3)), rtol=1e-5)


def test_strided_slice_is_refused():
    m, _ = _slice_model(steps=2)
    with pytest.raises(UnsupportedOpsError, match="step 1"):
        build_explainer(m, preset("paper"))


def _split_model(body, h_shape):
    m, fw = model(body, (3, 2, 2), h_shape, {})
    return _with_ints(m, sizes=SPLIT), fw


def test_split_pieces_concatenate_back_in_their_places():
    m, fw = _split_model("a, b = Split <axis = 1> (x, sizes)\n        r = Relu (a)\n"
                         "        h = Concat <axis = 1> (b, r)", (3, 2, 2))
    x = RNG.standard_normal((2, 3, 2, 2)).astype(np.float32)
    out, _ = explain(m, x, conservation=True)
    r = head_relevance(np.concatenate([x[:, 2:], np.maximum(x[:, :2], 0)], 1), fw)
    assert_close(out["relevance"], np.concatenate([r[:, 1:], r[:, :1]], 1))
    np.testing.assert_allclose(out["relsum/input"], r.sum((1, 2, 3)), rtol=1e-5)


def test_an_unused_piece_gets_zeros():
    m, fw = _split_model("a, b = Split <axis = 1> (x, sizes)\n        h = Relu (a)", (2, 2, 2))
    x = RNG.standard_normal((2, 3, 2, 2)).astype(np.float32)
    out, report = explain(m, x)
    ref = np.zeros_like(x, dtype=np.float64)
    ref[:, :2] = head_relevance(np.maximum(x[:, :2], 0), fw)
    assert_close(out["relevance"], ref)
    assert ("Split", "concatenate back") in [(op, n) for _, op, n in report.rules]


def test_slice_and_split_gradients_match_autograd():
    m, fw = _split_model("a, b = Split <axis = 1> (x, sizes)\n        s = Slice (b, st, en, ax)\n"
                         "        t = Slice (a, st, en, ax)\n        h = Concat <axis = 1> (s, t)", (3, 1, 2))
    m = _with_ints(m, st=[1], en=[2], ax=[2])
    x = RNG.standard_normal((2, 3, 2, 2)).astype(np.float32)
    out, _ = explain(m, x, method="gradxinput")
    xt = torch.from_numpy(x).double().requires_grad_(True)
    h = torch.cat([xt[:, 2:, 1:2], xt[:, :2, 1:2]], 1)
    y = h.flatten(1) @ torch.from_numpy(fw).double().T
    y[torch.arange(len(x)), torch.from_numpy(out["target_used"])].sum().backward()
    assert_close(out["relevance"], (xt.grad * xt).detach().numpy())
