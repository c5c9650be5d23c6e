"""Export a ResNet to ONNX for lrpgraph: BatchNormalization kept as nodes (the paper preset
applies z+ to the raw conv weights), dynamic batch, opset >= 17.

    python tools/export_resnet.py resnet50 -o exported_models/resnet50.onnx --seed 0
    python tools/export_resnet.py resnet50 --weights IMAGENET1K_V1 -o exported_models/resnet50.onnx
    python tools/export_resnet.py resnet50 --checkpoint cub.pth --num-classes 200 -o cub.onnx

Weights: ``--weights`` (a torchvision weights name; needs torchvision and either a
download or the file already in torch's hub cache), ``--checkpoint`` (a state dict), or
``--seed`` (random weights with non-trivial BatchNorm statistics, for tests and demos).
``--weights W --seed S`` uses the seed when the weights cannot be had, and says so.
Without torchvision the architectures come from tools/torch_resnets.py (same module names,
so torchvision checkpoints load).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch_resnets  # noqa: E402

ARCHS = sorted(torch_resnets.ARCHS)


class ExportError(Exception):
    pass


def build_model(arch, num_classes=1000, weights=None, checkpoint=None, seed=None):
    """Return (model in eval mode, description of its weights)."""
    import torch

    if weights:
        try:
            return _torchvision_model(arch, weights), f"torchvision {weights}"
        except ExportError as exc:
            if seed is None:
                raise
            print(f"export_resnet: {exc}\nexport_resnet: using random weights (seed {seed}) "
                  "instead; heatmaps of such a model show structure, not meaning.", file=sys.stderr)
    model = torch_resnets.make(arch, num_classes)
    if checkpoint:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ExportError(f"{checkpoint}: cannot read the state dict ({exc})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ExportError(f"{checkpoint} does not fit {arch} with {num_classes} classes: "
                              f"{str(exc).splitlines()[0]} (set --num-classes?)") from None
        return model.eval(), f"checkpoint {os.path.basename(checkpoint)}"
    seed = 0 if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch_resnets.make(arch, num_classes)
    torch_resnets.randomise_batchnorm(model, generator)
    return model.eval(), f"random (seed {seed})"


def _torchvision_model(arch, weights):
    try:
        import torchvision
    except Exception:
        raise ExportError(
            f"--weights {weights}: torchvision is not installed. It needs another torch than the "
            "README's CPU wheel (torch==2.13.0): pip install torch==2.14.1 torchvision==0.29.1 "
            "(5.5 GB, a CUDA build). Or pass --checkpoint FILE.pth, which needs torch alone") from None
    try:
        enum = torchvision.models.get_model_weights(arch)
        w = enum[weights] if weights in enum.__members__ else enum.verify(weights)
    except Exception as exc:
        raise ExportError(f"--weights {weights}: not a weights name of {arch} ({exc})") from None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)  # an offline machine must fail, not hang
    try:
        model = torchvision.models.get_model(arch, weights=w)
    except Exception as exc:
        raise ExportError(
            f"--weights {weights}: could not load {w} ({type(exc).__name__}: {exc}); this "
            "machine cannot download it. Put the file in torch's hub cache or use --checkpoint."
        ) from None
    finally:
        socket.setdefaulttimeout(old)
    return model.eval()


def export(model, path, image_size=224, opset=17, exporter="torchscript", fold_bn=False):
    """Write ``model`` to ``path`` (atomically): input ``input`` N x 3 x S x S, output
    ``logits``, dynamic batch."""
    import torch

    from lrpgraph.atomic import atomic_path

    import warnings

    x = torch.zeros(2, 3, image_size, image_size)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # torch nags about the TorchScript exporter and about constant folding with
        # training=PRESERVE; the model is in eval mode, and the exporter is chosen on purpose.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        if exporter == "dynamo":
            if fold_bn:
                raise ExportError("--fold-bn is only available with the torchscript exporter")
            batch = torch.export.Dim("N", min=1, max=4096)
            program = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=max(opset, 18),
                                        input_names=["input"], output_names=["logits"],
                                        dynamic_shapes={"x": {0: batch}}, verbose=False)
            program.save(tmp)
        else:
            mode = torch.onnx.TrainingMode.EVAL if fold_bn else torch.onnx.TrainingMode.PRESERVE
            torch.onnx.export(model, (x,), tmp, dynamo=False, opset_version=opset, training=mode,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", choices=ARCHS)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--weights", help="torchvision weights name, e.g. IMAGENET1K_V1")
    p.add_argument("--checkpoint", help="a state dict (.pth) to load")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--seed", type=int, help="random weights with this seed")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript")
    p.add_argument("--fold-bn", action="store_true", help="fold BN into the convs (not the paper)")
    args = p.parse_args(argv)
    if args.opset < 17:
        p.error("--opset must be >= 17")
    try:
        model, described = build_model(args.arch, args.num_classes, args.weights, args.checkpoint, args.seed)
        export(model, args.output, args.image_size, args.opset, args.exporter, args.fold_bn)
    except ExportError as exc:
        print(f"export_resnet: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.arch} ({described}) to {args.output} with the {args.exporter} exporter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
