"""The build driver: load → canonicalise → match → emit → validate → save.

Needs onnx, numpy and onnx-graphsurgeon only (no onnxruntime, no torch).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import __version__
from .atomic import atomic_path
from .config import Config, Preprocess
from .emit import Emitter, add_all, emit_relevance
from .errors import LrpGraphError
from . import scorecam
from .float16 import to_float16
from .load import canonicalise, default_opset, load_model
from .match import GraphFacts, assign_rules
from .rules import REGISTRIES

# The float16 pass starts from this much relevance per image (see build_explainer).
_HALF_START = 1024.0
# Above this the protobuf limit forces weights into an external data file.
_EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass
class BuildReport:
    source: str
    ops_before: Counter
    ops_after: Counter
    merges: dict  # kind -> count
    rules: list  # (node name, op, rule note)
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    outputs: list = field(default_factory=list)
    layout: str = "NCHW"


def _channel_axis(facts: GraphFacts) -> tuple[int, str]:
    """NCHW unless the image first goes through an NHWC→NCHW Transpose (TensorFlow)."""
    rank = len(facts.image.shape or [0, 0, 0, 0])
    consumers = list(facts.image.outputs)
    if len(consumers) == 1 and consumers[0].op == "Cast":  # the float16 explainer's input cast
        consumers = list(consumers[0].outputs[0].outputs)
    for consumer in consumers:
        if consumer.op == "Transpose" and list(consumer.attrs.get("perm", [])) == [0, 3, 1, 2]:
            return 3, "NHWC"
    return (1, "NCHW") if rank == 4 else (1, f"rank{rank}")


def _start_relevance(facts: GraphFacts, e: Emitter, config: Config, scores=None, repeat=None):
    """Relevance at the logits: the target's probability (or logit), 0 elsewhere.
    The target is the caller's, or the predicted class where none was fed (the ``given``
    placeholder becomes that choice in _optional_target); a negative entry also means
    "the predicted class"."""
    e.scope = "lrp/start"
    head, logits = facts.head, facts.logits
    if head.shape is None or len(head.shape) != 2 or not isinstance(head.shape[1], (int, np.integer)):
        raise LrpGraphError(
            f"output {head.name!r} has shape {head.shape}; lrpgraph needs class scores of "
            "shape N x classes with a known number of classes."
        )
    classes = int(head.shape[1])
    scores = head if scores is None else scores  # IG: the scores of the image itself
    predicted = e.op("ArgMax", [scores], {"axis": 1, "keepdims": 0}, hint="predicted")
    given = e.op("Identity", [predicted], hint="given")
    use_predicted = e.op("Less", [given, np.array(0, dtype=np.int64)], hint="no_target")
    chosen = e.op("Where", [use_predicted, predicted, given], hint="target")
    onehot = e.op("OneHot", [chosen, np.array(classes, dtype=np.int64),
                             np.array([0, 1], dtype=e.dtype)], {"axis": -1}, hint="onehot")
    if repeat:  # one row per path point of each image (IG)
        onehot = e.op("Tile", [e.op("Unsqueeze", [onehot, np.array([1], np.int64)]),
                               np.array([1, repeat, 1], np.int64)])
        onehot = e.op("Reshape", [onehot, np.array([-1, classes], np.int64)], hint="onehot_path")
    if config.rule_kind == "gradient":
        return onehot, chosen, given, onehot  # d(target logit)/d(logits)
    if config.start == "logit":
        value = logits
    elif head is not logits:
        value = head  # the model's own Softmax
    else:
        value = e.op("Softmax", [logits], {"axis": -1}, hint="probability")
    return e.op("Mul", [value, onehot], hint="relevance"), chosen, given, onehot


def _optional_target(graph: onnx.GraphProto, given: str) -> None:
    """Make ``target`` an optional input: the placeholder ``given = Identity(predicted)``
    becomes the fed int64[N] when there is one, else the predicted class. (An initializer
    default would do it too, but ORT warns about overridable initializers at every session
    start.)"""
    o = onnx.helper
    position, placeholder = next((i, n) for i, n in enumerate(graph.node) if given in n.output)
    predicted = placeholder.input[0]
    tensor = o.make_tensor_type_proto(onnx.TensorProto.INT64, ["N"])
    graph.input.append(o.make_value_info("target", o.make_optional_type_proto(tensor)))
    fed = o.make_graph([o.make_node("OptionalGetElement", ["target"], ["fed"])], "fed", [],
                       [o.make_tensor_value_info("fed", onnx.TensorProto.INT64, ["N"])])
    default = o.make_graph([o.make_node("Identity", [predicted], ["default"])], "default", [],
                           [o.make_tensor_value_info("default", onnx.TensorProto.INT64, ["N"])])
    nodes = [o.make_node("OptionalHasElement", ["target"], ["lrp/start/has_target"],
                         name="lrp/start/has_target"),
             o.make_node("If", ["lrp/start/has_target"], [given], name="lrp/start/given",
                         then_branch=fed, else_branch=default)]
    del graph.node[position]
    for node in reversed(nodes):
        graph.node.insert(position, node)


def _integration_path(graph: gs.Graph, config: Config):
    """Integrated Gradients: the model runs on the straight path from the baseline (0, as
    captum's default) to each image, at ``k/steps`` for k = 1..steps (right Riemann sum).
    The old image tensor becomes that N*steps batch; a new ``input`` feeds it."""
    image = graph.inputs[0]
    if image.shape is None or len(image.shape) < 2:
        raise LrpGraphError("Integrated Gradients needs an input of known rank")
    fed = gs.Variable(image.name, dtype=image.dtype, shape=image.shape)
    image.name = "lrp/ig/path_images"
    steps = config.ig_steps
    alphas = (np.arange(1, steps + 1, dtype=np.float32) / steps).reshape([1, steps] + [1] * (len(image.shape) - 1))
    expanded = gs.Variable("lrp/ig/expanded")
    scaled = gs.Variable("lrp/ig/scaled")
    graph.nodes += [
        gs.Node("Unsqueeze", "lrp/ig/expanded", inputs=[fed, gs.Constant("lrp/ig/axis", np.array([1], np.int64))],
                outputs=[expanded]),
        gs.Node("Mul", "lrp/ig/scaled", inputs=[expanded, gs.Constant("lrp/ig/alphas", alphas)], outputs=[scaled]),
        gs.Node("Reshape", "lrp/ig/path", inputs=[scaled, gs.Constant(
            "lrp/ig/path_shape", np.array([-1] + [d if isinstance(d, int) else -1 for d in image.shape[1:]], np.int64))],
            outputs=[image]),
    ]
    image.shape = ["N_path"] + list(image.shape[1:])
    graph.inputs = [fed]
    graph.toposort()
    return image


def _cam_layer(matches):
    """Grad-CAM's feature map: the input of the global pooling nearest the output (after
    its activation: hooked before ReLU6 the maps are all zero, SPEC.md section 4)."""
    for m in matches:
        if m.node.op in ("GlobalAveragePool", "ReduceMean", "AveragePool"):
            return m.node.inputs[0]
    raise LrpGraphError("Grad-CAM needs a global pooling layer before the classifier; none was found")


def _finish_method(e: Emitter, facts: GraphFacts, config: Config, signal, path, cam_layer):
    """From the signal at the image (or at the stop tensor) to the method's attribution.
    Returns (relevance N x C x H x W or None, Grad-CAM map N x H x W or None)."""
    e.scope = "lrp/method"
    method = config.method
    if method == "gradient":
        return e.op("Abs", [signal], hint="saliency"), None
    if method == "gradxinput":
        return e.op("Mul", [signal, facts.image], hint="grad_x_input"), None
    if method == "ig":
        shape = [-1, config.ig_steps] + [int(d) for d in facts.image.shape[1:]]
        per_path = e.op("Reshape", [signal, np.array(shape, np.int64)], hint="grads")
        mean = e.reduce("ReduceMean", per_path, [1], keepdims=False, hint="mean_grad")
        return e.op("Mul", [mean, facts.image], hint="ig"), None
    if method == "gradcam":
        weights = e.reduce("ReduceMean", signal, [2, 3], keepdims=True, hint="channel_weights")
        cam = e.op("Relu", [e.reduce("ReduceSum", e.op("Mul", [weights, cam_layer]), [1], keepdims=True)],
                   hint="cam")
        return None, _cam_to_image(e, facts, cam)
    return signal, None


def _cam_to_image(e: Emitter, facts: GraphFacts, cam):
    """N x 1 x h x w -> N x H x W, bilinear with half-pixel centres (cv2.resize's)."""
    height, width = [int(d) for d in facts.image.shape[2:4]]
    batch = e.op("Slice", [e.op("Shape", [cam]), np.array([0], np.int64), np.array([1], np.int64)], hint="batch")
    sizes = e.op("Concat", [batch, np.array([1, height, width], np.int64)], {"axis": 0}, hint="sizes")
    up = e.op("Resize", [cam, None, None, sizes], {"mode": "linear"}, hint="cam_up")
    return e.op("Reshape", [up, e.op("Concat", [batch, np.array([height, width], np.int64)], {"axis": 0})],
                hint="cam_map")


def _heat_quantize(e: Emitter, alpha, levels: int):
    """SPEC.md HQ: per image, e = linspace(min, max, L); [e_i, e_i+1) -> e_i; the maximum
    keeps its value. A constant map stays as it is."""
    e.scope = "lrp/hq"
    lo = e.reduce("ReduceMin", alpha, [1, 2], keepdims=True, hint="min")
    hi = e.reduce("ReduceMax", alpha, [1, 2], keepdims=True, hint="max")
    step = e.op("Div", [e.op("Sub", [hi, lo]), e.scalar(levels - 1)], hint="step")
    flat = e.op("Equal", [step, e.scalar(0.0)], hint="flat")
    safe = e.op("Where", [flat, e.scalar(1.0), step], hint="step_safe")
    index = e.op("Floor", [e.op("Div", [e.op("Sub", [alpha, lo]), safe])], hint="level")
    index = e.op("Min", [index, e.scalar(levels - 1)], hint="level_capped")
    quantized = e.op("Add", [lo, e.op("Mul", [index, step])], hint="quantized")
    is_max = e.op("Equal", [alpha, hi], hint="is_max")
    return e.op("Where", [is_max, hi, quantized], hint="relevance_map_hq")


def build_explainer(model: onnx.ModelProto | str | os.PathLike, config: Config = Config(),
                    preprocess: Preprocess | None = None,
                    output_name: str | None = None) -> tuple[onnx.ModelProto, BuildReport]:
    """Return the explainer model and a report of what matched. Writes nothing.
    ``output_name`` picks the class scores among several outputs (the others are dropped)."""
    t0 = time.perf_counter()
    source = "<model>"
    if not isinstance(model, onnx.ModelProto):
        source = os.fspath(model)
        model = load_model(source)
    ops_before = Counter(n.op_type for n in model.graph.node)
    model = canonicalise(model)
    if config.dtype == "float16":
        model = to_float16(model)
    opset = default_opset(model)
    canonical = model
    graph = gs.import_onnx(model)
    path = _integration_path(graph, config) if config.method == "ig" else None
    facts = GraphFacts.read(graph, output_name)
    matches = assign_rules(facts, REGISTRIES[config.rule_kind], config, stop=path)

    warnings = []
    if config.method == "lrp" and any(m.node.op == "Conv" for m in matches) and not any(
            m.node.op in ("BatchNormalization", "Sub", "Mul") for m in matches):
        warnings.append("no BatchNormalization on the relevance path: BN was folded into the "
                        "convs at export, so z+ uses the folded weights (SPEC.md section 1)")
    channel_axis, layout = _channel_axis(facts)

    half = config.dtype == "float16"
    e = Emitter(graph, opset, np.float16 if half else np.float32, config.eps)
    head_scores = None
    if path is not None:
        # The model ran on N x steps path images; its answer for image n is the last point.
        e.scope = "lrp/ig"
        classes = int(facts.head.shape[1])
        per_path = e.op("Reshape", [facts.head, np.array([-1, config.ig_steps, classes], np.int64)])
        head_scores = e.op("Gather", [per_path, np.array(config.ig_steps - 1, np.int64)], {"axis": 1},
                           hint="scores")
    start, chosen, given, onehot = _start_relevance(facts, e, config, head_scores,
                                                    config.ig_steps if path is not None else None)
    per_image = None
    if half:
        # LRP is linear in the start relevance: float16 runs the pass from a start of
        # _HALF_START per image, where relevance spread over ~10^6 activations stays in
        # float16's normal range, and the outputs are scaled back in float32.
        value = e.op("Cast", [e.reduce("ReduceSum", start, [1], keepdims=False)],
                     {"to": onnx.TensorProto.FLOAT}, hint="start_value")
        per_image = e.op("Div", [value, np.array(_HALF_START, np.float32)], hint="per_image")
        start_sum = value
        start = e.op("Mul", [onehot, e.scalar(_HALF_START)], hint="unit_start")
    probes = [] if config.conservation else None
    cam_layer = _cam_layer(matches) if config.method in ("gradcam", "scorecam") else None
    scan = None
    if config.method == "scorecam":  # forward only: no relevance pass
        if half:
            raise LrpGraphError("Score-CAM has no float16 explainer; build it in float32")
        chunks, all_logits, channels = scorecam.emit_masks(e, facts, cam_layer)
        scan = (canonical, facts.image.name, chunks.name, all_logits.name)
        relevance = None
        cam = _cam_to_image(e, facts, scorecam.weights_and_cam(e, facts, cam_layer, all_logits, channels, chosen))
    else:
        relevance = emit_relevance(facts, matches, e, start, config, probes,
                                   stop=path if path is not None else cam_layer)
        relevance, cam = _finish_method(e, facts, config, relevance, path, cam_layer)

    def float32(t, rank):
        """A relevance-valued tensor as float32, scaled back to the true start."""
        if per_image is None:
            return t
        t = e.op("Cast", [t], {"to": onnx.TensorProto.FLOAT})
        factor = e.op("Reshape", [per_image, np.array([-1] + [1] * (rank - 1), np.int64)])
        return e.op("Mul", [t, factor])

    image, head = facts.image, facts.head
    batch = (image.shape or ["N"])[0]
    spatial = [d for i, d in enumerate(image.shape[1:], start=1) if i != channel_axis]
    outputs = []

    def output(tensor, name, shape, dtype=np.float32):
        if tensor in outputs or tensor is image:
            tensor = e.op("Identity", [tensor], hint=name)
        tensor.name, tensor.dtype, tensor.shape = name, dtype, shape
        outputs.append(tensor)
        return tensor

    source_output = head.name
    e.scope = "lrp/output"
    if head_scores is not None:
        head = head_scores
    if half:
        head = e.op("Cast", [head], {"to": onnx.TensorProto.FLOAT})
    if head is not facts.head:
        facts.head.name += "/model"  # the output below takes its name
    output(head, "logits", list(facts.head.shape))
    if cam is not None:
        alpha = e.op("Cast", [cam], {"to": onnx.TensorProto.FLOAT}) if half else cam
    else:
        relevance = float32(relevance, len(image.shape))
        alpha = e.op("ReduceSum", [relevance, np.array([channel_axis], dtype=np.int64)],
                     {"keepdims": 0}, hint="map")
    output(alpha, "relevance_map", [batch] + spatial)
    output(chosen, "target_used", [batch], np.int64)
    if config.full_relevance and cam is None:
        output(relevance, "relevance", list(image.shape))
    if config.hq_levels:
        output(_heat_quantize(e, alpha, config.hq_levels), "relevance_map_hq", [batch] + spatial)
    if probes is not None:
        e.scope = "lrp/conservation"
        output(start_sum if half else e.per_sample_sum(start, 2), "relsum/start", [batch])
        for node, r_out, sent in probes:
            output(float32(e.per_sample_sum(r_out, len(node.outputs[0].shape)), 1),
                   f"relsum/{node.name}/out", [batch])
            r_in = [e.per_sample_sum(r, len(node.inputs[i].shape)) for i, r in sent.items()]
            output(float32(add_all(e, r_in), 1), f"relsum/{node.name}/in", [batch])
        output(e.per_sample_sum(relevance, len(image.shape)), "relsum/input", [batch])

    if image.name != "input" and "input" not in graph.tensors():
        image.name = "input"
    graph.inputs = [image]
    graph.outputs = outputs
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    if config.target_input:
        _optional_target(out.graph, given.name)
    if scan is not None:
        forward, image_name, chunks_name, logits_name = scan
        scorecam.insert_scan(out, forward, image_name, chunks_name, logits_name)
    meta = {
        "lrpgraph.version": __version__,
        "lrpgraph.config": config.to_json(),
        "lrpgraph.preprocess": (preprocess or Preprocess(layout=layout)).to_json(),
        "lrpgraph.source_output": source_output,
        "lrpgraph.layout": layout,
        "lrpgraph.head": "softmax" if facts.head is not facts.logits else "logits",
    }
    for key, value in meta.items():
        out.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    out.producer_name, out.producer_version = "lrpgraph", __version__
    try:
        onnx.checker.check_model(out, full_check=out.ByteSize() < _EXTERNAL_DATA_BYTES)
    except Exception as exc:
        raise LrpGraphError(f"internal error: the emitted explainer fails onnx.checker: {exc}") from exc

    kinds = Counter(facts.merges[m.node.name].kind for m in matches if m.node.name in facts.merges)
    report = BuildReport(
        source=source, ops_before=ops_before,
        ops_after=Counter(n.op_type for n in out.graph.node), merges=dict(kinds),
        rules=[(m.node.name, m.node.op, m.note) for m in matches], warnings=warnings,
        seconds=time.perf_counter() - t0, outputs=[o.name for o in out.graph.output],
        layout=layout,
    )
    return out, report


def inspect(model, config: Config = Config(), output_name=None):
    """What ``build`` would match, without emitting: (rules [(node, op, rule)], skip-merge
    kinds {kind: count}, unsupported [(node, op, reason)], layout)."""
    model = canonicalise(load_model(model) if not isinstance(model, onnx.ModelProto) else model)
    facts = GraphFacts.read(gs.import_onnx(model), output_name)
    problems = []
    matches = assign_rules(facts, REGISTRIES[config.rule_kind], config, problems=problems)
    kinds = Counter(facts.merges[m.node.name].kind for m in matches if m.node.name in facts.merges)
    return ([(m.node.name, m.node.op, m.note) for m in matches], dict(kinds), problems,
            _channel_axis(facts)[1])


def save_model(model: onnx.ModelProto, path: str | os.PathLike,
               external_above: int = _EXTERNAL_DATA_BYTES) -> None:
    """Atomically write ``model``; weights go to ``<name>.data`` beside it when the model is
    too large for one protobuf (``external_above`` bytes)."""
    path = os.fspath(path)
    if model.ByteSize() < external_above:
        with atomic_path(path) as tmp:
            onnx.save_model(model, tmp)
        return
    data_name = os.path.basename(path) + ".data"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # saving with external data rewrites the initializers it is given
    model = copy
    with atomic_path(os.path.join(os.path.dirname(os.path.abspath(path)), data_name)) as tmp_data:
        with atomic_path(path) as tmp:
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=os.path.basename(tmp_data))
            # The data file is renamed into place after the model; fix the location first.
            fixed = onnx.load(tmp, load_external_data=False)
            for t in fixed.graph.initializer:
                for entry in t.external_data:
                    if entry.key == "location":
                        entry.value = data_name
            onnx.save_model(fixed, tmp)


def build(model_path, output_path, config: Config = Config(), preprocess=None, output_name=None) -> BuildReport:
    model, report = build_explainer(model_path, config, preprocess, output_name)
    save_model(model, output_path)
    return report
