"""Full-size vision transformers, measured: build, logits against PyTorch, the map against
LXT's CP-LRP for ViT (float64, tools/export_vit.py) and the PyTorch re-derivation
(tests/reference_transformers.py) for Swin and MaxViT, ``lrpgraph check`` (conservation per rule,
the share kept end to end), and the explainer's time over the ORT forward's at batch 8
(alternating rounds, medians), on real photos from ../shared/data/imagenet-sample.

Seeded weights (torchvision's init, the head seeded as export_vit.py says): no ImageNet
transformer weights can be had offline, so the figures are about the explainer's
faithfulness and cost, not about what the model has learned.

    python tools/vit_report.py [--models vit_b_16] [--photos 8] [-o vit.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _rel(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _check(path, n):
    """(share kept end to end per photo, rules above tolerance) of lrpgraph check on ``n``
    photos of the sample (the ones zoo.photos picks)."""
    import glob

    from lrpgraph import preset
    from lrpgraph.check import check
    from zoo import PHOTOS

    files = sorted(glob.glob(os.path.join(PHOTOS, "*.JPEG")))
    report = check(path, images=files[:: max(1, len(files) // n)][:n],
                   config=preset("paper", method="lrp-transformer"))
    kept = report.total.astype(np.float64) / report.start.astype(np.float64)
    return [round(float(k), 4) for k in kept], [(l.node, l.error) for l in report.failures]


def measure(name, n_photos, batch=8):
    import torch

    from export_vit import build, export, lxt_relevance, size_of
    from lrpgraph import preset
    from lrpgraph.driver import build_explainer
    from lrpgraph.session import open_model, predicted_targets
    from reference_transformers import relevance as reference_relevance
    from zoo import photos, timing

    size = size_of(name)
    x = photos(max(n_photos, batch), size)
    net = build(name)
    row = {"model": name, "size": size, "photos": n_photos}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        export(net, path, size)
        t = time.perf_counter()
        model, report = build_explainer(path, preset("paper", method="lrp-transformer"))
        row["build_s"] = round(time.perf_counter() - t, 1)
        session = open_model(model, "cpu")
        out = session.run(["logits", "relevance_map", "target_used"],
                          predicted_targets(session, {"input": x[:n_photos]}))
        with torch.no_grad():
            ref_logits = net(torch.from_numpy(x[:n_photos])).numpy()
        row["logits_vs_torch"] = _rel(out[0], ref_logits)
        if name.startswith("vit"):
            row["oracle"], ref = "LXT cp_LRP", lxt_relevance(name, net, x[:n_photos], out[2])["pixels"].sum(1)
        else:
            row["oracle"] = "tests/reference_transformers.py"
            ref = reference_relevance(net, x[:n_photos], out[2]).sum(1)
        row["map_vs_oracle"] = [round(_rel(out[1][i], ref[i]), 7) for i in range(n_photos)]
        row["finite"] = bool(np.isfinite(out[1]).all())
        row["kept"], row["above_tolerance"] = _check(path, 4)
        forward = open_model(path, "cpu", cpu_layout=False)
        f, e = timing(forward, session, x[:batch])
        row.update(forward_s=round(f, 3), explainer_s=round(e, 3), ratio=round(e / f, 2))
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vit_b_16")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("-o", "--output", default="vit_report.json")
    args = parser.parse_args(argv)
    from lrpgraph.atomic import atomic_path

    rows = [measure(name, args.photos) for name in args.models.split(",")]
    with atomic_path(args.output) as tmp, open(tmp, "w") as fh:
        json.dump(rows, fh, indent=1)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
