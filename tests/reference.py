"""An independent PyTorch implementation of SPEC.md section 1 for the ResNets of
tools/torch_resnets.py: explicit per-layer formulas, in float64, over the torch modules.

Nothing here touches lrpgraph. The z+ and w+ rules use autograd for the transposed
products (the gradient of z = conv(a, W+) against a, times s), not ConvTranspose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5
DTYPE = torch.float64  # the oracle computes in float64; tools/bench.py times it in float32


def _bn(bn, x):
    return F.batch_norm(x, bn.running_mean.to(DTYPE), bn.running_var.to(DTYPE), bn.weight.to(DTYPE),
                        bn.bias.to(DTYPE), False, 0.0, bn.eps)


def _conv(conv, x, weight=None):
    w = conv.weight.to(DTYPE) if weight is None else weight
    b = None if weight is not None or conv.bias is None else conv.bias.to(DTYPE)
    return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


def conv_zplus(conv, a, r_out, ones=False):
    """z+ (a real) or w+ (ones=True: a replaced by ones, R_in = c)."""
    wp = conv.weight.to(DTYPE).clamp(min=0)
    inp = (torch.ones_like(a) if ones else a).detach().requires_grad_(True)
    z = _conv(conv, inp, wp)
    s = r_out / (z + EPS)
    (c,) = torch.autograd.grad(z, inp, grad_outputs=s)
    return c if ones else a * c


def linear_zplus(fc, a, r_out):
    wp = fc.weight.to(DTYPE).clamp(min=0)
    z = a @ wp.T
    return a * ((r_out / (z + EPS)) @ wp)


def gap_z(a, r_out):
    n = a.shape[2] * a.shape[3]
    return a * r_out[:, :, None, None] / (a.sum(dim=(2, 3), keepdim=True) + n * EPS)


def maxpool_avg2x2(a, r_out):
    s = r_out / (F.avg_pool2d(a, 2, 2) + EPS)
    return a * s.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) / 4


def maxpool_winner(pool, a, r_out):
    _, idx = F.max_pool2d(a, pool.kernel_size, pool.stride, pool.padding, return_indices=True)
    flat = torch.zeros_like(a).flatten(2)
    flat.scatter_add_(2, idx.flatten(2), r_out.flatten(2))
    return flat.view_as(a)


def split(r, h_s, h_m, mode):
    if mode == "symmetric":
        return r / 2, r / 2
    den = h_s.abs() + h_m.abs()
    frac = torch.where(den == 0, torch.full_like(den, 0.5), h_s.abs() / torch.where(den == 0, 1, den))
    return r * frac, r * (1 - frac)


def _block_forward(block, x):
    acts = {"x": x}
    if hasattr(block, "conv3"):
        convs = [(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)]
    else:
        convs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    h = x
    acts["conv_inputs"] = []
    for i, (conv, bn) in enumerate(convs):
        acts["conv_inputs"].append(h)
        h = _bn(bn, _conv(conv, h))
        if i < len(convs) - 1:
            h = F.relu(h)
    acts["h_m"] = h
    if block.downsample is not None:
        acts["h_s"] = _bn(block.downsample[1], _conv(block.downsample[0], x))
    else:
        acts["h_s"] = x
    acts["convs"] = [c for c, _ in convs]
    return F.relu(acts["h_m"] + acts["h_s"]), acts


def _maxpool(model, t):
    return F.max_pool2d(t, model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding)


def _fc(model, t):
    return t @ model.fc.weight.to(DTYPE).T + model.fc.bias.to(DTYPE)


def _forward(model, x):
    """(conv1 output, its ReLU, layer4 output, [(block, activations)], pooled, logits)."""
    c1 = _conv(model.conv1, x)
    r1 = F.relu(_bn(model.bn1, c1))
    h = _maxpool(model, r1)
    blocks = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            h, acts = _block_forward(block, h)
            blocks.append((block, acts))
    pooled = h.mean(dim=(2, 3))
    return c1, r1, h, blocks, pooled, _fc(model, pooled)


def lrp(model, x, target=None, identity_skip=True, split_mode="ratio", maxpool="avg2x2",
        first_layer="ones", start="probability"):
    """Return (logits, R at the image N x C x H x W, dict of per-stage relevance sums)."""
    x = x.to(DTYPE)
    c1, r1, h, blocks, pooled, logits = _forward(model, x)

    if target is None:
        target = logits.argmax(1)
    onehot = F.one_hot(target, logits.shape[1]).to(DTYPE)
    value = logits if start == "logit" else torch.softmax(logits, 1)
    r = value * onehot
    sums = {"start": r.sum(1)}
    r = linear_zplus(model.fc, pooled, r)
    r = gap_z(h, r)
    for block, acts in reversed(blocks):
        identity = block.downsample is None
        if identity and not identity_skip:
            r_s, r_m = torch.zeros_like(r), r
        else:
            r_s, r_m = split(r, acts["h_s"], acts["h_m"], split_mode)
        for conv, a in reversed(list(zip(acts["convs"], acts["conv_inputs"]))):
            r_m = conv_zplus(conv, a, r_m)
        if identity:
            r = r_m + r_s
        else:
            r = r_m + conv_zplus(block.downsample[0], acts["x"], r_s)
    sums["after_blocks"] = r.sum(dim=(1, 2, 3))
    if maxpool == "avg2x2":
        r = maxpool_avg2x2(r1, r)
    else:
        r = maxpool_winner(model.maxpool, r1, r)
    sums["after_maxpool"] = r.sum(dim=(1, 2, 3))
    r = conv_zplus(model.conv1, x, r, ones=(first_layer == "ones"))
    sums["input"] = r.sum(dim=(1, 2, 3))
    return logits, r, sums


def fold_batchnorm(model):
    """A copy of ``model`` with every BN folded into the conv before it, as exporters do
    (torch.onnx in eval mode, tf2onnx): the reference for graphs without BN nodes."""
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    model = copy.deepcopy(model)
    pairs = [(model.conv1, model.bn1)]
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            pairs += [(getattr(block, f"conv{i}"), getattr(block, f"bn{i}")) for i in (1, 2, 3)
                      if hasattr(block, f"conv{i}")]
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
    with torch.no_grad():
        for conv, bn in pairs:
            w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                        bn.eps, bn.weight, bn.bias)
            conv.weight, conv.bias = nn.Parameter(w), nn.Parameter(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            bn.weight.fill_(1.0)
            bn.bias.zero_()
    return model


def _eps_ratio(r, z, eps):
    return r / (z + eps * (2 * (z >= 0).to(z.dtype) - 1))


def _eps_linear(fn, a, r_out, eps):
    """captum's EpsilonRule on a layer ``fn`` (bias included): a * grad(z)(R / (z+eps*sign z))."""
    a = a.detach().clone().requires_grad_(True)
    z = fn(a)
    (c,) = torch.autograd.grad(z, a, grad_outputs=_eps_ratio(r_out, z.detach(), eps))
    return (a * c).detach()


