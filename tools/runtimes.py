"""One explainer on several ONNX runtimes: ORT CPU (the baseline), onnxruntime-web (wasm,
in Node), OpenVINO CPU and onnx's reference evaluator; the max relative difference of
each output against ORT CPU and the time per image.

    python tools/runtimes.py EXPLAINER.onnx [photos...] [--batch 2] [--runtimes ort,web,openvino]

Photos are preprocessed as the explainer's metadata says (default: the first ``--batch``
photos of ../shared/data/imagenet-sample); ``--random`` feeds seeded noise instead. The
target is -1 (the predicted class). onnxruntime-web comes from ``npm ci`` in the repository
(package.json); OpenVINO from ``pip install openvino``. The reference evaluator is slow:
for tiny models only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NODE_RUNNER = ROOT / "lrpgraph" / "web" / "run_node.mjs"
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"
# What an explainer may hold: every op the relevance graphs of lrpgraph's methods emit
# (measured over ResNet50, EfficientNet-Lite0, GoogLeNet, SqueezeNet, ShuffleNet and a
# TF-'same' padding net, every method and output option) and the forward ops of the model
# families it explains. ORT-web (wasm) and OpenVINO CPU run them all (tests/test_runtimes.py);
# TensorRT's matrix lists every one (docs/RUNTIMES.md). Score-CAM alone adds a Scan.
PORTABLE_OPS = frozenset({
    "Abs", "Add", "And", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Equal", "Expand", "Flatten", "Floor", "Gather",
    "GatherElements", "Gemm", "GlobalAveragePool", "Greater", "GreaterOrEqual", "Identity", "Less", "MaxPool",
    "Min", "Mul", "Pad", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Resize",
    "ScatterElements", "Shape", "Size", "Slice", "Softmax", "Split", "Sqrt", "Sub", "Tile", "TopK", "Transpose",
    "Unsqueeze", "Where",
    # forward ops of the CNN families (docs/COVERAGE.md) that the relevance graph keeps
    "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "LeakyRelu", "PRelu", "Elu", "Softplus", "Gelu",
    "LayerNormalization", "MatMul", "Max", "Pow", "Neg", "Exp", "Squeeze",
})
COMPARED = ("logits", "relevance_map", "relevance_maps", "target_used", "targets_used")


def ort_cpu(path, feeds, rounds, threads=None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return _timed(lambda: dict(zip(names, sess.run(names, feeds))), rounds)


def openvino_cpu(path, feeds, rounds, threads=None):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}  # never bf16, whatever the CPU offers
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()

    def once():
        request.infer(feeds)
        return {o.get_any_name(): request.get_tensor(o).data.copy() for o in compiled.outputs}
    return _timed(once, rounds)


def reference(path, feeds, rounds, threads=None):
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(path))
    names = list(evaluator.output_names)
    return _timed(lambda: dict(zip(names, evaluator.run(None, feeds))), rounds)


def ort_web(path, feeds, rounds, threads=None):
    """onnxruntime-web's wasm backend in Node: feeds and outputs cross as raw files."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed (apt install nodejs)")
    with tempfile.TemporaryDirectory() as folder:
        listing = []
        for name, value in feeds.items():
            file = f"in_{len(listing)}.bin"
            np.ascontiguousarray(value).tofile(os.path.join(folder, file))
            listing.append({"name": name, "file": file, "dtype": str(value.dtype), "dims": list(value.shape)})
        Path(folder, "feeds.json").write_text(json.dumps(listing))
        env = {**os.environ, "NODE_PATH": str(ROOT / "node_modules")}
        done = subprocess.run([node, str(NODE_RUNNER), str(path), folder, str(threads or 1), str(rounds)],
                              capture_output=True, text=True, env=env)
        if done.returncode:
            raise RuntimeError(f"onnxruntime-web failed: {done.stderr.strip()[-600:]} "
                               "(is it installed? run `npm ci` in the repository)")
        result = json.loads(Path(folder, "result.json").read_text())
        outputs = {name: np.fromfile(os.path.join(folder, o["file"]), dtype=o["dtype"]).reshape(o["dims"])
                   for name, o in result["outputs"].items()}
    return outputs, statistics.median(result["seconds"]) if result["seconds"] else float("nan")


