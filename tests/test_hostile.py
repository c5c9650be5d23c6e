"""Reliability, second pass (issue 16): hand-made bad models, hostile folders, two runs at
once, killed runs. Each case is one clear error (exit 2) or a skip, never a silent wrong
explainer, a hang or a traceback."""

import fcntl
import json
import os
import stat
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from lrpgraph import LrpGraphError, UnsupportedOpsError
from lrpgraph.driver import build_explainer


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "lrpgraph", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def tiny(shape=("N", 3, 8, 8), dtype=T.FLOAT, head=None):
    """x -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> y (-> head)."""
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             nh.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fw")]
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("GlobalAveragePool", ["r"], ["p"]), h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("Gemm", ["f", "fw"], ["y"], transB=1)]
    out = "y"
    if head is not None:
        nodes.append(head)
        out = head.output[0]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", dtype, list(shape))],
                         [h.make_tensor_value_info(out, T.FLOAT, ["N", 5])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_an_if_reading_the_image_from_its_scope_is_refused_by_name():
    then = h.make_graph([h.make_node("Identity", ["r"], ["t"])], "then", [], [h.make_tensor_value_info("t", T.FLOAT, None)])
    other = h.make_graph([h.make_node("Neg", ["r"], ["o"])], "else", [], [h.make_tensor_value_info("o", T.FLOAT, None)])
    nodes = [h.make_node("Relu", ["x"], ["r"]), h.make_node("If", ["cond"], ["b"], then_branch=then, else_branch=other),
             h.make_node("Add", ["r", "b"], ["s"]), h.make_node("Flatten", ["s"], ["f"]),
             h.make_node("Gemm", ["f", "fw"], ["y"], transB=1)]
    inits = [nh.from_array(np.ones((5, 48), np.float32), "fw"), nh.from_array(np.array(True), "cond")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 4, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 5])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(UnsupportedOpsError) as caught:
        build_explainer(model)
    assert ("If_1", "If") in [(name, op) for name, op, _ in caught.value.problems]


def test_only_a_softmax_over_the_classes_is_a_probability_head():
    model, _ = build_explainer(tiny(head=h.make_node("Softmax", ["y"], ["probs"], axis=1)))
    assert {p.key: p.value for p in model.metadata_props}["lrpgraph.head"] == "softmax"
    with pytest.raises(UnsupportedOpsError, match="Softmax"):  # over the batch: not probabilities
        build_explainer(tiny(head=h.make_node("Softmax", ["y"], ["probs"], axis=0)))


@pytest.mark.parametrize("shape,message", [
    (("N", 3, 0, 16), "every dimension must be positive"),
    (("N", 3, -4, 16), "every dimension must be positive"),
    (("N", 3, 1000000, 1000000), "values per image"),
])
def test_impossible_input_shapes_are_refused(shape, message):
    with pytest.raises(LrpGraphError, match=message):
        build_explainer(tiny(shape))


@pytest.mark.parametrize("dtype,name", [(T.FLOAT16, "float16"), (T.DOUBLE, "double")])
def test_inputs_that_are_not_float32_are_refused(dtype, name):
    with pytest.raises(LrpGraphError, match=f"is {name}; lrpgraph builds from float32"):
        build_explainer(tiny(dtype=dtype))


def test_a_cyclic_graph_is_one_error(tmp_path):
    model = tiny()
    model.graph.node[1].input[0] = "f"  # Relu reads Flatten's output
    onnx.save(model, tmp_path / "cycle.onnx")
    done = cli("build", tmp_path / "cycle.onnx", "-o", tmp_path / "out.onnx")
    assert done.returncode == 2 and "acyclic" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("location", ["../secret.bin", ".", "missing.bin"])
def test_external_data_of_a_constant_node_is_checked_like_an_initializer(tmp_path, location):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.ones(20, np.float32).tobytes())
    model = tiny()
    value = nh.from_array(np.ones((5,), np.float32), "bias")
    value.data_location = T.EXTERNAL
    for key, v in (("location", location), ("offset", "0"), ("length", "20")):
        value.external_data.add(key=key, value=v)
    model.graph.node.insert(0, h.make_node("Constant", [], ["bias"], value=value))
    model.graph.node[-1].input.append("bias")
    with open(folder / "m.onnx", "wb") as fh:
        fh.write(model.SerializeToString())
    done = cli("build", folder / "m.onnx", "-o", tmp_path / "out.onnx")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert ("outside the model's folder" if location.startswith("..") else "missing or not a file") in done.stderr


