"""The explainer against tests/reference.py (SPEC.md section 1 in PyTorch, float64) on
seeded ResNets with non-trivial BN statistics: all four ablation variants, both MaxPool
rules, batch 2."""

import numpy as np
import pytest
import torch

import reference
from conftest import image_batch, rel_err, run
from lrpgraph import VARIANTS, preset
from lrpgraph.driver import build_explainer

TOL = 1e-4


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("maxpool", ["avg2x2", "winner"])
@pytest.mark.parametrize("variant", ["i", "ii", "iii", "iv"])
def test_matches_reference(resnets, arch, maxpool, variant):
    model, path = resnets[arch]
    explainer, _ = build_explainer(path, preset("paper", variant, maxpool=maxpool, full_relevance=True))
    x = image_batch(2)
    out = run(explainer, {"input": x})
    v = VARIANTS[variant]
    logits, r, _ = reference.lrp(model, torch.from_numpy(x), identity_skip=v["identity_skip"],
                                 split_mode=v["split"], maxpool=maxpool)
    r = r.detach().numpy()
    assert rel_err(out["relevance"], r) <= TOL
    assert rel_err(out["relevance_map"], r.sum(1)) <= TOL
    np.testing.assert_array_equal(out["target_used"], logits.argmax(1).numpy())


def test_map_only_explainer_matches_reference(resnets):
    """Without --full-relevance the first layer transposes with W+ summed over the image's
    channels, so only the map exists: it must still be the reference's channel sum."""
    model, path = resnets["resnet50"]
    explainer, _ = build_explainer(path, preset("paper"))
    assert "relevance" not in [o.name for o in explainer.graph.output]
    x = image_batch(2, seed=5)
    out = run(explainer, {"input": x})
    _, r, _ = reference.lrp(model, torch.from_numpy(x))
    assert rel_err(out["relevance_map"], r.sum(1).detach().numpy()) <= TOL


@pytest.mark.parametrize("options", [{"first_layer": "zplus"}, {"start": "logit"},
                                     {"eps": 1e-3, "maxpool": "winner"}])
def test_switches_match_reference(resnets, options):
    model, path = resnets["resnet18"]
    explainer, _ = build_explainer(path, preset("paper", full_relevance=True, **options))
    x = image_batch(2, seed=3)
    if options.get("first_layer") == "zplus":
        # z+ assumes a >= 0; on a mean-subtracted image z = conv(a, W+) crosses 0 and
        # R / (z + eps) is ill-conditioned in any precision. Test it where it is meant to run.
        x = np.abs(x)
    out = run(explainer, {"input": x})
    eps = options.pop("eps", None)
    if eps:
        reference.EPS, old = eps, reference.EPS
    try:
        _, r, _ = reference.lrp(model, torch.from_numpy(x), **options)
    finally:
        if eps:
            reference.EPS = old
    assert rel_err(out["relevance"], r.detach().numpy()) <= TOL


def test_given_target_is_explained(resnets):
    model, path = resnets["resnet18"]
    explainer, _ = build_explainer(path, preset("paper"))
    x = image_batch(3, seed=4)
    target = np.array([5, -1, 999], dtype=np.int64)  # -1: the predicted class
    out = run(explainer, {"input": x, "target": target})
    logits, r, _ = reference.lrp(model, torch.from_numpy(x), target=torch.tensor([5, 0, 999]))
    predicted = int(logits[1].argmax())
    _, r1, _ = reference.lrp(model, torch.from_numpy(x[1:2]), target=torch.tensor([predicted]))
    expected = r.detach().numpy().sum(1)
    expected[1] = r1.detach().numpy().sum(1)[0]
    np.testing.assert_array_equal(out["target_used"], [5, predicted, 999])
    assert rel_err(out["relevance_map"], expected) <= TOL


def test_authors_style_baseline_computes_the_reference(resnets):
    """tools/authors_style.py (the benchmark's stand-in for the authors' code) must compute
    the paper's rules, or its timings would compare different work."""
    import authors_style

    model, _ = resnets["resnet50"]
    x = torch.from_numpy(image_batch(2))
    got = authors_style.explain(model, x).detach().numpy()
    _, r, _ = reference.lrp(model, x)
    assert rel_err(got, r.sum(1).detach().numpy()) <= TOL
