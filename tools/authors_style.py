"""The paper's rules computed the way the authors' public PyTorch code computes them: a
benchmark baseline (tools/bench.py), for the ResNets of tools/torch_resnets.py.

tests/reference.py is a lean oracle (one forward, one autograd product per conv). The
authors' code (keio-smilab24/LRP-for-ResNet, src/lrp.py + src/lrp_layers.py; read for its
cost structure, nothing copied) spends more per explanation, and a user who runs it pays
for all of it:

- its visualisation step runs the classifier once for the prediction, then builds a new
  LRP model per image: a deep copy of every layer (its z+ layers clamp weights in place, so
  a model object cannot be reused);
- a forward pass that keeps every block's input;
- per residual block, the block is run forward again to get the ratio of the two branches,
  and once more to get the activations inside the block;
- per conv, ``z = conv(a, W+) + eps`` and ``(z * s).sum().backward()``: the weight is an
  ``nn.Parameter``, so autograd also computes a weight gradient nobody reads.

Same rules as SPEC.md's ``paper`` preset, variant (iv): the result equals tests/reference.py
(checked in tests/test_agreement.py). Two things are not reproduced: the start relevance is
each sample's own target (the authors' code writes every sample's top class into every
row), and a 0/0 ratio splits evenly instead of giving NaN. Its ``relevance_filter`` is left
out too: called at 100 % (``rel_pass_ratio=1.0``), the top-k filter it comes from
(kaifishr/PyTorchRelevancePropagation) returns the relevance untouched, so it costs about
nothing (the authors' own lrp_filter.py was not in the copy we read).

Its visualize.py explains one image per call (a batch-1 loader; batched, its start
relevance is wrong), so tools/bench.py also times this code on one image at a time.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5


def _zplus(layer: nn.Conv2d, a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    layer.weight = nn.Parameter(layer.weight.clamp(min=0.0))
    a = a.detach().requires_grad_(True)
    z = layer(a) + EPS
    s = (r / z).detach()
    (z * s).sum().backward()
    return (a * a.grad).detach()


def _z_rule(pool, a, r):
    a = a.detach().requires_grad_(True)
    z = pool(a) + EPS
    s = (r / z).detach()
    (z * s).sum().backward()
    return (a * a.grad).detach()


def _main_layers(block):
    if hasattr(block, "conv3"):
        return [block.conv1, block.bn1, block.relu, block.conv2, block.bn2, block.relu,
                block.conv3, block.bn3]
    return [block.conv1, block.bn1, block.relu, block.conv2, block.bn2]


def _block(block, a, r):
    layers = _main_layers(block)
    # the branch ratio, from a fresh forward of both branches
    main, short = a, a
    for layer in layers:
        main = layer(main)
    if block.downsample is not None:
        short = block.downsample(short)
    den = main.abs() + short.abs()
    ratio = torch.where(den == 0, 0.5, main.abs() / torch.where(den == 0, 1.0, den))
    r_main, r_short = ratio * r, (1 - ratio) * r
    # the branch's inner activations, from another forward
    with torch.no_grad():
        acts = [a]
        for layer in layers:
            acts.append(layer(acts[-1]))
    acts.pop()
    for layer in reversed(layers):
        x = acts.pop()
        if isinstance(layer, nn.Conv2d):
            r_main = _zplus(layer, x, r_main)
    if block.downsample is not None:
        r_short = _zplus(block.downsample[0], a, r_short)
    return r_main + r_short


def explain(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Relevance map N x H x W for each sample's predicted class."""
    model.eval()
    with torch.no_grad():
        target = torch.softmax(model(x), dim=-1).argmax(dim=-1)  # the prediction it captions
    lrp = copy.deepcopy(model)
    blocks = [b for layer in (lrp.layer1, lrp.layer2, lrp.layer3, lrp.layer4) for b in layer]
    with torch.no_grad():
        stem = lrp.relu(lrp.bn1(lrp.conv1(x)))
        h = lrp.maxpool(stem)
        inputs = []
        for block in blocks:
            inputs.append(h)
            h = block(h)
        pooled = torch.flatten(lrp.avgpool(h), 1)
        probs = torch.softmax(lrp.fc(pooled), dim=-1)
    r = probs * F.one_hot(target, probs.shape[1]).to(probs.dtype)
    with torch.no_grad():
        w_plus = lrp.fc.weight.clamp(min=0.0)
        r = pooled * ((r / (pooled @ w_plus.T + EPS)) @ w_plus)
    r = _z_rule(lrp.avgpool, h, r.view(*r.shape, 1, 1))
    for block, a in zip(reversed(blocks), reversed(inputs)):
        r = _block(block, a, r)
    r = _z_rule(nn.AvgPool2d(2, 2), stem, r)  # the MaxPool, as a 2x2 average
    r = _zplus(lrp.conv1, torch.ones_like(x), r)  # first layer: ones for the image
    return r.sum(dim=1)
