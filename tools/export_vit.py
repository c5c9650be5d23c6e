"""Vision transformers for the tests and tools: torchvision's ViT (a small configuration for
the tests, vit_b_16 full size), seeded, exported as the coverage table's CNNs are
(TorchScript, opset 17, dynamic batch), and LXT's CP-LRP relevance on the same weights as
the oracle.

torchvision zero-initialises a ViT's head, which would make every logit 0: the head gets
seeded normal weights (std 0.02) instead. LXT's monkey_patch replaces the forward of
torch.nn.GELU, LayerNorm and MultiheadAttention for the whole process, so the oracle runs
in a process of its own (``--lxt``), in float64.

    python tools/export_vit.py vit_b_16 -o vit_b_16.onnx
    python tools/export_vit.py small --lxt STATE.pt INPUTS.npz OUT.npy
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SMALL = dict(image_size=64, patch_size=16, num_layers=3, num_heads=4, hidden_dim=64, mlp_dim=128,
             num_classes=10)
# Swin with shifted windows in its first two stages and two patch mergings; MaxViT with
# block and grid attention, MBConv + SE, in two blocks (one downsampling shortcut each)
SMALL_SWIN = dict(patch_size=[4, 4], embed_dim=16, depths=[2, 2, 2], num_heads=[1, 2, 4],
                  window_size=[4, 4], num_classes=10)
SMALL_MAXVIT = dict(input_size=(64, 64), stem_channels=16, partition_size=4, block_channels=[16, 32],
                    block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10)


def build(name: str, seed: int = 0):
    """``small``, ``small_swin``, ``small_maxvit`` (the configurations above) or a
    torchvision model name, seeded, in eval mode."""
    import torch
    import torchvision
    from torchvision.models.maxvit import MaxVit
    from torchvision.models.swin_transformer import SwinTransformer
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    small = {"small": (VisionTransformer, SMALL), "small_swin": (SwinTransformer, SMALL_SWIN),
             "small_maxvit": (MaxVit, SMALL_MAXVIT)}
    if name in small:
        net = small[name][0](**small[name][1])
    else:
        net = torchvision.models.get_model(name, weights=None)
    heads = getattr(net, "heads", None)
    for p in (heads.parameters() if heads is not None else []):
        torch.nn.init.normal_(p, std=0.02)
    return net.eval()


def size_of(name: str) -> int:
    return 64 if name.startswith("small") else 224


def export(net, path: str, size: int) -> None:
    import torch

    from lrpgraph.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), tmp, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})


def _lxt_in_process(name, state, inputs, out):
    import torch
    from lxt.efficient import monkey_patch
    from torchvision.models import vision_transformer

    net = build(name)
    net.load_state_dict(torch.load(state))
    monkey_patch(vision_transformer)  # LXT's cp_LRP composite for torchvision's ViT
    data = np.load(inputs)
    x = torch.from_numpy(data["x"]).double().requires_grad_(True)
    kept = {}

    def keep(module, inputs, output):
        output.retain_grad()
        kept["tokens"] = output

    net.conv_proj.register_forward_hook(keep)
    net.double()(x).gather(1, torch.from_numpy(data["targets"])[:, None]).sum().backward()
    tokens = kept["tokens"]
    np.savez(out, pixels=(x * x.grad).detach().numpy(), tokens=(tokens * tokens.grad).sum(1).detach().numpy())


def lxt_relevance(name, net, x, targets) -> dict:
    """LXT's CP-LRP relevance of ``net`` for ``targets`` (float64: Gradient x Input after its
    patches), computed in a fresh process: ``pixels`` N x C x H x W and ``tokens`` N x h x w
    (at the patch embedding's output, channel-summed)."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        state, inputs, out = (os.path.join(tmp, f) for f in ("state.pt", "inputs.npz", "out.npz"))
        torch.save(net.state_dict(), state)
        np.savez(inputs, x=x, targets=np.asarray(targets, np.int64))
        subprocess.run([sys.executable, os.path.abspath(__file__), name, "--lxt", state, inputs, out],
                       check=True)
        with np.load(out) as found:
            return {key: found[key] for key in found.files}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="small | a torchvision model name (vit_b_16, ...)")
    parser.add_argument("-o", "--output", help="the ONNX file to write")
    parser.add_argument("--lxt", nargs=3, metavar=("STATE", "INPUTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lxt:
        return _lxt_in_process(args.name, *args.lxt)
    if not args.output:
        parser.error("-o/--output is required")
    export(build(args.name), args.output, size_of(args.name))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
