"""lrpgraph eval end to end on a small model, and the dataset readers."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lrpgraph import LrpGraphError
from lrpgraph.config import Preprocess
from lrpgraph.evaluate import evaluate, read_dataset


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for cls in ("3", "7"):
        (root / "tree" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / "tree" / cls / f"{i}.png")
    return root


def test_readers(photos, tmp_path):
    tree = read_dataset(str(photos / "tree"))
    assert [label for _, label in tree] == [3, 3, 3, 7, 7, 7]
    assert len(read_dataset(str(photos / "tree"), per_class=1, seed=42)) == 2
    assert read_dataset(str(photos / "tree"), per_class=1, seed=42) == read_dataset(str(photos / "tree"), per_class=1, seed=42)
    flat = photos / "tree" / "3"
    (tmp_path / "labels.txt").write_text("5\n6\n7\n")
    assert [l for _, l in read_dataset(str(flat), labels=str(tmp_path / "labels.txt"))] == [5, 6, 7]
    (tmp_path / "list.csv").write_text(f"{flat / '0.png'},9\n")
    assert read_dataset(None, listing=str(tmp_path / "list.csv")) == [(str(flat / "0.png"), 9)]
    (tmp_path / "syn.txt").write_text("n01440764\nn02123045\nn01440764\n")  # tench, tabby
    assert [l for _, l in read_dataset(str(flat), labels=str(tmp_path / "syn.txt"))] == [0, 281, 0]
    (tmp_path / "bad.csv").write_text("no label here\n")
    with pytest.raises(LrpGraphError, match="bad.csv:1"):
        read_dataset(None, listing=str(tmp_path / "bad.csv"))
    (tmp_path / "bad2.csv").write_text("a.png,cat\n")
    with pytest.raises(LrpGraphError, match="neither a class index nor an ImageNet synset"):
        read_dataset(None, listing=str(tmp_path / "bad2.csv"))


def test_eval_writes_tables_curves_and_per_image_scores(photos, tmp_path):
    from export_resnet import build_model, export

    model, _ = build_model("resnet18", num_classes=10, seed=1)
    path = str(tmp_path / "m.onnx")
    export(model, path, image_size=32)
    items = read_dataset(str(photos / "tree"), per_class=1)
    out = tmp_path / "res"
    table = evaluate(path, items, ["lrp-paper", "constant", "random", "blob"], str(out),
                     protocols=("paper", "tie-robust"), hq=(False, True),
                     pre=Preprocess(size=32, resize=36))
    methods = {r["method"] for r in table}
    assert methods == {"lrp-paper", "lrp-paper +HQ", "constant", "constant +HQ", "random",
                       "random +HQ", "blob", "blob +HQ"}
    lines = [json.loads(l) for l in open(out / "per_image.jsonl")]
    # the flaw the tie-robust protocol removes: a constant map inserts the whole image at
    # the first step, so its insertion AUC is the probability on the full image
    for rec in lines:
        if rec["method"] == "constant" and rec["protocol"] == "paper":
            assert rec["insertion"] == pytest.approx(rec["p_label"], rel=1e-5)
    assert len(lines) == 2 * 8 * 2
    assert (out / "table.md").exists() and (out / "table.csv").exists()
    assert len(json.load(open(out / "table.json"))) == 16
    assert (out / "curves_lrp-paper_paper.png").exists()
    with np.load(out / "curves.npz") as curves:
        assert curves["lrp-paper|paper"].shape == (2, 2, 3)  # images x (ins, del) x points (32 px: 3)
        # the stored curves give back the table's AUCs
        ins = curves["lrp-paper|paper"][:, 0]
        auc = (ins.sum(1) - ins[:, 0] / 2 - ins[:, -1] / 2) / (ins.shape[1] - 1)
        row = next(r for r in table if (r["method"], r["protocol"]) == ("lrp-paper", "paper"))
        assert auc.mean() == pytest.approx(row["insertion"], rel=1e-5)


def test_eval_cli_refuses_unknown_methods(photos, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lrpgraph", "eval", str(tmp_path / "none.onnx"),
                           "--data", str(photos / "tree"), "--methods", "lime"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown method(s) ['lime']" in proc.stderr and "scorecam" in proc.stderr


def test_ablation_table_lists_variants_by_protocol(capsys):
    from lrpgraph.cli import print_ablation

    table = [{"method": m, "protocol": p, "id": i} for m, p, i in
             [("lrp-i", "paper", 0.51), ("lrp-iv", "paper", 0.545), ("lrp-i", "tie-robust", 0.1),
              ("lrp-iv", "tie-robust", 0.2), ("constant", "paper", 0.9)]]
    print_ablation(table)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "| variant | paper | tie-robust |"
    assert out[3:] == ["| lrp-i | 0.510 | 0.100 |", "| lrp-iv | 0.545 | 0.200 |"]


def test_channel_reduction_first_is_the_authors_channel_0(resnets):
    """--channel-reduction first ranks channel 0 alone, as the authors' patch_insdel.py does
    with captum's 3 x H x W maps: the map equals captum's InputXGradient's channel 0 (and the
    default, the channel sum, its sum)."""
    import copy

    import torch
    from captum.attr import InputXGradient

    from lrpgraph.evaluate import Scorer
    from lrpgraph.preprocess import normalise

    model, path = resnets["resnet18"]
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    cropped = np.random.default_rng(3).random((224, 224, 3))
    x = torch.from_numpy(normalise(cropped[None], Preprocess()))
    target = int(model(x).argmax())
    ref = InputXGradient(model).attribute(x, target=target).detach().numpy()[0]
    first = Scorer(path, ["gradxinput"], channels="first")
    summed = Scorer(path, ["gradxinput"])
    a, b = first.attribution("gradxinput", cropped, 0), summed.attribution("gradxinput", cropped, 0)
    assert np.abs(a - ref[0]).max() <= 1e-3 * np.abs(ref[0]).max()
    assert np.abs(b - ref.sum(0)).max() <= 1e-3 * np.abs(ref.sum(0)).max()
    assert first.label("gradxinput") == "gradxinput (channel 0)" and summed.label("gradxinput") == "gradxinput"
    assert first.label("gradcam") == "gradcam"
    with pytest.raises(LrpGraphError, match="channel reduction"):
        Scorer(path, ["gradxinput"], channels="mean")


def _one_by_one(predict, image, masks, label):
    """The curves as the authors' loop computes them: one perturbed image per point."""
    ins = [predict(np.where(m[None, ..., None], image[None], 0.0))[0, label] for m in masks]
    dele = [predict(np.where(m[None, ..., None], 0.0, image[None]))[0, label] for m in masks]
    return np.array(ins), np.array(dele)