def test_output_side_os_errors_are_one_line(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(tiny(), model)
    (tmp_path / "file").write_text("")
    for output in (tmp_path / "file" / "out.onnx", tmp_path):  # parent is a file; output is a folder
        done = cli("build", model, "-o", output)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_the_first_layers_ones_are_made_in_the_graph_not_stored():
    model = tiny(("N", 3, 1024, 1024))
    explainer, _ = build_explainer(model)
    # an image-sized float32 constant alone would be 12.6 MB
    assert explainer.ByteSize() < model.ByteSize() + 100_000


@pytest.fixture(scope="module")
def fixed_batch(tmp_path_factory):
    """A tiny classifier whose batch is fixed at 1, and its explainer."""
    folder = tmp_path_factory.mktemp("fixed")
    from lrpgraph.driver import build

    onnx.save(tiny((1, 3, 32, 32)), folder / "m.onnx")
    build(str(folder / "m.onnx"), str(folder / "m.lrp.onnx"))
    return folder / "m.lrp.onnx"


def test_a_model_with_batch_fixed_at_one_is_run_one_image_at_a_time(fixed_batch):
    from lrpgraph import Explainer

    ex = Explainer(str(fixed_batch), provider="cpu")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    together = ex.run(x, target=[1, -1, 4])
    for i, t in enumerate([1, -1, 4]):
        alone = ex.run(x[i:i + 1], target=[t])
        np.testing.assert_array_equal(together["relevance_map"][i], alone["relevance_map"][0])
    assert together["target_used"][0] == 1 and together["target_used"][2] == 4


def _photos(folder, n=3, size=40):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_folder_hazards(fixed_batch, tmp_path):
    photos = _photos(tmp_path / "in")
    os.mkfifo(photos / "pipe.png")  # would block forever if opened
    out = photos / "heatmaps"  # the output inside the input
    first = cli("explain", fixed_batch, photos, "-o", out, "--provider", "cpu", "--batch-size", "2", timeout=120)
    assert first.returncode == 1 and "not a regular file" in first.stderr
    assert "explained 3" in first.stdout, first.stdout + first.stderr
    (out / ".p0.png.abcd1234.tmp").write_text("left by a killed run")
    os.chmod(out / "p1.png", 0o600)
    again = cli("explain", fixed_batch, photos, "-o", out, "--provider", "cpu", "--overwrite", timeout=120)
    assert "explained 3" in again.stdout  # not its own heatmaps: the output folder is not an input
    assert not (out / ".p0.png.abcd1234.tmp").exists()
    assert stat.S_IMODE(os.stat(out / "p1.png").st_mode) == 0o600


def test_a_second_run_into_the_same_folder_is_refused(fixed_batch, tmp_path):
    photos = _photos(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lrpgraph.lock", "a+") as held:  # a run in progress
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        done = cli("explain", fixed_batch, photos, "-o", out, "--provider", "cpu")
    assert done.returncode == 2 and "another lrpgraph run is writing into" in done.stderr
    assert not (out / "results.jsonl").exists()
    after = cli("explain", fixed_batch, photos, "-o", out, "--provider", "cpu")
    assert after.returncode == 0 and len(open(out / "results.jsonl").readlines()) == 3


def test_images_over_the_pixel_limit_are_refused_each(fixed_batch, tmp_path):
    photos = _photos(tmp_path / "in", n=1, size=40)
    _photos(tmp_path / "in2", n=1, size=130).joinpath("p0.png").rename(photos / "big.png")
    # 130x130 = 16,900 pixels: between 1x and 2x a 10,000 limit, where Pillow only warns
    done = cli("explain", fixed_batch, photos, "-o", tmp_path / "out", "--provider", "cpu",
               "--max-pixels", "10000")
    assert done.returncode == 1 and "decompression bomb" in done.stderr and "explained 1" in done.stdout
    rows = [json.loads(line)["name"] for line in open(tmp_path / "out" / "results.jsonl")]
    assert rows == ["p0"]


def test_explain_into_a_file_is_one_line(fixed_batch, tmp_path):
    photos = _photos(tmp_path / "in", n=1)
    (tmp_path / "taken").write_text("a file, not a folder")
    done = cli("explain", fixed_batch, photos, "-o", tmp_path / "taken", "--provider", "cpu")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if "error" in line] == [done.stderr.strip().splitlines()[-1]]
    assert (tmp_path / "taken").read_text() == "a file, not a folder"
