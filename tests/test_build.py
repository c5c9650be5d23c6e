"""lrpgraph build end to end: conservation, the forward output kept, validity, dynamic
batch, other exporters' graphs, Heat Quantization, errors."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import reference
from conftest import image_batch, run, session
from lrpgraph import LrpGraphError, UnsupportedOpsError, preset
from lrpgraph.session import predicted_targets
from lrpgraph.driver import build_explainer, save_model

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_resnet50.onnx")


def relsums(out):
    """{node: (relevance entering from above, relevance leaving to its inputs)} per image."""
    return {k[len("relsum/"):-len("/out")]: (out[k], out[k[:-len("out")] + "in"])
            for k in out if k.startswith("relsum/") and k.endswith("/out")}


@pytest.fixture(scope="module")
def resnet50_conservation(resnets):
    _, path = resnets["resnet50"]
    x = image_batch(2, seed=7)
    results = {}
    for maxpool in ("avg2x2", "winner"):
        model, _ = build_explainer(path, preset("paper", maxpool=maxpool, conservation=True))
        results[maxpool] = run(model, {"input": x})
    return results


def test_every_rule_conserves_on_resnet50(resnet50_conservation):
    for maxpool, out in resnet50_conservation.items():
        sums = relsums(out)
        assert len(sums) > 50
        for name, (r_out, r_in) in sums.items():
            err = np.abs(r_in - r_out) / np.abs(r_out)
            if maxpool == "avg2x2" and "MaxPool" in name:
                continue
            assert err.max() <= 1e-3, (maxpool, name, err)


def test_end_to_end_conservation_with_winner_maxpool(resnet50_conservation):
    out = resnet50_conservation["winner"]
    start, total = out["relsum/start"], out["relsum/input"]
    assert (np.abs(total - start) / start).max() <= 1e-3
    np.testing.assert_allclose(out["relevance_map"].sum((1, 2)), total, rtol=1e-4)


def test_paper_maxpool_loss_is_reported_and_matches_reference(resnets, resnet50_conservation):
    model, _ = resnets["resnet50"]
    out = resnet50_conservation["avg2x2"]
    (name,) = [n for n in relsums(out) if "MaxPool" in n]
    r_out, r_in = relsums(out)[name]
    _, _, sums = reference.lrp(model, torch.from_numpy(image_batch(2, seed=7)))
    ref_loss = (sums["after_blocks"] - sums["after_maxpool"]).detach().numpy()
    assert (ref_loss > 0).all()  # the stand-in loses relevance: SPEC.md section 1
    np.testing.assert_allclose(r_out - r_in, ref_loss, rtol=1e-2)


def test_logits_equal_the_original_model(resnets):
    _, path = resnets["resnet50"]
    explainer, _ = build_explainer(path)
    x = image_batch(2, seed=8)
    original = session(path).run(None, {"input": x})[0]
    logits = run(explainer, {"input": x}, ["logits"])["logits"]
    assert np.abs(logits - original).max() <= 1e-5 * np.abs(original).max()
    np.testing.assert_array_equal(logits.argmax(1), original.argmax(1))


def test_saved_explainer_is_valid_and_not_doubled(resnets, tmp_path):
    _, path = resnets["resnet50"]
    out = tmp_path / "r50.lrp.onnx"
    explainer, _ = build_explainer(path)
    save_model(explainer, out)
    onnx.checker.check_model(str(out), full_check=True)
    # W+ is Relu(W) folded by ORT at load: no second copy of the weights in the file, but
    # for the strided dense convs' ConvTranspose, which gets its own (rules/conv.py: OpenVINO)
    copies = [i for i in explainer.graph.initializer if "_copy" in i.name and len(i.dims) == 4]
    copied = sum(onnx.numpy_helper.to_array(i).nbytes for i in copies)
    assert len(copies) == 4 and copied < 0.13 * os.path.getsize(path)  # conv1, layer2-4's strided 3x3
    assert out.stat().st_size < 1.05 * os.path.getsize(path) + copied
    assert [p.name for p in tmp_path.iterdir()] == ["r50.lrp.onnx"]  # no temporary left


def test_ort_sees_shapes_and_folds_every_weight_transform(resnets, tmp_path):
    """What the explainer's speed rests on: W+ and the flipped/transposed kernels are
    constants ORT folds at load (no Relu/Slice/Transpose on weights per call), and every
    relevance tensor keeps the symbolic batch axis, so ORT can prove operands equal in
    shape (without that it keeps relevance Muls out of its blocked layout)."""
    import onnxruntime as ort

    _, path = resnets["resnet18"]
    explainer, _ = build_explainer(path)
    inferred = onnx.shape_inference.infer_shapes(explainer)
    batch = explainer.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    relevance = [v for v in inferred.graph.value_info
                 if v.name.startswith("lrp/") and v.type.tensor_type.shape.dim
                 and len(v.type.tensor_type.shape.dim) == 4]
    assert len(relevance) > 50
    lost = [v.name for v in relevance if v.type.tensor_type.shape.dim[0].dim_param not in (batch, "")
            and v.type.tensor_type.shape.dim[0].dim_value != 1]
    assert not lost, lost[:5]

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(explainer.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(opts.optimized_model_filepath)
    initializers = {t.name for t in optimized.graph.initializer}
    on_weights = [n.name for n in optimized.graph.node
                  if n.op_type in ("Relu", "Slice", "Transpose", "Reshape", "Pad")
                  and n.input and n.input[0] in initializers]
    assert not on_weights, on_weights[:5]
    # the ratio split reads the branch output h_m, so each skip merge's Add stays an Add,
    # run in ORT's blocked layout where it has one: no reorder into or out of it
    producer = {o: n for n in optimized.graph.node for o in n.output}
    merges = [n for n in optimized.graph.node if n.op_type == "Add"
              and not n.name.startswith("lrp/") and "Add" in n.name]
    assert len(merges) == 8  # resnet18's skip merges
    reordered = [n.name for n in merges
                 if any(producer[i].op_type.startswith("Reorder") for i in n.input)
                 or any(c.op_type.startswith("Reorder") for c in optimized.graph.node
                        if n.output[0] in c.input)]
    assert not reordered, reordered


def test_build_without_target_input_has_no_control_flow(resnets, tmp_path):
    from lrpgraph.explain import Explainer

    model, path = resnets["resnet18"]
    explainer, _ = build_explainer(path, preset("paper", target_input=False))
    assert [i.name for i in explainer.graph.input] == ["input"]
    assert not {n.op_type for n in explainer.graph.node} & {"If", "Loop", "Scan", "OptionalHasElement"}
    x = image_batch(2)
    out = run(explainer, {"input": x})
    _, r, _ = reference.lrp(model, torch.from_numpy(x))
    ref = r.sum(1).detach().numpy()
    assert np.abs(out["relevance_map"] - ref).max() <= 1e-4 * np.abs(ref).max()
    save_model(explainer, tmp_path / "untargeted.onnx")
    with pytest.raises(LrpGraphError, match="no-target-input"):
        Explainer(str(tmp_path / "untargeted.onnx"), provider="cpu").run(x, target=[1, 2])


def test_dynamic_batch(resnets):
    _, path = resnets["resnet18"]
    explainer, _ = build_explainer(path, preset("paper", hq_levels=8))
    sess = session(explainer)
    x = image_batch(8, seed=9)
    single = [sess.run(["relevance_map"], predicted_targets(sess, {"input": x[i:i + 1]}))[0][0] for i in range(8)]
    for n in (1, 3, 8):
        (rmap,) = sess.run(["relevance_map"], predicted_targets(sess, {"input": x[:n]}))
        assert rmap.shape == (n, 224, 224)
        for i in range(n):
            assert np.abs(rmap[i] - single[i]).max() <= 1e-5 * np.abs(single[i]).max()


def test_heat_quantization_matches_spec(resnets):
    _, path = resnets["resnet18"]
    explainer, _ = build_explainer(path, preset("paper", hq_levels=8))
    out = run(explainer, {"input": image_batch(3, seed=10)})
    for alpha, hq in zip(out["relevance_map"], out["relevance_map_hq"]):
        assert len(np.unique(hq)) <= 8
        assert hq.max() == alpha.max()
        edges = np.linspace(alpha.min(), alpha.max(), 8)
        idx = np.clip(np.searchsorted(edges, alpha, side="right") - 1, 0, 7)
        expected = np.where(alpha == alpha.max(), alpha.max(), edges[idx])
        close = np.isclose(hq, expected, rtol=0, atol=1e-6 * (alpha.max() - alpha.min()))
        assert close.mean() >= 0.999  # float rounding may move a pixel on an edge


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript-folded"])
def test_other_exporters_match_reference(tmp_path, exporter):
    from export_resnet import build_model, export

    model, _ = build_model("resnet18", seed=2)
    path = str(tmp_path / "m.onnx")
    export(model, path, exporter=exporter.split("-")[0], fold_bn=exporter.endswith("folded"))
    explainer, report = build_explainer(path, preset("paper", full_relevance=True))
    assert not any(op == "BatchNormalization" for _, op, _ in report.rules)
    assert any("folded" in w for w in report.warnings)
    x = image_batch(2, seed=11)
    out = run(explainer, {"input": x})
    _, r, _ = reference.lrp(reference.fold_batchnorm(model), torch.from_numpy(x))
    r = r.detach().numpy()
    assert np.abs(out["relevance"] - r).max() <= 1e-4 * np.abs(r).max()


def test_nhwc_softmax_graph_like_tensorflow(tmp_path):
    """NHWC input + Transpose, BN folded, a Softmax head (as tf2onnx writes them)."""
    from export_resnet import build_model

    model, _ = build_model("resnet18", seed=3)

    class Nhwc(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.softmax(self.inner(x.permute(0, 3, 1, 2)), dim=1)

    path = str(tmp_path / "tf_like.onnx")
    torch.onnx.export(Nhwc(model).eval(), (torch.zeros(1, 224, 224, 3),), path, dynamo=False,
                      opset_version=17, input_names=["image"], output_names=["probs"],
                      dynamic_axes={"image": {0: "N"}, "probs": {0: "N"}})
    explainer, report = build_explainer(path, preset("paper", full_relevance=True))
    assert report.layout == "NHWC"
    x = image_batch(2, seed=12)
    out = run(explainer, {"input": x.transpose(0, 2, 3, 1).copy()})
    logits, r, _ = reference.lrp(reference.fold_batchnorm(model), torch.from_numpy(x))
    np.testing.assert_allclose(out["logits"], torch.softmax(logits, 1).detach().numpy(), rtol=1e-4, atol=1e-7)
    r = r.detach().numpy()
    assert out["relevance"].shape == (2, 224, 224, 3)
    assert np.abs(out["relevance"].transpose(0, 3, 1, 2) - r).max() <= 1e-4 * np.abs(r).max()
    assert np.abs(out["relevance_map"] - r.sum(1)).max() <= 1e-4 * np.abs(r.sum(1)).max()


def test_light_resnet50_from_caffe2(tmp_path):
    original = onnx.load(LIGHT)
    explainer, report = build_explainer(LIGHT, preset("paper", maxpool="winner", conservation=True))
    assert report.merges == {"identity": 12, "projection": 4}
    x = image_batch(1, seed=13)
    out = run(explainer, {"input": x})
    expected = session(LIGHT).run(None, {original.graph.input[0].name: x})[0]
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=1e-7)
    assert np.isfinite(out["relevance_map"]).all()
    assert abs(out["relsum/input"][0] - out["relsum/start"][0]) <= 1e-3 * out["relsum/start"][0]


UNSUPPORTED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4] y) <float[4, 3, 3, 3] w, float[4, 256] fw> {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    s = Sin (c)
    m = Mul (s, c)
    f = Flatten (m)
    y = Gemm <transB = 1> (f, fw)
}
"""


