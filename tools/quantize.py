"""Quantize an exported model to int8 QDQ (onnxruntime.quantization.quantize_static),
calibrated on photos, as deployed int8 vision models are made:

    python tools/quantize.py model.onnx -o model.qdq.onnx [--photos DIR] [--count 32]

QDQ format, per-channel 7-bit int8 weights (``--full-range``: 8-bit), uint8 activations,
MinMax calibration on ``--count``
photos (default: the first of ../shared/data/imagenet-sample) preprocessed as ``lrpgraph
build`` would record them (``--size/--resize/--mean/--std``, ImageNet's by default). ORT's
quantizer folds BatchNormalization into the convs first (quant_pre_process) and removes the
Relus after convs (their clamp lives on in the uint8 grid): lrpgraph recognises them again
(rules/qdq.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def calibration_inputs(photos, pre, input_name):
    """One feed per photo (batch 1), preprocessed as ``pre`` says."""
    from lrpgraph.preprocess import prepare

    return [{input_name: prepare(p, pre)[0][None]} for p in photos]


def quantize(model_path, out_path, photos, pre, per_channel=True, reduce_range=True):
    """Write the QDQ model to ``out_path`` (atomically); returns the calibration count."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from lrpgraph.atomic import atomic_path

    name = onnx.load(model_path, load_external_data=False).graph.input[0].name
    feeds = calibration_inputs(photos, pre, name)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.left = iter(feeds)

        def get_next(self):
            return next(self.left, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(model_path, prepared, skip_symbolic_shape=True)
        with atomic_path(out_path) as target:
            quantize_static(prepared, target, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            reduce_range=reduce_range)
    return len(feeds)


def main(argv=None) -> int:
    from lrpgraph.config import Preprocess

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--photos", default=str(SAMPLE), help="a folder of calibration photos")
    p.add_argument("--count", type=int, default=32, help="calibration photos (default 32)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--resize", type=int)
    p.add_argument("--mean", type=float, nargs=3, default=(0.485, 0.456, 0.406))
    p.add_argument("--std", type=float, nargs=3, default=(0.229, 0.224, 0.225))
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default: per channel)")
    p.add_argument("--full-range", action="store_true",
                   help="8-bit weights (default 7-bit, reduce_range: ORT's u8s8 conv on x86 without VNNI sums "
                        "products in int16 and saturates with full-range weights; EfficientNet-Lite0 then agrees "
                        "with the float model's top-1 on 12 of 16 photos instead of 16)")
    args = p.parse_args(argv)
    photos = sorted(q for q in Path(args.photos).iterdir() if q.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if not photos:
        print(f"quantize: no photos in {args.photos}", file=sys.stderr)
        return 2
    pre = Preprocess(size=args.size, resize=args.resize or round(args.size * 256 / 224),
                     mean=tuple(args.mean), std=tuple(args.std))
    n = quantize(args.model, args.output, photos[:args.count], pre, per_channel=not args.per_tensor,
                 reduce_range=not args.full_range)
    print(f"{args.output}: QDQ int8, calibrated on {n} photos from {args.photos}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
