"""The coverage table: one torchvision model per CNN family, seeded weights, built and run.

For each model: seeded weights (torchvision's own init), BatchNorm statistics from
train-mode passes over real photos (so activations have the scale of a trained net),
TorchScript export at opset 17, then ``build`` with the default composite (and
``--composite`` ones beside it), and on real photos from ../shared/data/imagenet-sample:
logits against PyTorch's (max relative difference), relevance finite, "kept" =
sum(relevance_map) / the target's probability per photo, build seconds, and the
explainer's time over the ORT forward's at batch 8 (alternating rounds, medians).

Needs torchvision (pip install torch==2.14.1 torchvision==0.29.1). Results go to a JSON
file, one entry per model, kept between runs (--redo to measure again), and the table to
docs/COVERAGE.md with --markdown.

    python tools/zoo.py [--models resnet18,mobilenet_v2] [--photos 2] [-o zoo.json] [--markdown docs/COVERAGE.md]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FAMILIES = ["resnet18", "resnet50", "wide_resnet50_2", "resnext50_32x4d", "regnet_x_400mf",
            "regnet_y_400mf", "vgg11_bn", "alexnet", "squeezenet1_1", "densenet121", "googlenet",
            "inception_v3", "mobilenet_v2", "mnasnet0_5", "mobilenet_v3_small", "efficientnet_b0",
            "efficientnet_v2_s", "shufflenet_v2_x0_5", "convnext_tiny"]
SIZES = {"inception_v3": 299, "efficientnet_v2_s": 384}
PHOTOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                      "imagenet-sample")


def photos(n, size, folder=PHOTOS):
    from lrpgraph.config import Preprocess
    from lrpgraph.preprocess import prepare

    files = sorted(glob.glob(os.path.join(folder, "*.JPEG")))
    if not files:
        raise SystemExit(f"no ImageNet photos in {folder}; pass --data FOLDER")
    pick = files[:: max(1, len(files) // n)][:n]
    pre = Preprocess(size=size, resize=round(size * 256 / 224))
    return np.stack([prepare(f, pre)[0] for f in pick])


def seeded(name, calibration, seed=0):
    """torchvision's model with its own seeded init and BN statistics from real photos."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    net = torchvision.models.get_model(name, weights=None, **kwargs)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the passes
    net.train()
    with torch.no_grad():
        for chunk in np.array_split(calibration, max(1, len(calibration) // 4)):
            net(torch.from_numpy(chunk))
    return net.eval()


def export(net, path, size):
    import torch

    torch.onnx.export(net, (torch.zeros(1, 3, size, size),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})


def timing(forward, explainer, x, rounds=3):
    """(forward seconds, explainer seconds) per batch, medians of alternating rounds."""
    from lrpgraph.session import predicted_targets

    times = {"f": [], "e": []}
    feeds = {forward.get_inputs()[0].name: x}
    explained = predicted_targets(explainer, {"input": x})
    forward.run(None, feeds), explainer.run(["relevance_map"], explained)  # warm up
    for _ in range(rounds):
        t = time.perf_counter()
        forward.run(None, feeds)
        times["f"].append(time.perf_counter() - t)
        t = time.perf_counter()
        explainer.run(["relevance_map"], explained)
        times["e"].append(time.perf_counter() - t)
    return statistics.median(times["f"]), statistics.median(times["e"])


def _rel(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def measure(name, n_photos, composites, folder=PHOTOS, batch=8):
    import torch

    from lrpgraph import UnsupportedOpsError, preset
    from lrpgraph.driver import build_explainer, inspect
    from lrpgraph.session import open_model, predicted_targets

    size = SIZES.get(name, 224)
    x = photos(max(n_photos, batch), size, folder)
    net = seeded(name, x)
    row = {"model": name, "size": size}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        export(net, path, size)
        report = inspect(path)
        row["composite"] = report.composite
        row["unsupported"] = sorted({op for _, op, _ in report[2]})
        if report[2]:
            return row
        with torch.no_grad():
            ref = net(torch.from_numpy(x[:n_photos])).numpy()
        forward = open_model(path, "cpu", cpu_layout=False)
        onnx_logits = forward.run(None, {"input": x[:n_photos]})[0]
        row["onnx_vs_torch"] = _rel(onnx_logits, ref)
        for comp in composites:
            t = time.perf_counter()
            try:
                model, _ = build_explainer(path, preset("paper", composite=comp))
            except UnsupportedOpsError as exc:  # this composite has no rule for some node
                row[comp] = {"refused": sorted({op for _, op, _ in exc.problems})}
                continue
            entry = {"build_s": round(time.perf_counter() - t, 2)}
            session = open_model(model, "cpu")
            out = dict(zip(["logits", "relevance_map", "target_used"],
                           session.run(["logits", "relevance_map", "target_used"],
                                       predicted_targets(session, {"input": x[:n_photos]}))))
            probs = torch.softmax(torch.from_numpy(ref).double(), 1).numpy()
            start = probs[np.arange(n_photos), out["target_used"]]
            entry["logits_rel"] = _rel(out["logits"], ref)
            entry["logits_vs_onnx"] = _rel(out["logits"], onnx_logits)
            entry["finite"] = bool(np.isfinite(out["relevance_map"]).all())
            entry["kept"] = [round(float(k), 4) for k in out["relevance_map"].sum((1, 2)) / start]
            f, e = timing(forward, session, x[:batch])
            entry.update(forward_s=round(f, 3), explainer_s=round(e, 3), ratio=round(e / f, 2))
            row[comp] = entry
    return row


HEADER = """# Coverage: the torchvision CNN families

Made by `python tools/zoo.py --markdown docs/COVERAGE.md` (torch 2.14.1, torchvision 0.29.1,
ORT CPU, 2 cores). One model per family: torchvision's own seeded init (no ImageNet weights
offline), BatchNorm statistics from train-mode passes over 8 ImageNet photos, TorchScript
export at opset 17, `lrpgraph build` with each composite. *kept* = sum(relevance_map) / the
target's probability, on 2 ImageNet photos (min-max); the default composite is what `lrp`
picks (`inspect` prints it). *logits* is max |explainer logits - PyTorch's| / max |PyTorch's|
(float32 both; the explainer's forward is the model's own graph). The time ratio is the
explainer's call over the ORT forward's at batch 8 (medians of 3 alternating rounds, on a
machine busy with other work: read them to +-20 %).

"""


def _kept(entry) -> str:
    if not entry:
        return ""
    if "refused" in entry:
        return "refused (" + ", ".join(entry["refused"]) + ")"
    return f"{min(entry['kept']):.3f}–{max(entry['kept']):.3f}"


def markdown(rows, composites) -> str:
    head = ["model", "input", "default composite"] + [f"kept ({c})" for c in composites] + \
        ["logits rel. diff", "build s (default)"] + [f"explainer / forward, batch 8 ({c})" for c in composites]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if row.get("unsupported") or "error" in row:
            why = row.get("error") or "refused: " + ", ".join(row["unsupported"])
            lines.append(f"| {row['model']} | {row.get('size', '')} | {why} |" + " |" * (len(head) - 3))
            continue
        main = row[row["composite"]]
        kept = [_kept(row.get(c)) for c in composites]
        ratios = [f"{row[c]['ratio']:.2f}" if "ratio" in row.get(c, {}) else "" for c in composites]
        lines.append(f"| {row['model']} | {row['size']} | {row['composite']} | " + " | ".join(kept) +
                     f" | {main['logits_rel']:.1e} | {main['build_s']:.1f} | " + " | ".join(ratios) + " |")
    return HEADER + "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(FAMILIES))
    p.add_argument("--photos", type=int, default=2, help="photos the kept share is measured on")
    p.add_argument("--data", default=PHOTOS, help="the ImageNet sample (default: ../shared's)")
    p.add_argument("--composites", default="paper,conserving")
    p.add_argument("-o", "--output", default="zoo.json")
    p.add_argument("--redo", action="store_true")
    p.add_argument("--markdown", help="write the table here (e.g. docs/COVERAGE.md's table file)")
    args = p.parse_args(argv)
    composites = args.composites.split(",")
    done = json.load(open(args.output)) if os.path.exists(args.output) else {}
    for name in args.models.split(","):
        if name in done and not args.redo:
            continue
        t = time.perf_counter()
        try:
            done[name] = measure(name, args.photos, composites, args.data)
        except Exception as exc:  # one family's failure is a row of the table, not the end
            done[name] = {"model": name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            traceback.print_exc()
        print(name, f"{time.perf_counter() - t:.0f}s", json.dumps(done[name]), flush=True)
        tmp = args.output + ".tmp"
        json.dump(done, open(tmp, "w"), indent=1)
        os.replace(tmp, args.output)
    if args.markdown:
        rows = [done[n] for n in args.models.split(",") if n in done]
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, composites))


if __name__ == "__main__":
    main()
