"""int8 QDQ models explained as deployed (rules/qdq.py, tools/quantize.py): seeded ResNet18
and the real EfficientNet-Lite0, quantized by onnxruntime's quantize_static with calibration
on real photos. The explainer's logits are the QDQ model's; its maps stay close to the float
model's explainer (the same target), which is what a user comparing the two would see."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from scipy.stats import spearmanr

from conftest import run
from lrpgraph import preset
from lrpgraph.check import check
from lrpgraph.config import Preprocess
from lrpgraph.driver import build_explainer, inspect, save_model
from lrpgraph.preprocess import prepare
from quantize import SAMPLE, quantize

PHOTOS = sorted(SAMPLE.glob("*.JPEG"))


@pytest.fixture(scope="module")
def quantized(resnets, effnet, tmp_path_factory):
    """{name: (float model, QDQ model)}: calibrated on 8 photos, explained on 6 others."""
    folder = tmp_path_factory.mktemp("qdq")
    out = {}
    lite0 = effnet[1].replace(".lrp.onnx", ".onnx")
    for name, model in (("resnet18", resnets["resnet18"][1]), ("lite0", lite0)):
        quantize(model, str(folder / f"{name}.qdq.onnx"), PHOTOS[:8], Preprocess())
        out[name] = (model, str(folder / f"{name}.qdq.onnx"))
    return out


def photos(n=6):
    return np.stack([prepare(p, Preprocess())[0] for p in PHOTOS[100::100][:n]])


@pytest.mark.parametrize("name", ["resnet18", "lite0"])
def test_quantized_model_builds_runs_and_follows_the_float_model(quantized, name):
    model, qdq = quantized[name]
    report = inspect(qdq)
    assert not report[2] and report.quantized and report.quantized["recovered_relus"]
    explainer, _ = build_explainer(qdq, preset(method="lrp"))
    x = photos()
    out = run(explainer, {"input": x})
    deployed = ort.InferenceSession(qdq, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_array_equal(out["logits"], deployed)  # the quantized model itself
    r = out["relevance_map"]
    assert np.isfinite(r).all()
    floated, _ = build_explainer(model, preset(method="lrp"))
    ref = run(floated, {"input": x, "target": out["target_used"]})["relevance_map"]
    rho = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(r, ref)]
    # measured on these 6 photos: ResNet18 (seeded) 0.9999, Lite0 0.991-0.998 (docs/QUANTIZED.md:
    # 40 photos); 0.9 leaves room for other calibration photos, not for a rule that breaks the map
    assert min(rho) > 0.9, rho


def test_check_sees_every_rule_conserve_on_the_quantized_resnet(quantized, tmp_path):
    _, qdq = quantized["resnet18"]
    report = check(qdq, PHOTOS[200:202])
    assert report.ok, report.failures
    assert report.layers and all(layer.error < 1e-3 or layer.expected_loss for layer in report.layers)


def test_quantized_explainer_saves_and_the_inspect_cli_says_quantized(quantized, tmp_path):
    import subprocess
    import sys

    _, qdq = quantized["resnet18"]
    explainer, _ = build_explainer(qdq)
    save_model(explainer, tmp_path / "q.lrp.onnx")
    saved = onnx.load(str(tmp_path / "q.lrp.onnx"))
    onnx.checker.check_model(saved)
    assert sum(n.op_type == "QuantizeLinear" for n in saved.graph.node) >= 20  # the forward stays int8
    done = subprocess.run([sys.executable, "-m", "lrpgraph", "inspect", qdq], capture_output=True, text=True)
    assert done.returncode == 0 and "quantized (QDQ)" in done.stdout and "Relus recovered" in done.stdout