RUNTIMES = {"ort": ort_cpu, "web": ort_web, "openvino": openvino_cpu, "reference": reference}
LABELS = {"ort": "ORT CPU (Python)", "web": "onnxruntime-web wasm (Node)", "openvino": "OpenVINO CPU",
          "reference": "onnx reference evaluator"}


def _timed(fn, rounds):
    out = fn()  # warm-up
    seconds = []
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t)
    return out, statistics.median(seconds) if seconds else float("nan")


def explainer_feeds(path, photos=(), batch=2, random=False, seed=0) -> dict:
    """The explainer's feeds: ``photos`` (or the sample's first ``batch``) preprocessed as
    its metadata says, or seeded noise; every target -1."""
    from lrpgraph.explain import Explainer
    from lrpgraph.preprocess import prepare

    ex = Explainer(str(path), provider="cpu")
    if random:
        shape = [batch if not isinstance(d, int) else d for d in ex.input_shape]
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    else:
        photos = list(photos) or sorted(SAMPLE.glob("*.JPEG"))[:batch]
        x = np.stack([prepare(p, ex.preprocess)[0] for p in photos]).astype(np.float32)
    feeds = {ex.input_name: x}
    if ex.takes_target:
        feeds[ex.target_input] = np.full((len(x), *([ex.k] if ex.k else [])), -1, np.int64)
    return feeds


def rel_diff(got, want) -> float:
    """max |got - want| / max |want| (an exact 0 for equal integer outputs)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.abs(want).max()
    return float(np.abs(got - want).max() / scale) if scale else float(np.abs(got).max())


def compare(path, feeds, runtimes=("ort", "web", "openvino"), rounds=3, threads=None) -> list[dict]:
    """A row per runtime: each compared output's max relative difference to ORT CPU, the
    seconds per image (median of ``rounds``), or the error that stopped it."""
    n = len(next(iter(feeds.values())))
    base, base_s = ort_cpu(path, feeds, rounds, threads)
    rows = [{"runtime": "ort", "s_per_image": base_s / n, "diff": {k: 0.0 for k in base if k in COMPARED}}]
    for name in runtimes:
        if name == "ort":
            continue
        try:
            out, seconds = RUNTIMES[name](path, feeds, rounds, threads)
        except Exception as exc:  # a runtime that cannot run it is a finding, not a crash
            rows.append({"runtime": name, "error": str(exc).splitlines()[0][:300]})
            continue
        rows.append({"runtime": name, "s_per_image": seconds / n,
                     "diff": {k: rel_diff(out[k], base[k]) for k in base if k in COMPARED}})
    return rows


def markdown(rows, title) -> str:
    keys = [k for k in COMPARED if any(k in r.get("diff", {}) for r in rows)]
    lines = [f"**{title}**", "", "| runtime | " + " | ".join(f"{k} max rel diff" for k in keys)
             + " | s / image |", "|---" * (len(keys) + 2) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {LABELS[r['runtime']]} | refused: {r['error']} |" + " |" * len(keys))
            continue
        cells = [f"{r['diff'][k]:.1e}" if k in r["diff"] else "" for k in keys]
        lines.append(f"| {LABELS[r['runtime']]} | " + " | ".join(cells) + f" | {r['s_per_image']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("explainer")
    p.add_argument("photos", nargs="*")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--random", action="store_true", help="seeded noise instead of photos")
    p.add_argument("--runtimes", default="ort,web,openvino", help="comma-separated: " + ",".join(RUNTIMES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, help="threads per runtime (default: ORT/OpenVINO all, web 1)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    feeds = explainer_feeds(args.explainer, args.photos, args.batch, args.random)
    rows = compare(args.explainer, feeds, args.runtimes.split(","), args.rounds, args.threads)
    n = len(next(iter(feeds.values())))
    print(markdown(rows, f"{Path(args.explainer).name}, batch {n}"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