def _unsupported_model(tmp_path):
    model = onnx.parser.parse_model(UNSUPPORTED)
    rng = np.random.default_rng(0)
    for name, shape in (("w", (4, 3, 3, 3)), ("fw", (4, 256))):
        model.graph.initializer.append(onnx.numpy_helper.from_array(
            rng.standard_normal(shape).astype(np.float32), name))
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    return path


def test_unsupported_ops_are_all_listed_and_nothing_written(tmp_path):
    path = _unsupported_model(tmp_path)
    with pytest.raises(UnsupportedOpsError) as info:
        build_explainer(str(path))
    ops = sorted(op for _, op, _ in info.value.problems)
    assert ops == ["Mul", "Sin"]
    out = tmp_path / "bad.lrp.onnx"
    proc = subprocess.run([sys.executable, "-m", "lrpgraph", "build", str(path), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Sin" in proc.stderr and "Mul" in proc.stderr and "nothing was written" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_not_onnx_gives_one_clear_error(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model" * 10)
    with pytest.raises(LrpGraphError, match="not a readable ONNX model"):
        build_explainer(str(junk))


def test_cli_build_and_inspect(resnets, tmp_path):
    _, path = resnets["resnet18"]
    out = tmp_path / "r18.lrp.onnx"
    proc = subprocess.run([sys.executable, "-m", "lrpgraph", "build", path, "-o", str(out),
                           "--variant", "ii", "--maxpool", "winner", "--hq", "--hq-levels", "4"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "skip merges: 5 identity, 3 projection" in proc.stdout
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert '"split": "symmetric"' in meta["lrpgraph.config"] and '"hq_levels": 4' in meta["lrpgraph.config"]
    assert "relevance_map_hq" in [o.name for o in model.graph.output]
    proc = subprocess.run([sys.executable, "-m", "lrpgraph", "inspect", path],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "skip merge (projection" in proc.stdout and "w+ (ones input, first layer)" in proc.stdout


def test_build_needs_neither_onnxruntime_nor_torch(resnets, tmp_path):
    _, path = resnets["resnet18"]
    code = ("import sys, lrpgraph.driver as d; d.build(sys.argv[1], sys.argv[2]); "
            "print(sorted(m for m in ('onnxruntime', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "x.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_export_from_a_fine_tuned_checkpoint(tmp_path):
    from export_resnet import build_model, main

    model, _ = build_model("resnet18", num_classes=200, seed=5)
    ckpt = tmp_path / "cub.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    out = tmp_path / "cub.onnx"
    assert main(["resnet18", "--checkpoint", str(ckpt), "--num-classes", "200", "-o", str(out)]) == 0
    x = image_batch(1, seed=14)
    logits = session(str(out)).run(None, {"input": x})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert logits.shape == (1, 200)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    wrong = main(["resnet18", "--checkpoint", str(ckpt), "-o", str(tmp_path / "bad.onnx")])
    assert wrong == 2 and not (tmp_path / "bad.onnx").exists()


def test_float16_explainer_conserves_and_tracks_float32(resnets):
    _, path = resnets["resnet18"]
    x = image_batch(2, seed=15)
    outs = {}
    for dtype in ("float32", "float16"):
        model, _ = build_explainer(path, preset("paper", maxpool="winner", conservation=True, dtype=dtype))
        outs[dtype] = run(model, {"input": x})
    full, half = outs["float32"], outs["float16"]
    assert half["logits"].dtype == np.float32 and half["relevance_map"].dtype == np.float32
    assert np.isfinite(half["relevance_map"]).all()
    # relevance is scaled back from the float16 pass's fixed start: conservation still holds
    np.testing.assert_allclose(half["relsum/input"], half["relsum/start"], rtol=2e-3)
    np.testing.assert_allclose(half["relsum/start"], full["relsum/start"], rtol=2e-3)
    err = np.abs(half["relevance_map"] - full["relevance_map"]).max() / np.abs(full["relevance_map"]).max()
    assert err <= 5e-2
    assert np.corrcoef(half["relevance_map"].ravel(), full["relevance_map"].ravel())[0, 1] >= 0.999


def test_inspect_lists_what_matched_and_what_did_not(tmp_path):
    path = _unsupported_model(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "lrpgraph", "inspect", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unsupported: 2 node(s)" in proc.stdout and "Sin" in proc.stdout and "Gemm" in proc.stdout


def test_cam_explainer_with_conservation_builds_and_check_says_why_not(resnets, tmp_path):
    """Grad-CAM's pass stops at its feature map: --conservation gives the sums down to it,
    no relsum/input, and check refuses the explainer with one reason, not a KeyError."""
    from lrpgraph.check import check

    _, path = resnets["resnet18"]
    explainer, _ = build_explainer(path, preset(method="gradcam", conservation=True))
    names = [o.name for o in explainer.graph.output]
    assert "relsum/start" in names and "relsum/input" not in names
    save_model(explainer, tmp_path / "cam.lrp.onnx")
    with pytest.raises(LrpGraphError, match="no conservation to check"):
        check(str(tmp_path / "cam.lrp.onnx"))
