"""Bad models, bad images, the check command, and a soak run."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from conftest import image_batch, run
from lrpgraph import LrpGraphError, UnsupportedOpsError, preset
from lrpgraph.driver import build_explainer, save_model

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lrpgraph", *map(str, args)], capture_output=True, text=True)


# -- check ----------------------------------------------------------------------------------

def test_check_passes_on_resnet18_and_fails_below_its_tolerance(resnets, tmp_path):
    _, path = resnets["resnet18"]
    ok = cli("check", path, "--random", "2", "--maxpool", "winner")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "check: ok" in ok.stdout and "/conv1/Conv" in ok.stdout
    strict = cli("check", path, "--random", "2", "--tol", "1e-12")
    assert strict.returncode == 1 and "above tolerance" in strict.stdout
    plain = tmp_path / "plain.lrp.onnx"
    save_model(build_explainer(path)[0], plain)
    refused = cli("check", plain)
    assert refused.returncode == 2 and "--conservation" in refused.stderr


def test_check_reports_the_paper_maxpool_loss_as_expected(resnets):
    from lrpgraph.check import check

    report = check(resnets["resnet18"][1], random=2)
    (pool,) = [l for l in report.layers if l.op == "MaxPool"]
    assert pool.expected_loss and pool.error > 1e-3
    assert report.ok


# -- bad models -----------------------------------------------------------------------------

def test_truncated_model(resnets, tmp_path):
    data = open(resnets["resnet18"][1], "rb").read()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 3])
    proc = cli("build", cut, "-o", tmp_path / "out.onnx")
    assert proc.returncode == 2 and "truncated" in proc.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_graph_without_skip_merges_is_plain_lrp():
    explainer, report = build_explainer(os.path.join(LIGHT, "light_vgg19.onnx"), preset("paper", maxpool="winner", conservation=True))
    assert report.merges == {}
    shape = [d.dim_value for d in explainer.graph.input[0].type.tensor_type.shape.dim]
    out = run(explainer, {"input": image_batch(shape[0], shape[2])})
    assert np.isfinite(out["relevance_map"]).all()
    assert out["relevance_map"].shape == (shape[0], shape[2], shape[3])


def _two_output_model():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 4, 4] x) => (float[N, 48] y, float[N, 48] z) {
        y = Flatten (x)
        z = Relu (y)
    }""")
    return model


def test_two_outputs_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "two.onnx"
    onnx.save(_two_output_model(), path)
    proc = cli("build", path)
    assert proc.returncode == 2 and "2 outputs" in proc.stderr and "--output-name" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.onnx"]
    chosen = cli("build", path, "--output-name", "z", "-o", tmp_path / "z.lrp.onnx")
    assert chosen.returncode == 0, chosen.stderr
    out = run(str(tmp_path / "z.lrp.onnx"), {"input": np.ones((1, 3, 4, 4), np.float32)})
    assert out["logits"].shape == (1, 48) and np.isfinite(out["relevance_map"]).all()


def test_external_data_loads_and_escaping_paths_are_refused(resnets, tmp_path):
    model = onnx.load(resnets["resnet18"][1])
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(model, folder / "ext.onnx", save_as_external_data=True, location="ext.data",
              size_threshold=0)
    explainer, _ = build_explainer(str(folder / "ext.onnx"))
    x = image_batch(1, seed=30)
    reference = run(build_explainer(resnets["resnet18"][1])[0], {"input": x})["relevance_map"]
    np.testing.assert_array_equal(run(explainer, {"input": x})["relevance_map"], reference)

    evil = onnx.load(folder / "ext.onnx", load_external_data=False)
    for t in evil.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../outside.data"
    onnx.save(evil, folder / "evil.onnx")
    (tmp_path / "outside.data").write_bytes((folder / "ext.data").read_bytes())
    with pytest.raises(LrpGraphError, match="outside the model's folder"):
        build_explainer(str(folder / "evil.onnx"))


def test_symbolic_spatial_dims_get_one_clear_error(tmp_path):
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, H, W] x) => (float[N, 4] y) <float[4, 3, 3, 3] w> {
        c = Conv <pads = [1, 1, 1, 1]> (x, w)
        p = GlobalAveragePool (c)
        y = Flatten (p)
    }""")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"))
    with pytest.raises(UnsupportedOpsError, match="must be known"):
        build_explainer(model)


def test_custom_domain_ops_are_never_run(tmp_path):
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17, "com.evil" : 1]>
    g (float[N, 3, 4, 4] x) => (float[N, 48] y) {
        h = com.evil.Payload (x)
        y = Flatten (h)
    }""")
    with pytest.raises(UnsupportedOpsError, match="Payload"):
        build_explainer(model)


