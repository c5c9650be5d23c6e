"""CNN families beyond ResNets, small-width versions of torchvision's own definitions
(seeded weights, BN statistics from train-mode passes, TorchScript export, opset 17):
each builds with its default composite and with the conserving one, its logits equal
PyTorch's, its relevance is finite, and the conserving composite keeps >= 0.9 of the start
relevance. The full-size table is tools/zoo.py's
(docs/COVERAGE.md); the rules themselves are checked against NumPy in tests/rules/."""

import numpy as np
import pytest
import torch
from torchvision.models import convnext, densenet, efficientnet, mobilenet_v3_small, shufflenetv2

from conftest import image_batch, rel_err, run

from lrpgraph import preset
from lrpgraph.driver import build_explainer, inspect

SIZE = 64


def _efficientnet():
    setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return efficientnet.EfficientNet(setting, 0.2, last_channel=last, num_classes=10)


FAMILIES = {  # name -> (the net, the composite `lrp` gives it, ops its graph must hold)
    "mobilenet_v3_small": (lambda: mobilenet_v3_small(width_mult=0.5, num_classes=10), "epsilon-plus-flat",
                           {"HardSwish", "HardSigmoid", "Mul"}),
    "efficientnet_b0": (_efficientnet, "epsilon-plus-flat", {"Sigmoid", "Mul"}),
    "densenet": (lambda: densenet.DenseNet(8, (2, 2), 16, num_classes=10), "paper", {"Concat"}),
    "convnext": (lambda: convnext.ConvNeXt([convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)],
                                           num_classes=10), "epsilon-plus-flat", {"LayerNormalization", "Erf", "Transpose"}),
    "shufflenet_v2": (lambda: shufflenetv2.ShuffleNetV2([2, 1, 1], [8, 16, 32, 64, 128], num_classes=10),
                      "epsilon-plus-flat",
                      {"Slice", "Transpose", "Reshape", "Shape"}),
}


def _seeded(make):
    torch.manual_seed(0)
    net = make()
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    net.train()
    with torch.no_grad():
        for seed in range(3):
            net(torch.from_numpy(image_batch(8, SIZE, seed=seed)))
    return net.eval()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    make, composite, ops = FAMILIES[request.param]
    net = _seeded(make)
    path = tmp_path_factory.mktemp("families") / f"{request.param}.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})
    return request.param, net, str(path), composite, ops


def test_family_builds_and_keeps_its_relevance(family):
    name, net, path, composite, ops = family
    import onnx

    assert ops <= {n.op_type for n in onnx.load(path).graph.node}, "the export no longer has the ops under test"
    assert inspect(path).composite == composite
    x = image_batch(3, SIZE, seed=9)
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).double()
    # the default (chosen by the composite search) runs; the conserving composite keeps
    # the start relevance (the default for depthwise graphs, epsilon-plus-flat, gives the
    # biases their share by design, so it is not held to conservation)
    for name in dict.fromkeys(["auto", "conserving" if composite != "paper" else "paper"]):
        explainer, _ = build_explainer(path, preset("paper", composite=name))
        out = run(explainer, {"input": x})
        assert rel_err(out["logits"], logits.numpy()) < 1e-5
        assert np.isfinite(out["relevance_map"]).all() and np.abs(out["relevance_map"]).max() > 0
    p = torch.softmax(logits, 1).numpy()[np.arange(3), out["target_used"]]
    kept = out["relevance_map"].sum((1, 2)) / p
    assert (kept >= 0.9).all() and (kept <= 1.0 + 1e-4).all(), kept


def test_conserving_keeps_what_the_paper_rules_lose_at_depthwise_convs():
    net = _seeded(FAMILIES["mobilenet_v3_small"][0])
    x = image_batch(2, SIZE, seed=3)
    with torch.no_grad():
        p = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
    kept = {}
    for composite in ("paper", "conserving"):
        import io
        buf = io.BytesIO()
        torch.onnx.export(net, (torch.from_numpy(x),), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
        import onnx
        explainer, _ = build_explainer(onnx.load_from_string(buf.getvalue()), preset("paper", composite=composite))
        out = run(explainer, {"input": x})
        kept[composite] = out["relevance_map"].sum((1, 2)) / p[np.arange(2), out["target_used"]]
    assert (kept["conserving"] >= 0.9).all()
    assert (kept["paper"] < kept["conserving"] - 0.05).all(), kept
