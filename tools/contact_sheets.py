"""A contact sheet: photos in rows, one column per method (the photo first), each map
overlaid on its photo as `lrpgraph explain` draws it, explaining the predicted class.

    python tools/contact_sheets.py exported_models/efficientnet_lite0.onnx \
        --list ../shared/data/imagenet-sample/labels.csv --skip 400 --every 32 --count 12 \
        --methods gradcam,lrp-paper,lrp-epsilon-gamma-box -o docs/results/sheet.png

The maps come from eval's own explainers (evaluate.Scorer), so a sheet shows exactly the
maps a RESULTS table scored (``--smooth`` for the smoothed rows).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lrpgraph.config import Preprocess  # noqa: E402
from lrpgraph.evaluate import Scorer, read_dataset  # noqa: E402
from lrpgraph.explain import imagenet_class_names  # noqa: E402
from lrpgraph.heatmaps import Style, colourise, contact_sheet, overlay  # noqa: E402


def panels(scorer, names, path, label, index, columns):
    """One sheet row: the photo (true and predicted class), then each column's overlay."""
    cropped = scorer.load(path)
    p = scorer.predict(cropped[None])[0]
    photo = (cropped * 255).round().astype(np.uint8)
    row = [(photo, f"{names[label][:18]} | pred {names[int(p.argmax())][:14]} {p.max():.2f}")]
    maps = {}
    for column in columns:
        method, _, suffix = column.partition(" ")
        if method not in maps:
            maps[method] = dict(scorer.variants(method, scorer.attribution(method, cropped, index)))
        heat = np.asarray(maps[method][f" {suffix}" if suffix else ""], np.float64)
        style = Style.for_method(method)
        row.append((overlay(photo, heat, colourise(heat, style), style.alpha), column))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--list", required=True, help="'path,label' lines (labels.csv)")
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--methods", required=True, help="comma-separated eval methods")
    ap.add_argument("--smooth", help="sigmas; columns 'METHOD +blurS' then name a smoothed map")
    ap.add_argument("--columns", help="comma-separated columns (default: the methods)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)
    items = read_dataset(None, listing=args.list)[args.skip:][::args.every][:args.count]
    methods = args.methods.split(",")
    smooth = [float(s) for s in args.smooth.split(",")] if args.smooth else ()
    scorer = Scorer(args.model, methods, protocols=("paper",), smooth=smooth,
                    pre=Preprocess(size=args.size, resize=round(args.size * 256 / 224)))
    columns = args.columns.split(",") if args.columns else methods
    names = imagenet_class_names()
    rows = [panels(scorer, names, path, label, n, columns) for n, (path, label) in enumerate(items)]
    contact_sheet(rows, args.output)
    print(f"wrote {args.output}: {len(rows)} photos x {len(columns)} maps")


if __name__ == "__main__":
    main()
