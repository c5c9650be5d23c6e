"""Vision transformers (torchvision's ViT, Swin and MaxViT in small configurations): the
shape arithmetic of a dynamic-batch export folds, the graph gets the transformer
composite, the explainer's logits are the model's at any batch size, and its map is the
oracle's on the same weights: LXT's CP-LRP relevance for ViT (float64, in a process of its
own: tools/export_vit.py), the PyTorch re-derivation of tests/reference_transformers.py for
Swin and MaxViT (LXT has no composite for them)."""

import numpy as np
import pytest
import torch

from conftest import image_batch, rel_err, run

from lrpgraph import LrpGraphError, preset
from lrpgraph.driver import build_explainer, inspect

torch_vit = pytest.importorskip("torchvision.models.vision_transformer")


def _exported(tmp_path_factory, name):
    from export_vit import build, export, size_of

    net = build(name)
    path = str(tmp_path_factory.mktemp(name) / f"{name}.onnx")
    export(net, path, size_of(name))
    return net, path


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    return _exported(tmp_path_factory, "small")


@pytest.fixture(scope="module", params=["small_swin", "small_maxvit"])
def windowed(request, tmp_path_factory):
    """Swin (shifted windows: roll as Slice + Concat, patch merging as strided Slices) and
    MaxViT (MBConv with SE gating, block and grid attention as Einsums, a Tanh head)."""
    return request.param, *_exported(tmp_path_factory, request.param)


def test_vit_gets_the_transformer_composite_with_every_node_matched(vit):
    report = inspect(vit[1])
    assert report.composite == "transformer"
    assert report[2] == []
    notes = [(op, note) for _, op, note in report[0]]
    assert ("MatMul", "value path, attention constant (CP-LRP)") in notes
    assert ("Gather", "pad back") in notes  # the class token x[:, 0]
    assert not any(op == "Softmax" for op, _ in notes)


@pytest.mark.parametrize("batch", [1, 5])
def test_vit_logits_are_the_models_at_any_batch(vit, batch):
    net, path = vit
    explainer, _ = build_explainer(path, preset("paper", method="lrp-transformer"))
    x = image_batch(batch, size=64, seed=batch)
    out = run(explainer, {"input": x})
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert rel_err(out["logits"], ref) <= 1e-5
    assert np.isfinite(out["relevance_map"]).all() and out["relevance_map"].shape == (batch, 64, 64)


def test_vit_map_is_lxts_cp_lrp(vit):
    from export_vit import lxt_relevance

    net, path = vit
    explainer, _ = build_explainer(path, preset("paper", method="lrp-transformer", full_relevance=True,
                                                 tokens=True))
    x = image_batch(3, size=64, seed=7)
    out = run(explainer, {"input": x})
    ref = lxt_relevance("small", net, x, out["target_used"])
    assert out["relevance_tokens"].shape == (3, 4, 4)  # 64 / 16 patches a side
    for i in range(len(x)):
        assert rel_err(out["relevance"][i], ref["pixels"][i]) <= 1e-4
        assert rel_err(out["relevance_map"][i], ref["pixels"][i].sum(0)) <= 1e-4
        assert rel_err(out["relevance_tokens"][i], ref["tokens"][i]) <= 1e-4


def test_tokens_are_refused_where_they_mean_nothing(vit):
    with pytest.raises(LrpGraphError, match="--tokens: one target per image"):
        build_explainer(vit[1], preset("paper", method="lrp-transformer", tokens=True, targets=2))


def test_swin_and_maxvit_logits_and_map_are_the_re_derivations(windowed):
    from reference_transformers import relevance

    name, net, path = windowed
    assert inspect(path).composite == "transformer"
    explainer, report = build_explainer(path, preset("paper", method="lrp-transformer", full_relevance=True))
    notes = {(op, note) for _, op, note in report.rules}
    expected = ("Slice", "spread back (strided)") if name == "small_swin" else \
        ("Einsum", "value path, attention constant (CP-LRP)")
    assert expected in notes
    for batch in (1, 3):
        x = image_batch(batch, size=64, seed=10 + batch)
        out = run(explainer, {"input": x})
        with torch.no_grad():
            assert rel_err(out["logits"], net(torch.from_numpy(x)).numpy()) <= 1e-5
    ref = relevance(net, x, out["target_used"])
    for i in range(len(x)):
        assert rel_err(out["relevance"][i], ref[i]) <= 1e-4
