"""The baselines as their reference computes them with its own defaults: captum's LRP
(EpsilonRule, epsilon 1e-9, from the target's logit) on a seeded VGG11, and
captum's IntegratedGradients as the authors call it (Gauss-Legendre, 50 steps).

The oracle runs in float64; ours must be as close to it as captum's own float32 run is (on
random weights, z near 0 and ReLU decisions within float32 noise make that the honest
bound), and rank the pixels as it does (Spearman >= 0.999: the metrics use only ranks)."""

import copy

import numpy as np
import pytest
import torch

from conftest import image_batch, rel_err, run
from lrpgraph import preset
from lrpgraph.driver import build_explainer

captum = pytest.importorskip("captum")


class VGG(torch.nn.Module):
    def forward(self, x):  # torchvision's: torch.flatten, not a module (captum has no rule for one)
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg11(seed=0):
    """torchvision.models.vgg11 (configuration "A", no BN), layer for layer and initialised
    as torchvision does: torchvision itself is a 5.5 GB install here. Its
    AdaptiveAvgPool2d(7) on the 7 x 7 feature map exports as a 1 x 1 AveragePool."""
    nn = torch.nn
    torch.manual_seed(seed)
    layers, channels = [], 3
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = v
    model = VGG()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(False), nn.Dropout(0.5),
                                     nn.Linear(4096, 4096), nn.ReLU(False), nn.Dropout(0.5), nn.Linear(4096, 1000))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)
    return model.eval()


def spearman(a, b):
    from scipy.stats import spearmanr

    return min(spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a, b))


def captum_pair(model, x, target, algorithm, **kwargs):
    """captum in float64 (the oracle) and in float32 (its own rounding)."""
    def attribute(m, inputs):
        return algorithm(m).attribute(inputs, target=target, **kwargs).detach().numpy()

    return attribute(copy.deepcopy(model).double(), torch.from_numpy(x).double()), attribute(model, torch.from_numpy(x))


def assert_as_close_as_captum(ours, exact, single):
    assert rel_err(ours, exact) <= max(2 * rel_err(single, exact), 1e-4), (rel_err(ours, exact), rel_err(single, exact))
    assert spearman(ours.sum(1), exact.sum(1)) >= 0.999


@pytest.fixture(scope="module")
def models(resnets, tmp_path_factory):
    from export_resnet import export

    resnet = copy.deepcopy(resnets["resnet18"][0]).eval()
    for m in resnet.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False  # captum's hooks cannot follow in-place ReLUs
    vgg = vgg11()
    path = str(tmp_path_factory.mktemp("vgg") / "vgg11.onnx")
    export(vgg, path)
    return {"resnet18": (resnet, resnets["resnet18"][1]), "vgg11": (vgg, path)}


def test_lrp_epsilon_with_captums_defaults_on_vgg11(models):
    """On ResNets captum's LRP is no oracle: it does not propagate through the skips' tensor
    additions (captum#546, open; PR #342's "known open points"), and on seeded ResNet18 its
    own float32 and float64 answers differ by 48 %. There tests/reference.py is the LRP-epsilon
    oracle (test_baselines.py)."""
    from captum.attr import LRP

    model, path = models["vgg11"]
    explainer, _ = build_explainer(path, preset("paper", method="lrp-epsilon", full_relevance=True))
    # the 1 x 1 pool is there, and the epsilon rule passes it
    assert any(n.op_type == "AveragePool" for n in __import__("onnx").load(path).graph.node)
    x = image_batch(2, seed=61)
    out = run(explainer, {"input": x}, exact=True)
    exact, single = captum_pair(model, x, torch.from_numpy(out["target_used"]), LRP)
    assert_as_close_as_captum(out["relevance"], exact, single)


def test_ig_paper_is_captums_default_integrated_gradients(models):
    """50 path points cross many ReLU decisions within float32 rounding of 0, and ORT and
    torch round differently: per image, ours and captum's float32 answer each lie 4e-6 to
    1.6e-5 (mean |diff| / max) from the float64 oracle, which of the two is closer changing
    with the image (seeds 62, 63: 3.5e-3 and 7.2e-4 at most for ours, 6.8e-4 and 8.5e-4
    for captum's) and with the CPU (on another machine captum's mean was 8.6e-7, ours
    9.2e-6: ORT's kernels round differently by instruction set). So over the batch: mean
    within 2x of captum float32's or within that band (2e-5; a wrong path or weighting is
    off by 1e-2 and more), ranks equal."""
    from captum.attr import IntegratedGradients

    model, path = models["resnet18"]
    explainer, _ = build_explainer(path, preset("paper", method="ig-paper", full_relevance=True))
    x = np.concatenate([image_batch(1, seed=62), image_batch(1, seed=63)])
    out = run(explainer, {"input": x}, exact=True)
    # captum's defaults: n_steps=50, method="gausslegendre", baseline 0
    exact, single = captum_pair(model, x, torch.from_numpy(out["target_used"]), IntegratedGradients)
    scale = np.abs(exact).max()
    ours, theirs = np.abs(out["relevance"] - exact) / scale, np.abs(single - exact) / scale
    assert ours.mean() <= max(2 * theirs.mean(), 2e-5), (ours.mean(), theirs.mean())
    assert ours.max() <= 5e-3
    assert spearman(out["relevance"].sum(1), exact.sum(1)) >= 0.9999
