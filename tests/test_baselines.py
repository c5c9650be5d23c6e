"""The paper's baselines as explainer graphs, against independent implementations on the
same seeded ResNet18: captum (Saliency, InputXGradient, GuidedBackprop, Integrated
Gradients with the same steps) and our own PyTorch Grad-CAM and LRP-epsilon
(tests/reference.py; pytorch-grad-cam needs torchvision, 5.5 GB here)."""

import copy

import numpy as np
import pytest
import torch

import reference
from conftest import image_batch, rel_err, run
from lrpgraph import preset
from lrpgraph.driver import build_explainer

TOL = 1e-4


@pytest.fixture(scope="module")
def oracle_model(resnets):
    model = copy.deepcopy(resnets["resnet18"][0]).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False  # captum's hooks cannot follow in-place ReLUs
    return model


def explain(resnets, method, x, exact=False, **options):
    explainer, _ = build_explainer(resnets["resnet18"][1],
                                   preset("paper", method=method, full_relevance=method != "gradcam", **options))
    return run(explainer, {"input": x}, exact=exact)


@pytest.mark.parametrize("method", ["gradient", "gradxinput", "guided-bp"])
def test_gradient_family_matches_captum(resnets, oracle_model, method):
    from captum.attr import GuidedBackprop, InputXGradient, Saliency

    x = image_batch(2, seed=40)
    out = explain(resnets, method, x, exact=True)  # gradients flip at ReLU kinks: conftest.exact_session
    xt = torch.from_numpy(x).requires_grad_(True)
    target = torch.from_numpy(out["target_used"])
    algo = {"gradient": Saliency, "gradxinput": InputXGradient, "guided-bp": GuidedBackprop}[method](oracle_model)
    kwargs = {"abs": True} if method == "gradient" else {}
    ref = algo.attribute(xt, target=target, **kwargs).detach().numpy()
    assert rel_err(out["relevance"], ref) <= TOL
    assert rel_err(out["relevance_map"], ref.sum(1)) <= TOL


def _captum_ig(oracle_model, x, target, method):
    """captum's IG with 8 steps in float64 (the oracle) and in float32 (its own noise)."""
    from captum.attr import IntegratedGradients

    def captum(model, inputs):
        return IntegratedGradients(model).attribute(inputs, target=target, n_steps=8,
                                                    method=method).detach().numpy()

    return (captum(copy.deepcopy(oracle_model).double(), torch.from_numpy(x).double()),
            captum(oracle_model, torch.from_numpy(x)))


def _assert_as_close_as_captum(ours, exact, single):
    assert rel_err(ours, exact) <= max(2 * rel_err(single, exact), TOL)
    assert (np.abs(ours - exact) <= TOL * np.abs(exact).max()).mean() >= 0.995


def test_integrated_gradients_matches_captum_with_the_same_steps(resnets, oracle_model):
    """Along the path, activations cross ReLU and MaxPool decisions within float32 noise of
    0: captum's own float32 answer is 1.7e-3 (max |diff| / max) from its float64 answer on
    this model. So the oracle runs in float64, and we must be as close to it as captum's
    float32 is, with all but a few elements within 1e-4."""
    x = image_batch(2, seed=41)
    out = explain(resnets, "ig", x, ig_steps=8)
    exact, single = _captum_ig(oracle_model, x, torch.from_numpy(out["target_used"]), "riemann_right")
    _assert_as_close_as_captum(out["relevance"], exact, single)
    with torch.no_grad():
        np.testing.assert_allclose(out["logits"], oracle_model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_integrated_gradients_gauss_legendre_as_the_paper_ran_captum(resnets, oracle_model):
    """captum's defaults (what the authors' code calls): Gauss-Legendre; 8 steps here, the
    same criterion as the Riemann test above."""
    x = image_batch(2, seed=45)
    out = explain(resnets, "ig", x, ig_steps=8, ig_method="gausslegendre")
    exact, single = _captum_ig(oracle_model, x, torch.from_numpy(out["target_used"]), "gausslegendre")
    _assert_as_close_as_captum(out["relevance"], exact, single)
    riemann = explain(resnets, "ig", x, ig_steps=8)["relevance"]
    assert rel_err(riemann, exact) > 10 * rel_err(out["relevance"], exact)  # another integral, measurably


def test_gradcam_matches_reference(resnets, oracle_model):
    x = image_batch(2, seed=42)
    out = explain(resnets, "gradcam", x)
    ref = reference.gradcam(oracle_model, torch.from_numpy(x)).numpy()
    assert out["relevance_map"].shape == (2, 224, 224)
    assert rel_err(out["relevance_map"], ref) <= TOL


def test_lrp_epsilon_matches_reference(resnets):
    model, path = resnets["resnet18"]
    x = image_batch(2, seed=43)
    # z + 1e-9*sign(z) amplifies rounding where z is near 0: the plain layout (conftest)
    out = explain(resnets, "lrp-epsilon", x, exact=True, start="logit")
    ref = reference.lrp_epsilon(model, torch.from_numpy(x)).numpy()
    assert rel_err(out["relevance"], ref) <= TOL


def test_scorecam_matches_reference(tmp_path):
    from export_resnet import build_model, export

    model, _ = build_model("resnet18", seed=12)
    export(model, str(tmp_path / "m.onnx"), image_size=64)
    explainer, _ = build_explainer(str(tmp_path / "m.onnx"), preset("paper", method="scorecam"))
    x = image_batch(2, size=64, seed=44)
    out = run(explainer, {"input": x})
    ref = reference.scorecam(model.eval(), torch.from_numpy(x)).numpy()
    assert out["relevance_map"].shape == (2, 64, 64)
    assert rel_err(out["relevance_map"], ref) <= TOL
    # the Scan reads the model's weights from the outer graph: the file does not grow
    assert explainer.ByteSize() < 1.05 * __import__("onnx").load(str(tmp_path / "m.onnx")).ByteSize()
