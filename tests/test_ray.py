"""Explaining on Ray Data: the same heatmaps as the local command, bit for bit; a worker
killed mid-run loses no image; results.jsonl has each image once."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    marker = tmp_path_factory.mktemp("marker") / "killed"
    os.environ["LRPGRAPH_TEST_KILL_WORKER_ONCE"] = str(marker)  # workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield marker
    ray.shutdown()
    os.environ.pop("LRPGRAPH_TEST_KILL_WORKER_ONCE", None)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from PIL import Image

    from export_resnet import build_model, export
    from lrpgraph.driver import build

    folder = tmp_path_factory.mktemp("ray")
    model, _ = build_model("resnet18", seed=8)
    export(model, str(folder / "m.onnx"))
    build(str(folder / "m.onnx"), str(folder / "m.lrp.onnx"))
    photos = folder / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    (photos / "bad.txt").write_text("not an image")
    return folder


def test_ray_run_equals_local_run_and_survives_a_killed_worker(cluster, setup, tmp_path):
    from lrpgraph import Explainer
    from lrpgraph.explain import explain_paths
    from lrpgraph.ray import explain_paths_ray

    model, photos = str(setup / "m.lrp.onnx"), str(setup / "photos")
    local = explain_paths(Explainer(model, provider="cpu"), [photos], str(tmp_path / "local"), batch_size=1,
                          progress=False)
    assert not cluster.exists()
    distributed = explain_paths_ray(model, [photos], str(tmp_path / "ray"), batch_size=1, provider="cpu", workers=2)
    assert cluster.exists()  # a worker did die mid-batch, and was restarted
    assert (local.explained, len(local.failed)) == (distributed.explained, len(distributed.failed)) == (6, 1)
    for i in range(6):
        a = np.load(tmp_path / "local" / f"p{i}.npy")
        b = np.load(tmp_path / "ray" / f"p{i}.npy")
        np.testing.assert_array_equal(a, b)
    names = [json.loads(line)["name"] for line in open(tmp_path / "ray" / "results.jsonl")]
    assert sorted(names) == [f"p{i}" for i in range(6)]
    again = explain_paths_ray(model, [photos], str(tmp_path / "ray"), batch_size=1, provider="cpu")
    assert (again.explained, again.skipped) == (0, 6)


def test_explain_dataset_composes_with_ray_data(cluster, setup):
    from lrpgraph.ray import explain_dataset

    paths = sorted(str(p) for p in (setup / "photos").glob("*.png"))[:3]
    rows = explain_dataset(ray.data.from_items([{"path": p} for p in paths]), str(setup / "m.lrp.onnx"),
                           batch_size=2, provider="cpu").take_all()
    assert sorted(r["path"] for r in rows) == paths
    assert all(r["heatmap"].shape == (224, 224) and r["error"] == "" for r in rows)
    assert all(0 <= r["class"] < 1000 for r in rows)


def test_without_ray_the_flag_gives_one_clear_error(setup, tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from lrpgraph.cli import main; "
            f"raise SystemExit(main(['explain', {str(setup / 'm.lrp.onnx')!r}, {str(setup / 'photos')!r}, "
            f"'-o', {str(tmp_path)!r}, '--ray']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2 and "pip install 'lrpgraph[ray]'" in proc.stderr


def test_eval_on_ray_gives_the_local_table(cluster, tmp_path):
    from PIL import Image

    from export_resnet import build_model, export
    from lrpgraph.config import Preprocess
    from lrpgraph.evaluate import evaluate

    model, _ = build_model("resnet18", num_classes=10, seed=9)
    export(model, str(tmp_path / "m.onnx"), image_size=32)
    rng = np.random.default_rng(1)
    items = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        items.append((str(tmp_path / f"{i}.png"), i))
    kwargs = dict(protocols=("paper",), hq=(False,), pre=Preprocess(size=32, resize=36))
    methods = ["lrp-paper", "constant", "blob"]
    local = evaluate(str(tmp_path / "m.onnx"), items, methods, str(tmp_path / "a"), **kwargs)
    distributed = evaluate(str(tmp_path / "m.onnx"), items, methods, str(tmp_path / "b"), ray_address="",
                           workers=2, **kwargs)
    key = lambda r: (r["method"], r["protocol"])  # noqa: E731
    assert sorted(local, key=key) == sorted(distributed, key=key)