def test_a_curve_plan_predicts_each_distinct_image_once_and_changes_no_score():
    from lrpgraph.metrics import exact_masks, paper_masks, paper_steps
    from lrpgraph.perturb import CurvePlan

    rng = np.random.default_rng(0)
    image = rng.random((20, 30, 3)).astype(np.float32)
    w = rng.standard_normal((20 * 30 * 3, 4))

    def predict(batch):
        z = batch.reshape(len(batch), -1) @ w
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ramp = np.arange(600, dtype=np.float32).reshape(20, 30)
    tied = np.floor(ramp / 200)  # three levels: the paper's steps repeat masks
    plan = CurvePlan(image)
    asked = {(name, protocol): plan.add(a, 2, protocol, seeds=(0, 1), step=50)
             for name, a in (("ramp", ramp), ("tied", tied), ("constant", np.ones_like(ramp)))
             for protocol in ("paper", "tie-robust")}
    plan.run(predict, batch=7)
    assert plan.requested == 3 * (2 * 12 + 2 * 2 * 12)
    assert plan.distinct < plan.requested
    for (name, protocol), handle in asked.items():
        a = {"ramp": ramp, "tied": tied, "constant": np.ones_like(ramp)}[name]
        if protocol == "paper":
            ins, dele = _one_by_one(predict, image, paper_masks(a, 50), 2)
        else:
            pairs = [_one_by_one(predict, image, exact_masks(a, paper_steps(600, 50), np.random.default_rng(s)), 2)
                     for s in (0, 1)]
            ins, dele = np.mean([p[0] for p in pairs], 0), np.mean([p[1] for p in pairs], 0)
        got = plan.curves(handle)
        np.testing.assert_allclose(got.insertion, ins, rtol=1e-6)
        np.testing.assert_allclose(got.deletion, dele, rtol=1e-6)
    single = CurvePlan(image)
    single.add(np.ones_like(ramp), 2, "paper", step=50)
    assert single.distinct == 2  # a constant map: the whole photo, and black


def test_paired_statistics_are_scipys_and_the_bootstrap_covers_the_mean():
    from scipy.stats import wilcoxon

    from lrpgraph.stats import bootstrap_ci, paired, paired_comparisons

    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.1, 200)
    b = a - 0.05 + rng.normal(0, 0.02, 200)
    result = paired(a, b)
    assert result["p"] == pytest.approx(wilcoxon(a - b).pvalue)
    assert result["lo"] < 0.05 < result["hi"] and result["lo"] > 0  # the shift is found, 0 excluded
    lo, hi = bootstrap_ci(a)
    # the normal-theory interval as an independent check of the percentile bootstrap's width
    half = 1.96 * a.std(ddof=1) / np.sqrt(a.size)
    assert lo == pytest.approx(a.mean() - half, abs=3e-3) and hi == pytest.approx(a.mean() + half, abs=3e-3)
    assert paired(a, a)["p"] == 1.0
    rows = {("x", "paper"): [{"file": str(i), "id": v} for i, v in enumerate(a)],
            ("gradcam", "paper"): [{"file": str(i), "id": v} for i, v in enumerate(b)]}
    (only,) = paired_comparisons(rows)
    assert (only["method"], only["baseline"], only["images"]) == ("x", "gradcam", 200)


