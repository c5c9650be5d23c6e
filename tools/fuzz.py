"""Fuzz the build and the explainers with random residual CNNs, independent of the
hypothesis tests: ONNX graphs written here directly (no torch), built with the default
composite and with ``--maxpool winner``, explained on zeros, constants, inputs scaled from
1e-30 to 1e30 and random ones.

    python tools/fuzz.py --models 400 --seed 0 [-o fuzz.json]

Counts: build failures by reason, NaN/Inf rows (with finite logits), logits that differ from
the model's own, and the distribution of kept relevance (sum of the map / the start).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCALES = (0.0, 1e-30, 1e-10, 1e-3, 1.0, 1e3, 1e10, 1e20, 1e30)
# what each row of inputs() is
KINDS = ["zeros", "constant"] + [f"x{s:g}" for s in SCALES[1:]] + ["random", "random"]


class Net:
    """A random residual CNN in ONNX: a stem conv, blocks (conv-relu-conv + skip, identity
    or a strided 1x1 projection), an optional MaxPool, GlobalAveragePool and a Gemm head."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.nodes, self.inits, self.n = rng, [], [], 0

    def _name(self, kind):
        self.n += 1
        return f"{kind}{self.n}"

    def weight(self, shape, scale=None):
        name = self._name("w")
        scale = scale if scale is not None else 1.0 / np.sqrt(np.prod(shape[1:]))
        self.inits.append(nh.from_array((self.rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def node(self, op, inputs, **attrs):
        out = self._name(op.lower())
        self.nodes.append(h.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1):
        return self.node("Conv", [x, self.weight((cout, cin, k, k))], pads=[k // 2] * 4, strides=[stride] * 2)

    def block(self, x, c, size):
        stride = 2 if size >= 8 and self.rng.random() < 0.4 else 1
        cout = c * 2 if stride == 2 else c
        y = self.node("Relu", [self.conv(x, c, cout, 3, stride)])
        y = self.conv(y, cout, cout, 3)
        skip = x if stride == 1 else self.conv(x, c, cout, 1, stride)
        order = [skip, y] if self.rng.random() < 0.5 else [y, skip]
        return self.node("Relu", [self.node("Add", order)]), cout, size // stride

    def model(self, size=16, classes=10):
        c = int(self.rng.choice([4, 8]))
        x = self.node("Relu", [self.conv("input", 3, c, 3)])
        if self.rng.random() < 0.5:
            x = self.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
            size //= 2
        for _ in range(int(self.rng.integers(1, 4))):
            x, c, size = self.block(x, c, size)
        flat = self.node("Flatten", [self.node("GlobalAveragePool", [x])])
        self.nodes.append(h.make_node("Gemm", [flat, self.weight((classes, c)), self.weight((classes,), 0.1)],
                                      ["logits"], transB=1, name="head"))
        graph = h.make_graph(self.nodes, "fuzz", [h.make_tensor_value_info("input", T.FLOAT, ["N", 3, 16, 16])],
                             [h.make_tensor_value_info("logits", T.FLOAT, ["N", classes])], self.inits)
        return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def inputs(rng):
    """Zeros, a constant, one random image at every scale, and two plain random ones."""
    base = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    rows = [np.zeros_like(base), np.full_like(base, 0.5)] + [base * np.float32(s) for s in SCALES[1:]]
    return np.concatenate(rows + [rng.standard_normal((2, 3, 16, 16)).astype(np.float32)])


def fuzz_one(model, x, tallies, maxpool):
    from conftest import session  # the CPU sessions users get
    from lrpgraph import LrpGraphError, preset
    from lrpgraph.driver import build_explainer
    from lrpgraph.session import predicted_targets

    try:
        explainer, _ = build_explainer(model, preset("paper", maxpool=maxpool, conservation=True))
    except LrpGraphError as exc:
        tallies["build_failed"][str(exc).splitlines()[-1][:90] if "\n" in str(exc) else str(exc)[:90]] += 1
        return
    sess = session(explainer)
    out = dict(zip(["logits", "relevance_map", "relsum/start"],
                   sess.run(["logits", "relevance_map", "relsum/start"], predicted_targets(sess, {"input": x}))))
    forward = session(model.SerializeToString()).run(None, {"input": x})[0]
    finite = np.isfinite(out["logits"]).all(1)
    tallies["explanations"] += len(x)
    tallies["nonfinite_rows"] += int((finite & ~np.isfinite(out["relevance_map"]).all((1, 2))).sum())
    # per row, relative to the row's largest logit: ORT may fuse the two graphs differently
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.abs(forward).max(1), 1e-30)
        error = np.abs(out["logits"].astype(np.float64) - forward).max(1) / scale
    tallies["logits_mismatch_rows"] += int((np.isfinite(forward).all(1) & ~(error <= 1e-5)).sum())
    start = out["relsum/start"].astype(np.float64)
    ok = finite & (start > 0) & np.isfinite(out["relevance_map"]).all((1, 2))
    kept = out["relevance_map"].reshape(len(x), -1).sum(1) / np.where(ok, start, 1)
    for kind, value, good in zip(KINDS, kept, ok):
        if good:
            tallies["kept"].append(float(value))
            tallies["kept_by_input"].setdefault(kind, []).append(float(value))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=400, help="random models (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the models and inputs (default 0)")
    parser.add_argument("-o", "--output", help="write the tallies as JSON here")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    report = {}
    for maxpool in ("avg2x2", "winner"):
        rng = np.random.default_rng(args.seed)
        tallies = {"build_failed": Counter(), "explanations": 0, "nonfinite_rows": 0,
                   "logits_mismatch_rows": 0, "kept": [], "kept_by_input": {}}
        for _ in range(args.models):
            fuzz_one(Net(rng).model(), inputs(rng), tallies, maxpool)
        kept = np.array(tallies.pop("kept"))
        tallies["kept_quantiles"] = dict(zip(["p5", "p25", "median", "p75", "p95"],
                                             np.percentile(kept, [5, 25, 50, 75, 95]).round(4).tolist())) \
            if len(kept) else {}
        tallies["kept_below_0.5"] = int((kept < 0.5).sum())
        tallies["kept_median_by_input"] = {k: round(float(np.median(v)), 4)
                                           for k, v in tallies.pop("kept_by_input").items()}
        tallies["build_failed"] = dict(tallies["build_failed"])
        report[maxpool] = tallies
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
