"""A quantized model's explainer against its float model's, on ImageNet photos, and what
the quantized explainer costs:

    python tools/qdq_compare.py FLOAT.onnx QDQ.onnx [--photos 40] [--batch 8]

Agreement: top-1 of the QDQ model vs the float model; the Spearman rank correlation per
photo between the QDQ explainer's map and the float explainer's map for the same target
(the QDQ model's prediction): median and worst. Cost, in one run with alternating rounds
(medians of 3, batch ``--batch``, ORT CPU): QDQ explainer / QDQ forward, QDQ explainer /
float explainer, float explainer / float forward. Photos: every (760 // n)-th of
../shared/data/imagenet-sample from the 41st on (the calibration of tools/quantize.py takes
the first 32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def sessions(float_path, qdq_path, method):
    from lrpgraph import preset
    from lrpgraph.driver import build_explainer
    from lrpgraph.session import open_model

    built = {name: build_explainer(path, preset(method=method))[0] for name, path in
             (("float", float_path), ("qdq", qdq_path))}
    return {"float forward": open_model(float_path, "cpu"), "qdq forward": open_model(qdq_path, "cpu"),
            "float explainer": open_model(built["float"], "cpu"), "qdq explainer": open_model(built["qdq"], "cpu")}


def agreement(s, x, batch):
    from scipy.stats import spearmanr

    rows = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        q = s["qdq explainer"].run(["logits", "relevance_map", "target_used"],
                                   {"input": xb, "target": np.full(len(xb), -1, np.int64)})
        f = s["float explainer"].run(["logits", "relevance_map"], {"input": xb, "target": q[2]})
        for k in range(len(xb)):
            rho = spearmanr(q[1][k].ravel(), f[1][k].ravel())[0]
            rows.append((q[0][k].argmax() == f[0][k].argmax(), rho))
    same, rho = zip(*rows)
    return float(np.mean(same)), float(np.median(rho)), float(np.min(rho))


def timing(s, x, rounds=3):
    feeds = {"input": x}
    explain = {"input": x, "target": np.full(len(x), -1, np.int64)}
    calls = {name: (lambda sess=sess, name=name: sess.run(None, explain if "explainer" in name else feeds))
             for name, sess in s.items()}
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            t = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None) -> int:
    from lrpgraph.config import Preprocess
    from lrpgraph.preprocess import prepare

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("float_model")
    p.add_argument("qdq_model")
    p.add_argument("--photos", type=int, default=40)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--method", default="lrp")
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)
    files = sorted(SAMPLE.glob("*.JPEG"))[40::max(1, 760 // args.photos)][:args.photos]
    pre = Preprocess(size=args.size, resize=round(args.size * 256 / 224))
    x = np.stack([prepare(f, pre)[0] for f in files])
    s = sessions(args.float_model, args.qdq_model, args.method)
    same, median, worst = agreement(s, x, args.batch)
    t = timing(s, x[:args.batch])
    print(f"| {Path(args.qdq_model).name} | {len(x)} | {same:.3f} | {median:.3f} | {worst:.3f} | "
          f"{t['qdq explainer'] / t['qdq forward']:.2f} | {t['qdq explainer'] / t['float explainer']:.2f} | "
          f"{t['float explainer'] / t['float forward']:.2f} | {t['qdq forward'] / t['float forward']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
