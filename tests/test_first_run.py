"""What a new user meets in the first hour (issue 15): installs that explain, reruns that
never pass stale maps off as done, names that never collide, refusals that keep the user's
files, messages that say what to do, and pictures that show the relevance."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import PHOTOS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lrpgraph(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lrpgraph", *map(str, args)], capture_output=True,
                          text=True, env=env)


def source_model(effnet):
    return os.path.join(os.path.dirname(effnet[1]), "m.onnx")


def test_missing_pillow_is_one_message_naming_the_extra_and_nothing_is_written(effnet, photos, tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoPIL:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'PIL' or name.startswith('PIL.'):\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\")\n"
        "sys.meta_path.insert(0, _NoPIL())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    done = lrpgraph("explain", effnet[1], photos, "-o", out, "--provider", "cpu", env=env)
    assert done.returncode == 2, done.stderr
    assert "needs Pillow" in done.stderr and ".[cpu]" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
    checked = lrpgraph("check", effnet[1], photos / "coffee.jpg", env=env)
    assert checked.returncode == 2 and "needs Pillow" in checked.stderr and "Traceback" not in checked.stderr


def test_base_and_cpu_extra_bring_what_explaining_needs():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        extras = tomllib.load(fh)["project"]["optional-dependencies"]
    for extra in ("cpu", "gpu"):
        names = {d.split(">")[0].split("=")[0].split("[")[0].lower() for d in extras[extra]}
        assert {"pillow", "matplotlib"} <= names, extra


@pytest.mark.slow
def test_a_fresh_venv_with_the_cpu_extra_explains_a_photo(effnet, photos, tmp_path):
    """pip install 'lrpgraph[cpu]' (not editable, no torch) into a new venv, then explain."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                          f"{ROOT}[cpu]"], capture_output=True, text=True, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-2000:]
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    out = tmp_path / "out"
    done = subprocess.run([str(venv / "bin" / "lrpgraph"), "explain", effnet[1], photos / "coffee.jpg",
                           "-o", out, "--provider", "cpu"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "explained 1" in done.stdout
    row = json.loads(open(out / "results.jsonl").readline())
    assert row["class"] == PHOTOS["coffee"] and row["class_name"] == "espresso"
    assert all((out / f"coffee{s}").exists() for s in (".npy", ".png", "_overlay.png"))


def test_output_equal_to_the_model_is_refused_and_the_model_kept(effnet, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(open(source_model(effnet), "rb").read())
    before = model.read_bytes()
    (tmp_path / "link.onnx").symlink_to(model)
    for output in (model, tmp_path / "link.onnx"):
        done = lrpgraph("build", model, "-o", output)
        assert done.returncode == 2 and "is the model itself" in done.stderr, done.stderr
        assert model.read_bytes() == before


def test_rerun_with_other_settings_is_refused_not_reported_done(effnet, photos, tmp_path):
    out = tmp_path / "out"
    first = lrpgraph("explain", effnet[1], photos / "coffee.jpg", "-o", out, "--provider", "cpu")
    assert first.returncode == 0 and "explained 1" in first.stdout
    maps = np.load(out / "coffee.npy")
    other = lrpgraph("explain", effnet[1], photos / "coffee.jpg", "-o", out, "--provider", "cpu", "--target", 281)
    assert other.returncode == 2, other.stdout
    assert "other settings" in other.stderr and "target: None -> 281" in other.stderr
    np.testing.assert_array_equal(np.load(out / "coffee.npy"), maps)  # untouched
    hq = lrpgraph("explain", effnet[1], photos / "coffee.jpg", "-o", out, "--provider", "cpu", "--hq")
    assert hq.returncode == 2 and "hq: False -> True" in hq.stderr
    redo = lrpgraph("explain", effnet[1], photos / "coffee.jpg", "-o", out, "--provider", "cpu",
                    "--target", 281, "--overwrite")
    assert redo.returncode == 0 and "explained 1, skipped 0" in redo.stdout
    assert [json.loads(line)["target"] for line in open(out / "results.jsonl")] == [281]
    same = lrpgraph("explain", effnet[1], photos / "coffee.jpg", "-o", out, "--provider", "cpu", "--target", 281)
    assert "explained 0, skipped 1 already done" in same.stdout


def test_same_stem_inputs_get_distinct_outputs(effnet, photos, tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(photos / "chelsea.jpg").save(folder / "chelsea.jpg")
    Image.open(photos / "coffee.jpg").save(folder / "chelsea.png")
    out = tmp_path / "out"
    done = lrpgraph("explain", effnet[1], folder, "-o", out, "--provider", "cpu")
    assert "explained 2" in done.stdout, done.stderr
    rows = [json.loads(line) for line in open(out / "results.jsonl")]
    assert sorted(r["name"] for r in rows) == ["chelsea.jpg", "chelsea.png"]
    assert sorted(r["class"] for r in rows) == [PHOTOS["chelsea"], PHOTOS["coffee"]]
    assert (out / "chelsea.jpg.npy").exists() and (out / "chelsea.png.npy").exists()


def test_an_empty_folder_is_an_error(effnet, tmp_path):
    (tmp_path / "empty").mkdir()
    done = lrpgraph("explain", effnet[1], tmp_path / "empty", "-o", tmp_path / "out", "--provider", "cpu")
    assert done.returncode != 0 and "no images found under" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_eval_given_an_explainer_asks_for_the_classifier(effnet, photos, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{photos / 'coffee.jpg'},967\n")
    done = lrpgraph("eval", effnet[1], "--list", listing, "-o", tmp_path / "res", "--methods", "gradient")
    assert done.returncode == 2 and "give eval the original classifier" in done.stderr, done.stderr


def test_cuda_without_cuda_is_one_warning_line(effnet, photos, tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    done = lrpgraph("explain", effnet[1], photos / "coffee.jpg", "-o", tmp_path / "out", "--provider", "cuda")
    assert done.returncode == 0
    warning = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert len(warning) == 1 and warning[0].startswith("lrpgraph: warning: ") and ".[gpu]" in warning[0]
    assert "UserWarning" not in done.stderr


def test_unknown_flag_gets_the_subcommand_usage_and_a_suggestion(tmp_path):
    done = lrpgraph("build", tmp_path / "m.onnx", "--epss", "1e-5")
    assert done.returncode == 2
    assert "usage: lrpgraph build" in done.stderr and "did you mean --eps?" in done.stderr


def test_every_flag_says_what_it_does():
    from lrpgraph.cli import make_parser

    parser = make_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subs.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings}"
    text = {name: " ".join(sub.format_help().split()) for name, sub in subs.items()}
    assert "{paper}" in text["build"] and "default 1e-3" in text["check"]
    assert "synset" in text["eval"] and "per_image.jsonl" in text["eval"]


def test_one_method_name_means_one_thing_everywhere(effnet):
    from lrpgraph import preset
    from lrpgraph.cli import _config, make_parser
    from lrpgraph.config import METHOD_NAMES

    parser = make_parser()
    for name in METHOD_NAMES:
        built = _config(parser.parse_args(["build", "m.onnx", "--method", name]))
        assert built == preset(method=name)
    assert preset(method="lrp-winner") == preset(maxpool="winner", composite="paper")
    assert preset(method="lrp-paper") == preset(composite="paper")
    assert preset(method="lrp") == preset() and preset().composite == "auto"  # per graph
    assert preset(method="lrp-epsilon").start == "logit"  # captum's LRP starts from the logit


def _explained(effnet, photos, tmp_path, *flags, method_explainer=None):
    out = tmp_path / "out"
    done = lrpgraph("explain", method_explainer or effnet[1], photos / "chelsea.jpg", "-o", out,
                    "--provider", "cpu", *flags)
    assert done.returncode == 0, done.stderr
    return out


def test_lrp_maps_use_a_diverging_map_centred_at_zero(effnet, photos, tmp_path):
    from PIL import Image

    out = _explained(effnet, photos, tmp_path)
    heat = np.load(out / "chelsea.npy")
    picture = np.asarray(Image.open(out / "chelsea.png")).astype(int)
    from lrpgraph.heatmaps import robust_scale

    faint = np.abs(heat) < 0.03 * robust_scale(heat)
    assert faint.sum() > 100
    assert (picture[faint] >= 240).all()  # bwr is white at 0
    strong = heat > np.percentile(heat, 99.9)
    assert (picture[strong][:, 0] > 200).all() and (picture[strong][:, 2] < 60).all()  # red


def test_signed_maps_are_centred_at_zero_and_cams_sequential():
    from lrpgraph.heatmaps import Style, colourise

    heat = np.array([[-1.0, 0.0, 1.0, 0.5]])
    lrp = colourise(heat, Style.for_method("lrp")).astype(int)[0]
    assert (lrp[1] >= 250).all()  # 0 is white
    assert lrp[0][2] > 200 and lrp[0][0] < 60 and lrp[2][0] > 200 and lrp[2][2] < 60  # blue, red
    positive = colourise(np.array([[0.0, 1.0]]), Style.for_method("gradient")).astype(int)[0]
    assert (positive[0] >= 250).all()  # symmetric limits: a non-negative map starts at white
    cam = Style.for_method("gradcam")
    assert cam.cmap == "jet" and not cam.diverging
    assert Style.for_method("lrp", cmap="viridis").cmap == "viridis"


def test_the_overlay_shows_the_heat_clearly(effnet, photos, tmp_path):
    from PIL import Image

    from lrpgraph import Explainer
    from lrpgraph.preprocess import prepare

    out = _explained(effnet, photos, tmp_path)
    heat = np.load(out / "chelsea.npy")
    blend = np.asarray(Image.open(out / "chelsea_overlay.png")).astype(float)
    photo = prepare(str(photos / "chelsea.jpg"), Explainer(effnet[1], provider="cpu").preprocess)[1].astype(float)
    top = np.abs(heat) >= np.percentile(np.abs(heat), 99.5)
    # where relevance is highest the overlay is mostly colour: 0.7 of the way to it
    assert np.abs(blend[top] - photo[top]).mean() > 50
    from lrpgraph.heatmaps import robust_scale

    faint = np.abs(heat) < 0.03 * robust_scale(heat)
    assert faint.any() and np.abs(blend[faint] - photo[faint]).max() <= 6  # the photo where little is


def test_colorbar_sheet_and_full_image(effnet, photos, tmp_path):
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.open(photos / "stereo_motorcycle.jpg").resize((448, 150)).save(wide)
    out = tmp_path / "out"
    done = lrpgraph("explain", effnet[1], wide, photos / "chelsea.jpg", "-o", out, "--provider", "cpu",
                    "--colorbar", "--sheet", "--full-image")
    assert done.returncode == 0, done.stderr
    with_bar = Image.open(out / "wide.png")
    assert with_bar.size[0] > 224  # the colour bar sits beside the map
    sheet = Image.open(out / "sheet.png")
    assert sheet.size[1] > 2 * sheet.size[0] / 3 * 0.9  # two rows of three panels
    rows = {json.loads(line)["name"]: json.loads(line) for line in open(out / "results.jsonl")}
    assert rows["wide"]["region"].startswith("the whole image")
    assert np.load(out / "wide.npy").shape == (224, 224)
    # the padded bands above and below the wide photo are the mean colour: no relevance there
    photo = np.asarray(Image.open(out / "wide_overlay.png"))
    band = photo[:20].reshape(-1, 3).astype(int)
    assert (np.abs(band - np.round(255 * np.array([0.485, 0.456, 0.406]))) <= 2).all()
