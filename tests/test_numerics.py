"""Property tests: no NaN or Inf leaves an explainer, relevance is never created, and it is
conserved wherever the denominators are non-zero. Small residual nets (identity and
projection skips) under hypothesis, then ResNet18."""

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import image_batch, run, session
from lrpgraph import preset
from lrpgraph.driver import build_explainer

NET = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N, 3, 8, 8] x) => (float[N, 5] y)
    <float[4, 3, 3, 3] w1, float[4, 4, 3, 3] w2, float[4, 4, 3, 3] w3,
     float[6, 4, 3, 3] w4, float[6, 4, 1, 1] wd, float[5, 6] fw, float[5] fb> {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1)
    r1 = Relu (c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2)
    r2 = Relu (c2)
    c3 = Conv <pads = [1, 1, 1, 1]> (r2, w3)
    h1 = Add (c3, r1)
    a1 = Relu (h1)
    c4 = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (a1, w4)
    d = Conv <strides = [2, 2]> (a1, wd)
    h2 = Add (d, c4)
    a2 = Relu (h2)
    p = GlobalAveragePool (a2)
    f = Flatten (p)
    y = Gemm <transB = 1> (f, fw, fb)
}
"""
SHAPES = {"w1": (4, 3, 3, 3), "w2": (4, 4, 3, 3), "w3": (4, 4, 3, 3), "w4": (6, 4, 3, 3),
          "wd": (6, 4, 1, 1), "fw": (5, 6), "fb": (5,)}

# What can go wrong in a layer's weights: all-negative filters (z+ denominator 0), zero
# (dead branch; with "zero_branch" on both w3 and wd... the merge sees 0 + 0).
PATTERNS = ["normal", "all_negative", "zero"]


def tiny_net(seed, patterns):
    rng = np.random.default_rng(seed)
    model = onnx.parser.parse_model(NET)
    for name, shape in SHAPES.items():
        w = rng.standard_normal(shape).astype(np.float32)
        kind = patterns.get(name, "normal")
        if kind == "all_negative":
            w = -np.abs(w)
        elif kind == "positive":
            w = np.abs(w)
        elif kind == "zero":
            w = np.zeros_like(w)
        model.graph.initializer.append(onnx.numpy_helper.from_array(w, name))
    return model


def make_input(kind, scale, batch, rng, size=8):
    shape = (batch, 3, size, size)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "constant":
        return np.full(shape, scale, np.float32)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def check_outputs(out, dtype, strict):
    for name, value in out.items():
        if name == "logits" or value.dtype.kind != "f":
            continue
        assert np.isfinite(value).all(), name
    for key in [k for k in out if k.endswith("/out")]:
        r_out, r_in = out[key], out[key[:-3] + "in"]
        slack = 2e-2 if dtype == "float16" else 1e-4
        # relevance is never created: z+ keeps it non-negative and only absorbs it
        assert (r_in >= -slack * np.abs(r_out)).all(), key
        assert (r_in <= r_out * (1 + slack) + 1e-30).all(), key
        if strict:
            np.testing.assert_allclose(r_in, r_out, rtol=1e-3, err_msg=key)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16),
       patterns=st.fixed_dictionaries({name: st.sampled_from(PATTERNS) for name in ("w1", "w3", "wd", "fw")}),
       input_kind=st.sampled_from(["zeros", "constant", "normal"]),
       scale=st.sampled_from([1e-30, 1e-6, 1.0, 1e6, 1e20]),
       batch=st.sampled_from([1, 64]),
       dtype=st.sampled_from(["float32", "float16"]),
       split=st.sampled_from(["ratio", "symmetric"]))
def test_tiny_residual_nets_never_emit_nan(seed, patterns, input_kind, scale, batch, dtype, split):
    if dtype == "float16":
        scale = min(scale, 1e3)  # beyond float16's range the forward pass itself overflows
    model = tiny_net(seed, patterns)
    explainer, _ = build_explainer(model, preset("paper", split=split, conservation=True,
                                                 full_relevance=True, dtype=dtype))
    x = make_input(input_kind, scale, batch, np.random.default_rng(seed))
    out = run(explainer, {"input": x})
    check_outputs(out, dtype, strict=False)


@pytest.mark.parametrize("seed", range(5))
def test_conservation_where_denominators_are_nonzero(seed):
    # Positive conv weights on a positive image: every activation is > 0, so no z+
    # denominator is 0 and every layer must conserve. (With signed weights a position whose
    # positive-weight inputs are all 0 absorbs its relevance, as SPEC.md allows.)
    convs = {name: "positive" for name in ("w1", "w2", "w3", "w4", "wd")}
    explainer, _ = build_explainer(tiny_net(seed, convs), preset("paper", conservation=True))
    x = np.abs(make_input("normal", 1.0, 4, np.random.default_rng(seed))) + 0.1
    check_outputs(run(explainer, {"input": x}), "float32", strict=True)


def test_both_branches_zero_split_evenly_without_nan():
    model = tiny_net(0, {"w3": "zero"})
    explainer, _ = build_explainer(model, preset("paper", conservation=True))
    x = np.zeros((2, 3, 8, 8), np.float32)  # r1 = 0 and c3 = 0: the first merge is 0/0
    out = run(explainer, {"input": x})
    check_outputs(out, "float32", strict=False)
    merge = [k for k in out if k.startswith("relsum/Add") and k.endswith("/out")]
    assert merge  # the merges were probed
    for key in merge:
        np.testing.assert_allclose(out[key[:-3] + "in"], out[key], rtol=1e-6)


@pytest.mark.parametrize("kind,scale", [("zeros", 0.0), ("constant", 3.0), ("normal", 1e-30),
                                        ("normal", 1e6), ("normal", 1e30)])
def test_resnet18_extreme_inputs(resnets, kind, scale):
    _, path = resnets["resnet18"]
    explainer, _ = build_explainer(path, preset("paper", conservation=True, maxpool="winner"))
    x = make_input(kind, scale, 2, np.random.default_rng(1), size=224)
    out = run(explainer, {"input": x})
    check_outputs(out, "float32", strict=False)
    np.testing.assert_allclose(out["relsum/input"], out["relsum/start"], rtol=5e-2)


def test_resnet18_batch_64(resnets):
    _, path = resnets["resnet18"]
    explainer, _ = build_explainer(path)
    sess = session(explainer)
    x = image_batch(64, seed=20)
    (rmap,) = sess.run(["relevance_map"], {"input": x, "target": np.full(64, -1, np.int64)})
    assert rmap.shape == (64, 224, 224) and np.isfinite(rmap).all()
    (one,) = sess.run(["relevance_map"], {"input": x[63:], "target": np.array([-1], np.int64)})
    assert np.abs(rmap[63] - one[0]).max() <= 1e-5 * np.abs(one).max()
