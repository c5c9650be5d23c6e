"""What each LRP composite costs on one model: its explainer's time per batch over ORT's
forward of the same model, in one process and one run (medians of --runs timed calls after
a warm-up, the forward timed between the explainers so a drift of the machine reaches all).

    python tools/bench_composites.py exported_models/efficientnet_lite0.onnx --batch 8 \
        --methods lrp-paper,lrp-conserving,lrp-epsilon-plus-flat,lrp-epsilon-gamma-box,gradcam
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lrpgraph import preset  # noqa: E402
from lrpgraph.cpu_layout import cpu_session  # noqa: E402
from lrpgraph.driver import build_explainer  # noqa: E402


def median_seconds(call, runs):
    call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--methods", default="lrp-paper,lrp-conserving,lrp-epsilon-plus-flat")
    args = ap.parse_args(argv)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    forward = cpu_session(args.model)
    name = forward.get_inputs()[0].name
    rows = []
    for method in args.methods.split(","):
        model, _ = build_explainer(args.model, preset(method=method))
        sess = cpu_session(model.SerializeToString())
        feeds = {name: x, "target": np.full(args.batch, -1, np.int64)}  # -1: the predicted class
        mine = median_seconds(lambda: sess.run(["relevance_map"], feeds), args.runs)
        base = median_seconds(lambda: forward.run(None, {name: x}), args.runs)
        rows.append((method, mine, base))
    print(f"| method | explainer s/batch {args.batch} | ORT forward s | ratio |\n|---|---|---|---|")
    for method, mine, base in rows:
        print(f"| {method} | {mine:.4f} | {base:.4f} | {mine / base:.2f} |")


if __name__ == "__main__":
    main()
