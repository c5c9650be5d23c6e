"""Several classes per image in one call (``build --targets K``): every one of the K maps is
the single-target explainer's map for that class, which the rest of the suite holds to its
oracles; the classes are the K most probable ones (NumPy's sort of the logits) unless fed;
relevance is conserved per map as for one target."""

import numpy as np
import pytest

from conftest import image_batch, rel_err, run, session
from lrpgraph import Explainer, preset
from lrpgraph.driver import build_explainer

TOL = 1e-5


def softmax(logits):
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def single_maps(single, x, targets, names=("relevance_map",)):
    """The single-target explainer run once per column of ``targets`` (N x K): N x K x ..."""
    sess = session(single)
    out = [sess.run(list(names), {"input": x, "target": targets[:, k]}) for k in range(targets.shape[1])]
    return [np.stack([o[i] for o in out], 1) for i in range(len(names))]


SIZE = {"resnet50": 112, "efficientnet-lite0": 224}  # ResNet50 at 112^2: the suite's time


@pytest.fixture(scope="module")
def models(resnets, effnet, tmp_path_factory):
    """Seeded ResNet50 (exported at 112 x 112) and the real EfficientNet-Lite0 (the ONNX
    export beside its explainer)."""
    from export_resnet import export

    path = str(tmp_path_factory.mktemp("targets") / "resnet50_112.onnx")
    export(resnets["resnet50"][0], path, image_size=SIZE["resnet50"])
    return {"resnet50": path, "efficientnet-lite0": effnet[1].replace(".lrp.onnx", ".onnx")}


@pytest.fixture(scope="module")
def reference_maps(models):
    """Per model and batch: the input, the top-20 classes by NumPy, and the single-target
    explainer's map for each of them (conservation sums included)."""
    out = {}
    for name, path in models.items():
        single, _ = build_explainer(path, preset("paper", conservation=True))
        for n in (1, 8):
            x = image_batch(n, size=SIZE[name], seed=7)
            logits = run(single, {"input": x}, ["logits"])["logits"]
            top = np.argsort(-logits, axis=1, kind="stable")[:, :20]
            maps, start, reached = single_maps(single, x, top, ("relevance_map", "relsum/start", "relsum/input"))
            out[name, n] = (x, logits, top, maps, start, reached)
    return out


@pytest.mark.parametrize("model", ["resnet50", "efficientnet-lite0"])
@pytest.mark.parametrize("n", [1, 8])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_each_of_k_maps_is_the_single_target_map(models, reference_maps, model, n, k):
    x, logits, top, maps, start, reached = reference_maps[model, n]
    explainer, _ = build_explainer(models[model], preset("paper", targets=k, conservation=True))
    out = run(explainer, {"input": x})
    assert out["relevance_maps"].shape == (n, k, SIZE[model], SIZE[model])
    np.testing.assert_array_equal(out["targets_used"], top[:, :k])
    assert rel_err(out["logits"], logits) <= 1e-6
    for j in range(k):
        assert rel_err(out["relevance_maps"][:, j], maps[:, j]) <= TOL, j
    # conservation per map: each starts from its class's probability (NumPy's softmax) and
    # keeps what the single-target pass keeps
    probability = np.take_along_axis(softmax(logits.astype(np.float64)), top[:, :k], 1)
    np.testing.assert_allclose(out["relsum/start"], probability, rtol=1e-5)
    np.testing.assert_allclose(out["relsum/start"], start[:, :k], rtol=1e-5)
    np.testing.assert_allclose(out["relsum/input"], reached[:, :k], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out["relevance_maps"].sum((2, 3)), reached[:, :k], rtol=1e-4, atol=1e-7)


def test_fed_targets_and_minus_one_for_the_kth_most_probable(models, reference_maps):
    x, logits, top, maps, _, _ = reference_maps["resnet50", 8]
    x, top = x[:3], top[:3]
    explainer, _ = build_explainer(models["resnet50"], preset("paper", targets=3))
    targets = np.array([[7, -1, 3]] * 3, np.int64)
    targets[2] = [-1, -1, -1]
    out = run(explainer, {"input": x, "targets": targets})
    want = np.where(targets < 0, top[:, :3], targets)
    np.testing.assert_array_equal(out["targets_used"], want)
    single, _ = build_explainer(models["resnet50"], preset("paper"))
    (ref,) = single_maps(single, x, want)
    assert rel_err(out["relevance_maps"], ref) <= TOL


@pytest.mark.parametrize("options", [
    dict(method="gradient"), dict(method="gradxinput"), dict(method="guided-bp"), dict(method="gradcam"),
    dict(method="ig", ig_steps=4), dict(method="lrp-epsilon", start="logit"),
    dict(maxpool="winner", full_relevance=True, hq_levels=8), dict(variant="i"),
], ids=lambda o: "-".join(f"{v}" for v in o.values()))
def test_every_method_gives_the_single_target_maps(resnets, options):
    path = resnets["resnet18"][1]
    x = image_batch(2, seed=3)
    single, _ = build_explainer(path, preset("paper", **options))
    multi, _ = build_explainer(path, preset("paper", targets=4, **options))
    out = run(multi, {"input": x})
    names = ["relevance_map"] + [n for n in ("relevance", "relevance_map_hq") if n in
                                 {o.name for o in single.graph.output}]
    refs = single_maps(single, x, out["targets_used"], names)
    for name, ref in zip(names, refs):
        got = out[name.replace("relevance_map", "relevance_maps")]
        assert got.shape == ref.shape and rel_err(got, ref) <= TOL, name


