"""Slice and Split: each piece's relevance goes back to where it was cut from, zeros where
nothing was kept; strided slices spread back; conserving; negative steps refused; the
gradient is the same scatter."""

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


def _slice_model(steps=(1, 1), h_shape=(2, 3, 2), st=(1, -2), en=(3, 100)):
    m, fw = model("h = Slice (x, st, en, ax, sp)", (4, 3, 3), h_shape, {})
    return _with_ints(m, st=list(st), en=list(en), ax=[1, 3], sp=list(steps)), fw


def test_slice_pads_relevance_back():
    m, fw = _slice_model()
    x = RNG.standard_normal((2, 4, 3, 3)).astype(np.float32)
    out, _ = explain(m, x, conservation=True)
    ref = np.zeros_like(x, dtype=np.float64)
    ref[:, 1:3, :, 1:] = head_relevance(x[:, 1:3, :, 1:], fw)
    assert_close(out["relevance"], ref)
    np.testing.assert_allclose(out["relsum/input"], ref.sum((1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("st, en, steps, pick", [
    ((0, 0), (4, 3), (2, 2), (slice(0, 4, 2), slice(0, 3, 2))),  # patch merging: x[:, 0::2, ..., 0::2]
    ((1, 1), (4, 3), (2, 2), (slice(1, 4, 2), slice(1, 3, 2))),  # x[:, 1::2, ..., 1::2]: ends short of a step
    ((3, 0), (4, 100), (3, 1), (slice(3, 4, 3), slice(0, 3, 1))),  # one entry left
])
def test_strided_slice_spreads_relevance_back(st, en, steps, pick):
    x = RNG.standard_normal((2, 4, 3, 3)).astype(np.float32)
    part = x[:, pick[0], :, pick[1]]
    m, fw = _slice_model(steps, part.shape[1:], st, en)
    out, report = explain(m, x, conservation=True)
    ref = np.zeros_like(x, dtype=np.float64)
    ref[:, pick[0], :, pick[1]] = head_relevance(part, fw)
    assert_close(out["relevance"], ref)
    np.testing.assert_allclose(out["relsum/input"], ref.sum((1, 2, 3)), rtol=1e-5)
    assert ("Slice", "spread back (strided)" if max(steps) > 1 else "pad back") in \
        [(op, n) for _, op, n in report.rules]


def test_negative_step_slice_is_refused():
    m, _ = _slice_model(steps=(1, -1), st=(1, -1), en=(3, -100))
    with pytest.raises(UnsupportedOpsError, match="positive steps"):
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
