"""Top-1 / top-5 accuracy of an ONNX classifier on the ImageNet sample (800 photos, one per
class: ../shared/data/imagenet-sample/labels.csv): the sanity check of a model's
preprocessing (a large gap to its published accuracy means a preprocessing bug).

    python tools/accuracy.py exported_models/efficientnet_lite1.onnx --size 240 --resize 272
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LABELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                      "imagenet-sample", "labels.csv")


def accuracy(model, size, resize, listing=LABELS, batch=32, progress=True):
    from lrpgraph.config import Preprocess
    from lrpgraph.evaluate import read_dataset
    from lrpgraph.preprocess import prepare
    from lrpgraph.session import open_model

    items = read_dataset(None, listing=listing)
    pre = Preprocess(size=size, resize=resize)
    session = open_model(model, "cpu", cpu_layout=False)
    name = session.get_inputs()[0].name
    top1 = top5 = 0
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        x = np.stack([prepare(path, pre)[0] for path, _ in chunk])
        logits = session.run(None, {name: x})[0]
        best = np.argsort(-logits, axis=1)[:, :5]
        labels = np.array([label for _, label in chunk])
        top1 += int((best[:, 0] == labels).sum())
        top5 += int((best == labels[:, None]).any(1).sum())
        if progress:
            print(f"\r{start + len(chunk)}/{len(items)}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return {"model": os.path.basename(str(model)), "images": len(items), "size": size, "resize": resize,
            "top1": top1 / len(items), "top5": top5 / len(items)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--resize", type=int, help="short side before the crop (default: size + 32)")
    p.add_argument("--list", default=LABELS, help="path,label list (default: the 800 sample photos)")
    args = p.parse_args(argv)
    print(json.dumps(accuracy(args.model, args.size, args.resize or args.size + 32, args.list)))


if __name__ == "__main__":
    main()