# -- bad images -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_explainer(tmp_path_factory):
    from export_resnet import build_model, export

    folder = tmp_path_factory.mktemp("small")
    model, _ = build_model("resnet18", seed=4)
    export(model, str(folder / "m.onnx"))
    save_model(build_explainer(str(folder / "m.onnx"))[0], folder / "m.lrp.onnx")
    return str(folder / "m.lrp.onnx")


def test_image_modes_are_converted(small_explainer, tmp_path):
    from PIL import Image

    from lrpgraph import Explainer

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    files = {"gray.png": rgb.convert("L"), "cmyk.jpg": rgb.convert("CMYK"), "rgba.png": rgb.convert("RGBA"),
             "palette.png": rgb.convert("P")}
    for name, im in files.items():
        im.save(tmp_path / name)
    sixteen = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    ex = Explainer(small_explainer, provider="cpu")
    result = ex.explain([str(tmp_path / n) for n in list(files) + ["deep.png"]])
    assert result.heatmaps.shape == (5, 224, 224) and np.isfinite(result.heatmaps).all()
    # 16-bit gray scaled to 8 bits is the same picture as the 8-bit gray
    np.testing.assert_allclose(result.heatmaps[4], result.heatmaps[0], rtol=1e-4,
                               atol=1e-5 * np.abs(result.heatmaps[0]).max())


def test_exif_rotation_is_applied(small_explainer, tmp_path):
    from PIL import Image

    from lrpgraph import Explainer

    rng = np.random.default_rng(1)
    upright = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    upright.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored rotated the other way
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    upright.save(tmp_path / "upright.jpg", quality=100)
    ex = Explainer(small_explainer, provider="cpu")
    r = ex.explain([str(tmp_path / "upright.jpg"), str(tmp_path / "rotated.jpg")])
    corr = np.corrcoef(r.heatmaps[0].ravel(), r.heatmaps[1].ravel())[0, 1]
    assert corr > 0.9  # same picture up to JPEG loss


def test_huge_image_is_explained(small_explainer, tmp_path):
    from PIL import Image

    from lrpgraph import Explainer

    Image.new("RGB", (10000, 10000), (120, 80, 40)).save(tmp_path / "huge.png")
    result = Explainer(small_explainer, provider="cpu").explain([str(tmp_path / "huge.png")])
    assert result.heatmaps.shape == (1, 224, 224) and np.isfinite(result.heatmaps).all()


def test_tiny_and_wrong_inputs_get_clear_errors(small_explainer):
    from lrpgraph import Explainer

    ex = Explainer(small_explainer, provider="cpu")
    with pytest.raises(LrpGraphError, match="too small"):
        ex.explain([np.zeros((1, 1, 3), np.uint8)])
    with pytest.raises(LrpGraphError, match="the model takes"):
        ex.run(np.zeros((3, 224, 224), np.float32))
    with pytest.raises(LrpGraphError, match="out of range"):
        ex.run(image_batch(1), target=[1000])


# -- soak -----------------------------------------------------------------------------------

def test_soak_2000_explanations_with_stable_memory(tmp_path):
    """2 000 explanations through the Python API in one process: RSS must not grow."""
    import resource

    from export_resnet import build_model, export
    from lrpgraph import Explainer

    model, _ = build_model("resnet18", num_classes=10, seed=6)
    export(model, str(tmp_path / "s.onnx"), image_size=32)
    save_model(build_explainer(str(tmp_path / "s.onnx"), preset("paper", maxpool="winner"))[0],
               tmp_path / "s.lrp.onnx")
    ex = Explainer(str(tmp_path / "s.lrp.onnx"), provider="cpu")
    x = image_batch(20, size=32, seed=7)

    def rss_mb():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    for _ in range(10):  # warm up ORT's arenas
        ex.explain(x)
    start = rss_mb()
    for _ in range(100):
        result = ex.explain(x)
    end = rss_mb()
    assert len(result.heatmaps) == 20 and np.isfinite(result.heatmaps).all()
    print(f"soak: 2000 explanations, RSS {start:.1f} MB -> {end:.1f} MB, "
          f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    assert end - start < 25


def test_large_explainers_are_saved_with_external_data(resnets, tmp_path):
    explainer, _ = build_explainer(resnets["resnet18"][1])
    save_model(explainer, tmp_path / "big.lrp.onnx", external_above=1_000_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.lrp.onnx", "big.lrp.onnx.data"]
    assert os.path.getsize(tmp_path / "big.lrp.onnx") < 1_000_000
    x = image_batch(1, seed=31)
    np.testing.assert_array_equal(run(str(tmp_path / "big.lrp.onnx"), {"input": x})["relevance_map"],
                                  run(explainer, {"input": x})["relevance_map"])
