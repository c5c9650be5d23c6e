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