def test_a_killed_eval_resumes_where_it_stopped(photos, tmp_path):
    """Kill an eval after its first image, run it again: it scores only the rest, and its
    tables equal an uninterrupted run's."""
    import os
    import signal
    import time

    from export_resnet import build_model, export

    model, _ = build_model("resnet18", num_classes=10, seed=1)
    path = str(tmp_path / "m.onnx")
    export(model, path, image_size=32)
    command = [sys.executable, "-m", "lrpgraph", "eval", path, "--data", str(photos / "tree"),
               "--methods", "lrp-paper,gradxinput", "--size", "32", "--quiet"]
    whole = tmp_path / "whole"
    subprocess.run(command + ["-o", str(whole)], check=True, capture_output=True)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(command + ["-o", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = cut / "per_image.partial.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (partial.exists() and partial.read_text().count("\n") >= 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not (cut / "table.json").exists()
    done_before = partial.read_text().count("\n") - 1
    assert 1 <= done_before < 6
    subprocess.run(command + ["-o", str(cut)], check=True, capture_output=True)
    timing = json.load(open(cut / "timing.json"))
    assert timing["resumed_with"] >= done_before and timing["images"] == 6 - timing["resumed_with"]
    assert not partial.exists()
    strip = lambda f: sorted(json.dumps(r, sort_keys=True) for r in map(json.loads, open(f)))
    assert strip(cut / "per_image.jsonl") == strip(whole / "per_image.jsonl")


def test_an_unfinished_eval_with_other_settings_is_refused(photos, tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    (out / "per_image.partial.jsonl").write_text(json.dumps({"settings": {"methods": ["other"]}}) + "\n")
    from export_resnet import build_model, export

    model, _ = build_model("resnet18", num_classes=10, seed=1)
    export(model, str(tmp_path / "m.onnx"), image_size=32)
    with pytest.raises(LrpGraphError, match="unfinished eval with other settings"):
        evaluate(str(tmp_path / "m.onnx"), read_dataset(str(photos / "tree")), ["constant"], str(out),
                 pre=Preprocess(size=32, resize=36))


def test_eval_can_follow_the_predicted_class(photos, tmp_path):
    """--scored-class predicted: the curves follow the class the maps explain, so a constant
    map's paper insertion (the whole photo at once) is the predicted class's probability."""
    from export_resnet import build_model, export

    model, _ = build_model("resnet18", num_classes=10, seed=1)
    path = str(tmp_path / "m.onnx")
    export(model, path, image_size=32)
    out = tmp_path / "res"
    evaluate(path, read_dataset(str(photos / "tree"), per_class=1), ["constant"], str(out), protocols=("paper",),
             hq=(False,), pre=Preprocess(size=32, resize=36), scored="predicted")
    import torch

    from lrpgraph.preprocess import crop, load_rgb, normalise

    for rec in map(json.loads, open(out / "per_image.jsonl")):
        x = normalise(np.asarray(crop(load_rgb(rec["file"]), Preprocess(size=32, resize=36)),
                                 np.float32)[None] / 255.0, Preprocess(size=32, resize=36))
        with torch.no_grad():
            p = torch.softmax(model(torch.from_numpy(x)), 1)[0].numpy()
        assert rec["insertion"] == pytest.approx(float(p.max()), rel=1e-4)


def _gaussian_nearest(a, sigma):
    """scipy's gaussian_filter(mode="nearest", truncate=4), written out: a separable kernel
    of radius int(4 sigma + 0.5), the edges repeated."""
    r = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(a, r, mode="edge")
    rows = sum(k[i] * padded[i:i + a.shape[0], :] for i in range(2 * r + 1))
    return sum(k[i] * rows[:, i:i + a.shape[1]] for i in range(2 * r + 1))


def test_eval_rows_for_hq_of_some_methods_smoothing_and_positive_part(photos, tmp_path):
    from export_resnet import build_model, export

    from lrpgraph.evaluate import Scorer

    model, _ = build_model("resnet18", num_classes=10, seed=1)
    path = str(tmp_path / "m.onnx")
    export(model, path, image_size=32)
    scorer = Scorer(path, ["lrp-paper", "gradient", "constant"], hq=(False, True), hq_methods=["lrp-paper"],
                    smooth=(1.5,), positive=True, pre=Preprocess(size=32, resize=36))
    a = np.random.default_rng(2).standard_normal((32, 32)).astype(np.float32)
    rows = dict(scorer.variants("gradient", a))
    assert set(rows) == {"", " +blur1.5", " +pos"}  # no HQ: only lrp-paper's is asked for
    np.testing.assert_allclose(rows[" +blur1.5"], _gaussian_nearest(a.astype(np.float64), 1.5), atol=1e-6)
    np.testing.assert_array_equal(rows[" +pos"], np.where(a > 0, a, 0))
    assert {s for s, _ in scorer.variants("lrp-paper", a)} == {"", " +HQ", " +blur1.5", " +pos"}
    assert {s for s, _ in scorer.variants("constant", a)} == {""}  # sanity rows stay as they are
    records = scorer.score(read_dataset(str(photos / "tree"), per_class=1)[0][0], 3, 0)
    assert len({r["method"] for r in records}) == 4 + 3 + 1 and len(records) == 2 * 8
