"""The transformer composite re-derived in PyTorch (float64), for the transformers LXT has
no composite for (Swin, MaxViT): LRP-epsilon with epsilon -> 0 is Gradient x Input of the
network with these changes (Achtibat et al. 2024, eq. 9 and section 3.3; Ali et al. 2022):

- the attention weights are constants: ``F.softmax``'s output is detached;
- LayerNorm divides by its deviation detached, so it is linear in its input;
- GELU, SiLU and Tanh take the identity rule: their relevance passes unchanged, i.e. the
  gradient through them is ``f(x) / x`` (0 where x is 0, where f(x) is 0 too);
- a squeeze-excitation gate is a constant: ``scale.detach() * x`` (signal takes all).

Everything else (convs, BatchNorm in eval, linear layers, pooling, residual sums, window
shifts and partitions) keeps its own gradient, which for a linear map is the epsilon rule
with its bias absorbing. Written from the papers, not from lrpgraph's rules.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class _IdentityRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        safe = torch.where(x == 0, torch.ones_like(x), x)
        return grad * torch.where(x == 0, torch.zeros_like(x), y / safe), None


def _identity_rule(original):
    def forward(self, x):
        return _IdentityRule.apply(x, original(self, x.detach()))
    return forward


def _layer_norm(self, x):
    assert len(self.normalized_shape) == 1, "the re-derivation normalises the last axis only"
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / (var + self.eps).sqrt().detach()
    return y * self.weight + self.bias if self.weight is not None else y


@contextmanager
def cp_lrp():
    """Patch torch for the re-derivation while the block runs."""
    import torch.nn as nn
    import torch.nn.functional as F
    from torchvision.ops.misc import SqueezeExcitation

    softmax = F.softmax
    saved = [(F, "softmax", softmax), (nn.LayerNorm, "forward", nn.LayerNorm.forward),
             (SqueezeExcitation, "forward", SqueezeExcitation.forward)]
    saved += [(cls, "forward", cls.forward) for cls in (nn.GELU, nn.SiLU, nn.Tanh)]
    try:
        F.softmax = lambda *args, **kwargs: softmax(*args, **kwargs).detach()
        nn.LayerNorm.forward = _layer_norm
        SqueezeExcitation.forward = lambda self, x: self._scale(x).detach() * x
        for cls in (nn.GELU, nn.SiLU, nn.Tanh):
            cls.forward = _identity_rule(cls.forward)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def relevance(net, x, targets):
    """N x C x H x W relevance of ``targets`` from the logit, float64."""
    import copy

    import numpy as np

    net = copy.deepcopy(net).double().eval()
    xt = torch.from_numpy(np.asarray(x)).double().requires_grad_(True)
    with cp_lrp():
        y = net(xt)
        y.gather(1, torch.from_numpy(np.asarray(targets, np.int64))[:, None]).sum().backward()
    return (xt * xt.grad).detach().numpy()