def lrp_epsilon(model, x, eps=1e-9):
    """LRP-epsilon everywhere (the paper's "LRP" baseline, captum-style): start at the
    target's logit; conv, BN (a per-channel linear layer), fc, pools with the epsilon rule;
    a skip merge splits ``R * h_i / (h + eps*sign h)``; ReLU passes."""
    x = x.to(DTYPE)
    bn = lambda m: (lambda t: _bn(m, t))  # noqa: E731
    conv = lambda m: (lambda t: _conv(m, t))  # noqa: E731
    c1, r1, h, blocks, pooled, logits = _forward(model, x)
    target = logits.argmax(1)
    r = logits * F.one_hot(target, logits.shape[1]).to(DTYPE)
    r = _eps_linear(lambda t: _fc(model, t), pooled, r, eps)
    r = _eps_linear(lambda t: t.mean(dim=(2, 3)), h, r, eps)
    for block, acts in reversed(blocks):
        total = acts["h_s"] + acts["h_m"]
        s = _eps_ratio(r, total, eps)
        r_s, r_m = acts["h_s"] * s, acts["h_m"] * s
        bns = [block.bn1, block.bn2] + ([block.bn3] if hasattr(block, "bn3") else [])
        for cv, b, a in reversed(list(zip(acts["convs"], bns, acts["conv_inputs"]))):
            pre_bn = _conv(cv, a)
            r_m = _eps_linear(bn(b), pre_bn, r_m, eps)
            r_m = _eps_linear(conv(cv), a, r_m, eps)
        if block.downsample is not None:
            pre_bn = _conv(block.downsample[0], acts["x"])
            r_s = _eps_linear(bn(block.downsample[1]), pre_bn, r_s, eps)
            r_s = _eps_linear(conv(block.downsample[0]), acts["x"], r_s, eps)
        r = r_m + r_s
    r = _eps_linear(lambda t: _maxpool(model, t), r1, r, eps)
    r = _eps_linear(bn(model.bn1), c1, r, eps)
    return _eps_linear(conv(model.conv1), x, r, eps)


def _layer4(model, x):
    """(logits, layer4's output): the last residual stage, where both CAMs read."""
    feats = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, feats["a"]


def gradcam(model, x):
    """Grad-CAM on the last residual stage (layer4's output), as pytorch-grad-cam computes
    it before its min-max normalisation: ReLU(sum_k mean(dy/dA_k) A_k), bilinear to the input."""
    logits, a = _layer4(model, x)
    target = logits.argmax(1)
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0].detach()


def scorecam(model, x, chunk=16):
    """Score-CAM as pytorch-grad-cam's ScoreCAM computes it: layer4's channels, upsampled
    bilinearly (align_corners) and min-max normalised, mask the input; the target's logit
    per masked image, softmax over channels; ReLU(sum w_k A_k), bilinear to the input."""
    with torch.no_grad():
        logits, a = _layer4(model, x)
        target = logits.argmax(1)
        up = F.interpolate(a, size=x.shape[2:], mode="bilinear", align_corners=True)
        lo = up.flatten(2).min(-1)[0][:, :, None, None]
        hi = up.flatten(2).max(-1)[0][:, :, None, None]
        masks = (up - lo) / (hi - lo + 1e-8)
        weights = []
        for n in range(len(x)):
            masked = x[n][None] * masks[n][:, None]
            scores = torch.cat([model(masked[i:i + chunk])[:, target[n]] for i in range(0, len(masked), chunk)])
            weights.append(torch.softmax(scores, 0))
        weights = torch.stack(weights)[:, :, None, None]
        cam = F.relu((weights * a).sum(1, keepdim=True))
        return F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
