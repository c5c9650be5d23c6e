"""lrpgraph explain on real photos (scikit-image's bundled images) with the real ImageNet
classifier that installs offline (EfficientNet-Lite0), CPU provider."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import PHOTOS, run


def test_predictions_match_torch_and_heatmaps_match_the_graph(effnet, photos):
    import torch

    from lrpgraph import Explainer
    from lrpgraph.preprocess import prepare

    model, path = effnet
    ex = Explainer(path, provider="cpu")
    files = [str(photos / f"{n}.jpg") for n in PHOTOS]
    result = ex.explain(files)
    x = np.stack([prepare(f, ex.preprocess)[0] for f in files])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).argmax(1).numpy()
    np.testing.assert_array_equal(result.classes, expected)
    np.testing.assert_array_equal(result.classes, list(PHOTOS.values()))
    assert result.heatmaps.shape == (4, 224, 224)
    graph = run(path, {"input": x}, ["relevance_map"])["relevance_map"]
    np.testing.assert_allclose(result.heatmaps, graph, rtol=1e-5, atol=1e-7 * np.abs(graph).max())
    assert result.class_names[result.classes[0]] == "Egyptian cat"


def test_python_api_takes_paths_pil_images_and_arrays(effnet, photos, tmp_path):
    from PIL import Image

    from lrpgraph import Explainer

    ex = Explainer(effnet[1], provider="cpu")
    pil = Image.open(photos / "coffee.jpg")
    arr = np.asarray(pil)
    result = ex.explain([str(photos / "coffee.jpg"), pil, arr], target=968)
    assert list(result.targets) == [968] * 3
    np.testing.assert_allclose(result.heatmaps[0], result.heatmaps[1], rtol=1e-6)
    np.testing.assert_allclose(result.heatmaps[0], result.heatmaps[2], rtol=1e-6)
    result.save(tmp_path)
    assert (tmp_path / "coffee.npy").exists() and (tmp_path / "image1_overlay.png").exists()
    lines = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
    assert [r["target_name"] for r in lines] == ["cup"] * 3


def test_hq_has_at_most_l_levels_and_keeps_the_maximum(effnet, photos):
    from lrpgraph import Explainer

    result = Explainer(effnet[1], provider="cpu").explain([str(photos / "rocket.jpg")], hq=True)
    hq, raw = result.heatmaps_hq[0], result.heatmaps[0]
    assert len(np.unique(hq)) <= 8
    assert hq.max() == raw.max() and hq.min() == raw.min()


def test_folder_with_bad_files_and_resume(effnet, photos, tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("chelsea", "coffee"):
        (folder / f"{name}.jpg").write_bytes((photos / f"{name}.jpg").read_bytes())
    (folder / "sub" / "rocket.jpg").write_bytes((photos / "rocket.jpg").read_bytes())
    (folder / "broken.jpg").write_bytes((photos / "coffee.jpg").read_bytes()[:3000])
    (folder / "notes.txt").write_text("not an image")
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lrpgraph", "explain", effnet[1], str(folder), "-o", str(out),
           "--provider", "cpu", "--batch-size", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 1, first.stderr
    for bad in ("broken.jpg", "notes.txt", "dot.png"):
        assert bad in first.stderr
    assert "explained 3, skipped 0 already done, failed 3" in first.stdout
    for name in ("chelsea", "coffee", os.path.join("sub", "rocket")):
        for suffix in (".npy", ".png", "_overlay.png"):
            assert (out / f"{name}{suffix}").exists()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert "explained 0, skipped 3 already done" in again.stdout
    redo = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True)
    assert "explained 3, skipped 0" in redo.stdout
    names = [json.loads(line)["name"] for line in open(out / "results.jsonl")]
    assert sorted(names) == sorted(["chelsea", "coffee", os.path.join("sub", "rocket")])
    assert not [p for p in out.rglob("*.tmp")]


def test_writing_a_batch_overlaps_explaining_the_next(effnet, photos, tmp_path, monkeypatch):
    """The first batch's save waits for the second batch's explainer call: with writing in
    line (the old loop) that call never comes while the save waits."""
    import threading

    from lrpgraph import Explainer
    from lrpgraph.explain import explain_paths
    from lrpgraph.results import Result

    second_run, overlapped = threading.Event(), []
    ex = Explainer(effnet[1], provider="cpu")
    real_run, real_save, runs = ex.run, Result.save, []

    def run(*args, **kw):
        runs.append(1)
        if len(runs) == 2:
            second_run.set()
        return real_run(*args, **kw)

    def save(self, folder, **kw):
        if not overlapped:
            overlapped.append(second_run.wait(timeout=60))
        real_save(self, folder, **kw)

    ex.run = run
    monkeypatch.setattr(Result, "save", save)
    summary = explain_paths(ex, [str(photos)], str(tmp_path / "out"), batch_size=1, progress=False)
    assert overlapped == [True]
    assert summary.explained == len(PHOTOS)
    assert len(open(tmp_path / "out" / "results.jsonl").readlines()) == len(PHOTOS)


def test_a_failed_write_stops_the_run_and_reaches_the_caller(effnet, photos, tmp_path, monkeypatch):
    """Batches are written on a thread of their own while the next one is explained: a
    write that fails (a full disk) must still stop the run with its own error, after the
    batches before it were written whole."""
    from lrpgraph import Explainer
    from lrpgraph.explain import explain_paths
    from lrpgraph.results import Result

    real_save, calls = Result.save, []

    def save(self, folder, **kw):
        calls.append(list(self.names))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_save(self, folder, **kw)

    monkeypatch.setattr(Result, "save", save)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        explain_paths(Explainer(effnet[1], provider="cpu"), [str(photos)], str(out), batch_size=1,
                      progress=False)
    assert len(calls) == 2  # nothing written after the failure
    (first,) = calls[0]
    assert [json.loads(line)["name"] for line in open(out / "results.jsonl")] == [first]
    assert sorted(p.name for p in out.iterdir() if p.name != ".lrpgraph.lock") == sorted(
        ["results.jsonl", "run.json", f"{first}.npy", f"{first}.png", f"{first}_overlay.png"])


def test_bad_inputs_at_explain_time(effnet):
    from lrpgraph import Explainer, LrpGraphError

    ex = Explainer(effnet[1], provider="cpu")
    with pytest.raises(LrpGraphError, match="axis 1 has size 1"):
        ex.run(np.zeros((1, 1, 224, 224), np.float32))
    with pytest.raises(LrpGraphError, match="NaN"):
        ex.run(np.full((1, 3, 224, 224), np.nan, np.float32))
    with pytest.raises(LrpGraphError, match="out of range"):
        ex.run(np.zeros((1, 3, 224, 224), np.float32), target=1000)


def test_bad_target_on_the_command_line_fails_before_writing(effnet, photos, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lrpgraph", "explain", effnet[1], str(photos), "-o", str(out),
           "--provider", "cpu", "--target", "1000"]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "out of range" in bad.stderr and "Traceback" not in bad.stderr
    assert not out.exists()
