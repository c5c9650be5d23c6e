"""zennit's rules as our composites (rules/basic.py, composites.SEARCH), against zennit
itself: a seeded CNN with biases, a strided and a depthwise conv and signed inputs, run by
zennit's own composites (EpsilonGammaBox, EpsilonPlusFlat, EpsilonPlus,
EpsilonAlpha2Beta1Flat) from the target's logit, and by our explainer of its ONNX export;
the full relevance at the image must agree to 1e-4 of its largest entry. The gamma grid
(gamma 0.1 and 1 with the authors' w+ first layer) is checked the same way against zennit's
Gamma with that first-layer rule written as a zennit hook. The pool reads a ReLU'd map: the
composites keep the paper's z-rule at pools (eps added plainly), which zennit's Norm (eps
with the sign of the mean) matches only where the mean is not negative (5.8e-4 apart on
this net with a signed pool input)."""

import numpy as np
import pytest
import torch
from zennit import composites as zc
from zennit import rules as zr
from zennit.attribution import Gradient
from zennit.core import BasicHook
from zennit.types import Convolution

from conftest import image_batch, rel_err, run

from lrpgraph import preset
from lrpgraph.driver import build_explainer
from lrpgraph.methods import pixel_bounds
from lrpgraph.config import Preprocess

SIZE = 16


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 12, 1), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(12, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def _net():
    torch.manual_seed(3)
    net = Net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.normal_(0, 0.1)
    return net.eval()


def _export(net, path):
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})
    return str(path)


def _zennit(net, composite, x):
    x = torch.from_numpy(x).requires_grad_(True)
    with Gradient(model=net, composite=composite) as attributor:
        out, relevance = attributor(x, lambda y: torch.nn.functional.one_hot(y.argmax(1), y.shape[1]) * y)
    return relevance.detach().numpy().astype(np.float64), out.detach().numpy()


def _ours(path, name, x):
    model, _ = build_explainer(path, preset("paper", method=name, start="logit", eps=1e-6, full_relevance=True))
    return run(model, {"input": x})


def _bounds():
    low, high = pixel_bounds(Preprocess())
    return (torch.tensor(low, dtype=torch.float32).reshape(1, 3, 1, 1),
            torch.tensor(high, dtype=torch.float32).reshape(1, 3, 1, 1))


ZENNIT = {
    "lrp-epsilon-gamma-box": lambda: zc.EpsilonGammaBox(*_bounds()),
    "lrp-epsilon-plus-flat": zc.EpsilonPlusFlat,
    "lrp-epsilon-plus": zc.EpsilonPlus,
    "lrp-epsilon-alpha2-beta1-flat": zc.EpsilonAlpha2Beta1Flat,
}


@pytest.mark.parametrize("name", sorted(ZENNIT))
def test_zennit_composites_agree(name, tmp_path):
    net = _net()
    x = image_batch(3, SIZE, seed=4)
    ref, logits = _zennit(net, ZENNIT[name](), x)
    out = _ours(_export(net, tmp_path / "net.onnx"), name, x)
    assert rel_err(out["logits"], logits) < 1e-5
    assert np.abs(ref).max() > 0
    for i in range(len(x)):
        assert rel_err(out["relevance"][i], ref[i]) < 1e-4, (name, i)


def _w_plus_ones():
    """The authors' first-layer rule (ConvOnes) as a zennit hook: ones for the input, W+
    without bias, the relevance spread by the transposed conv alone."""
    return BasicHook(input_modifiers=[torch.ones_like], param_modifiers=[zr.ClampMod(min=0.0, zero_params=["bias"])],
                     output_modifiers=[lambda o: o], gradient_mapper=lambda g, o: g / (o[0] + 1e-6),
                     reducer=lambda inputs, grads: grads[0])


@pytest.mark.parametrize("gamma", [0.1, 1])
def test_gamma_grid_agrees_with_zennits_gamma(gamma, tmp_path):
    net = _net()
    x = image_batch(2, SIZE, seed=5)
    composite = zc.SpecialFirstLayerMapComposite(
        layer_map=[(torch.nn.ReLU, zr.Pass()), (torch.nn.AdaptiveAvgPool2d, zr.Norm()),
                   (Convolution, zr.Gamma(gamma=gamma)), (torch.nn.Linear, zr.Epsilon(epsilon=1e-6))],
        first_map=[(Convolution, _w_plus_ones())])
    ref, _ = _zennit(net, composite, x)
    out = _ours(_export(net, tmp_path / "net.onnx"), f"lrp-gamma-{gamma}", x)
    for i in range(len(x)):
        assert rel_err(out["relevance"][i], ref[i]) < 1e-4, i
