import os
import sys

import numpy as np
import pytest

from lrpgraph.session import predicted_targets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools"), os.path.join(ROOT, "tests")]

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


def image_batch(n, size=224, seed=1):
    """Normalised photos-like inputs: uniform pixels in [0, 1], ImageNet mean/std."""
    x = np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)
    return ((x - MEAN) / STD).astype(np.float32)


def rel_err(got, ref):
    """max |got - ref| / max |ref|: how every explainer output is held to its oracle."""
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def session(model):
    from lrpgraph.cpu_layout import cpu_session

    data = model if isinstance(model, (str, bytes, os.PathLike)) else model.SerializeToString()
    return cpu_session(data)  # the layout pass users' CPU sessions get


def exact_session(model):
    """ORT without its layout transformations (NCHWc with BN folded into the convs): they
    round pre-activations differently, and a ReLU whose input lies within that rounding of
    0 (2.5e-7 on seeded ResNet18) flips its gradient mask; gradients are discontinuous
    there, so an oracle comparison of the graph's maths runs on the plain layout."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    data = model if isinstance(model, (str, bytes, os.PathLike)) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def run(model, feeds, names=None, exact=False):
    sess = exact_session(model) if exact else session(model)
    names = names or [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, predicted_targets(sess, feeds))))


@pytest.fixture(scope="session")
def resnets(tmp_path_factory):
    """Seeded ResNet18 and ResNet50 (torch modules and their ONNX exports, BN as nodes)."""
    from export_resnet import build_model, export

    folder = tmp_path_factory.mktemp("resnets")
    out = {}
    for arch in ("resnet18", "resnet50"):
        model, _ = build_model(arch, seed=0)
        path = str(folder / f"{arch}.onnx")
        export(model, path)
        out[arch] = (model, path)
    return out


# scikit-image's bundled photos and their ImageNet classes under EfficientNet-Lite0
PHOTOS = {"chelsea": 285, "coffee": 967, "stereo_motorcycle": 665, "rocket": 657}


@pytest.fixture(scope="session")
def effnet(tmp_path_factory):
    pytest.importorskip("efficientnet_lite_pytorch")
    from export_efficientnet import export, load_model
    from lrpgraph import preset
    from lrpgraph.driver import build

    folder = tmp_path_factory.mktemp("effnet")
    export(str(folder / "m.onnx"))
    # the paper's rules, which these tests were written for; test_families covers conserving
    build(str(folder / "m.onnx"), str(folder / "m.lrp.onnx"), preset(method="lrp-paper"))
    return load_model(), str(folder / "m.lrp.onnx")


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        Image.fromarray(getattr(data, name)() if name != "stereo_motorcycle" else data.stereo_motorcycle()[0]
                        ).save(folder / f"{name}.jpg", quality=95)
    return folder