def test_scorecam_shares_its_masked_passes(tmp_path):
    from export_resnet import build_model, export

    model, _ = build_model("resnet18", seed=12)
    export(model, str(tmp_path / "m.onnx"), image_size=64)
    x = image_batch(1, size=64, seed=44)
    single, _ = build_explainer(str(tmp_path / "m.onnx"), preset("paper", method="scorecam"))
    multi, _ = build_explainer(str(tmp_path / "m.onnx"), preset("paper", method="scorecam", targets=2))
    out = run(multi, {"input": x})
    (ref,) = single_maps(single, x, out["targets_used"])
    assert rel_err(out["relevance_maps"], ref) <= TOL
    assert sum(n.op_type == "Scan" for n in multi.graph.node) == 1


def test_float16_explainer_of_k_targets(resnets):
    path = resnets["resnet18"][1]
    x = image_batch(2, seed=5)
    single, _ = build_explainer(path, preset("paper", dtype="float16"))
    multi, _ = build_explainer(path, preset("paper", dtype="float16", targets=3))
    out = run(multi, {"input": x})
    (ref,) = single_maps(single, x, out["targets_used"])
    assert rel_err(out["relevance_maps"], ref) <= 1e-3  # float16 rounding of different batches


def test_explainer_api_top_k_and_contrast(resnets, tmp_path):
    from lrpgraph.driver import save_model

    multi, _ = build_explainer(resnets["resnet18"][1], preset("paper", targets=4))
    save_model(multi, tmp_path / "m4.onnx")
    ex = Explainer(str(tmp_path / "m4.onnx"), provider="cpu")
    x = image_batch(3, seed=9)
    full = ex.explain(x)
    assert full.heatmaps.shape == (3, 4, 224, 224) and full.targets.shape == (3, 4)
    probs = softmax(run(multi, {"input": x}, ["logits"])["logits"].astype(np.float64))
    np.testing.assert_allclose(full.target_probabilities, np.take_along_axis(probs, full.targets, 1), rtol=1e-6)
    two = ex.explain(x, top_k=2)
    np.testing.assert_array_equal(two.heatmaps, full.heatmaps[:, :2])
    contrast = ex.explain(x, contrast=True)
    m = full.heatmaps.astype(np.float64)
    want = m[:, 1] - (m[:, 0] + m[:, 2] + m[:, 3]) / 3
    assert rel_err(contrast.heatmaps[:, 1], want) <= 1e-5  # float32 differences of maps
    rec = contrast.record(0)
    assert [t["rank"] for t in rec["targets"]] == [1, 2, 3, 4] and rec["contrast"] is True
    assert rec["targets"][1]["map"] == f"0.k2_{int(full.targets[0, 1])}.png"
    with pytest.raises(Exception, match="explains 4 classes per image"):
        ex.explain(x, top_k=5)
    with pytest.raises(Exception, match="give 4 classes"):
        ex.explain(x, target=[1, 2])
    fed = ex.explain(x, targets=[5, -1, 7, -1])
    np.testing.assert_array_equal(fed.targets[:, [0, 2]], [[5, 7]] * 3)
    np.testing.assert_array_equal(fed.targets[:, 1], full.targets[:, 1])


def test_single_target_explainer_refuses_top_k(resnets, tmp_path):
    from lrpgraph.driver import save_model

    single, _ = build_explainer(resnets["resnet18"][1], preset("paper"))
    save_model(single, tmp_path / "m.onnx")
    ex = Explainer(str(tmp_path / "m.onnx"), provider="cpu")
    with pytest.raises(Exception, match="--targets 3"):
        ex.explain(image_batch(1), top_k=3)
    with pytest.raises(Exception, match="at least 2 classes"):
        ex.explain(image_batch(1), contrast=True)  # one map per image: nothing to contrast


def test_cli_writes_a_map_per_class_and_resumes(effnet, photos, tmp_path):
    import json
    import subprocess
    import sys

    model, out = effnet[1].replace(".lrp.onnx", ".onnx"), tmp_path / "out"
    lrp = [sys.executable, "-m", "lrpgraph"]
    built = subprocess.run(lrp + ["build", model, "-o", str(tmp_path / "k3.onnx"), "--targets", "3"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    explain = lrp + ["explain", str(tmp_path / "k3.onnx"), str(photos), "-o", str(out), "--provider", "cpu",
                     "--quiet", "--top-k", "2", "--sheet"]
    first = subprocess.run(explain, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(list(photos.iterdir()))
    for row in rows:
        assert [t["rank"] for t in row["targets"]] == [1, 2]
        assert row["targets"][0]["target"] == row["class"]  # the most probable first
        assert row["targets"][0]["target_probability"] >= row["targets"][1]["target_probability"]
        for t in row["targets"]:
            assert t["map"] == f"{row['name']}.k{t['rank']}_{t['target']}.png"
            for suffix in (".png", ".npy", "_overlay.png"):
                assert (out / t["map"].replace(".png", suffix)).exists()
    assert (out / "sheet.png").exists()
    again = subprocess.run(explain, capture_output=True, text=True)
    assert again.returncode == 0 and f"skipped {len(rows)} already done" in again.stdout
    bad = subprocess.run(explain[:-4] + ["-o", str(tmp_path / "bad"), "--top-k", "4"], capture_output=True, text=True)
    assert bad.returncode == 2 and "explains 3 classes per image" in bad.stderr
    assert not (tmp_path / "bad").exists()
