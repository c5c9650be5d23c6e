"""Gather with constant indices: relevance goes back to the entries read (summed where one
is read twice), zeros elsewhere; conserving; indices from the image refused; the gradient
is the same scatter (autograd)."""

import numpy as np
import onnx
import pytest
import torch

from tiny import assert_close, explain, head_relevance, model

from lrpgraph import UnsupportedOpsError, preset
from lrpgraph.driver import build_explainer

RNG = np.random.default_rng(0)


def _gather(indices, axis, h_shape):
    m, fw = model(f"h = Gather <axis = {axis}> (x, idx)", (4, 3, 5), h_shape, {})
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(indices, np.int64), "idx"))
    return m, fw


@pytest.mark.parametrize("indices, axis, h_shape, pick", [
    (0, 1, (3, 5), lambda x: x[:, 0]),  # a class token: one scalar index
    ([1, 2], 2, (4, 2, 5), lambda x: x[:, :, 1:3]),  # a range
    ([4, -5, 4], 3, (4, 3, 3), lambda x: x[:, :, :, [4, 0, 4]]),  # repeats, a negative index
])
def test_gather_sends_relevance_back_where_it_was_read(indices, axis, h_shape, pick):
    m, fw = _gather(indices, axis, h_shape)
    x = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32)
    out, report = explain(m, x, conservation=True)
    r = head_relevance(pick(x), fw)
    xt = torch.zeros(x.shape, dtype=torch.float64, requires_grad=True)
    # the scatter as autograd computes it: d<pick(x), r>/dx
    (pick(xt) * torch.from_numpy(r)).sum().backward()
    ref = xt.grad.numpy()
    assert_close(out["relevance"], ref)
    np.testing.assert_allclose(out["relsum/input"], r.sum(tuple(range(1, r.ndim))), rtol=1e-5)
    expected = "pad back" if np.ndim(indices) == 0 or np.all(np.diff(indices) == 1) else "scatter back (one-hot)"
    assert ("Gather", expected) in [(op, n) for _, op, n in report.rules]


def test_gather_of_image_dependent_indices_is_refused():
    m, _ = model("i = Cast <to = 7> (x)\n        j = Flatten <axis = 0> (i)\n"
                 "        h = Gather <axis = 1> (x, j)", (4, 3, 5), (4 * 60, 3, 5), {})
    with pytest.raises(UnsupportedOpsError, match="constant indices"):
        build_explainer(m, preset("paper"))
