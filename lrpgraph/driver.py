"""The build driver: load → canonicalise → match → emit → validate → save.

build_explainer reads as the pipeline: the method (methods.py) prepares the graph and names
its composite, match.py gives every node on the relevance path its rule, the method runs
its pass from the start relevance (start.py), outputs.py assembles the outputs, and the
model is exported, annotated and checked.

Needs onnx, numpy and onnx-graphsurgeon only (no onnxruntime, no torch).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import __version__
from .atomic import atomic_path
from .config import Config, Preprocess
from .emit import Emitter
from .errors import LrpGraphError
from .float16 import half_start, to_float16
from .load import canonicalise, default_opset, load_model
from .match import GraphFacts, assign_rules, layout
from .methods import Pass
from .methods import method as get_method
from .outputs import assemble
from .rules import qdq
from .start import start_relevance, target_input

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


def _folded_bn_warning(method, matches) -> list:
    roles = {m.rule.role for m in matches}
    if method.name == "lrp" and "conv" in roles and "norm" not in roles:
        return ["no BatchNormalization on the relevance path: BN was folded into the convs at "
                "export, so z+ uses the folded weights (SPEC.md section 1)"]
    return []


def build_explainer(model: onnx.ModelProto | str | os.PathLike, config: Config = Config(),
                    preprocess: Preprocess | None = None,
                    output_name: str | None = None,
                    size: tuple[int, int] | None = None) -> tuple[onnx.ModelProto, BuildReport]:
    """Return the explainer model and a report of what matched. Writes nothing.
    ``output_name`` picks the class scores among several outputs (the others are dropped);
    ``size`` (H, W) fixes an image size the file leaves symbolic."""
    t0 = time.perf_counter()
    method = get_method(config.method)
    half = config.dtype == "float16"
    if half and not method.half_precision:
        raise LrpGraphError(f"{method.name} has no float16 explainer; build it in float32")
    source, forward, ops_before = _forward_model(model, half, size)
    graph = gs.import_onnx(forward)
    prepared = method.prepare(graph, config)
    facts = GraphFacts.read(graph, output_name)
    source_output = facts.head.name  # outputs.py renames the head
    composite = method.composite(config, facts, preprocess)
    matches = assign_rules(facts, composite, stop=prepared)
    channel_axis, layout_name = layout(facts)

    e = Emitter(graph, default_opset(forward), np.float16 if half else np.float32,
                map_only=not config.full_relevance)
    e.targets, e.batch = config.targets or 1, (facts.image.shape or ["N"])[0]
    ctx = Pass(e, facts, matches, config, prepared)
    scores = method.scores(ctx)
    kind = "gradient" if method.start == "gradient" else config.start
    ctx.start = start_relevance(e, facts, kind, scores, method.repeat(config), config.targets)
    start_sum = per_image = None
    if half:
        ctx.start, start_sum, per_image = half_start(e, ctx.start)
    attribution = method.attribute(ctx)
    outputs = assemble(e, facts, config, ctx.start, attribution, channel_axis, scores, per_image, start_sum)
    out = _export(graph, outputs, forward, config, ctx.start)
    method.finalise(out, forward, ctx)
    # the layout is the model's, whatever preprocessing was asked for
    preprocess = replace(preprocess, layout=layout_name) if preprocess else \
        default_preprocess(facts.image.shape, channel_axis, layout_name)
    _record(out, config, preprocess, facts, source_output,
            layout_name, composite, matches)
    _check(out)
    kinds = Counter(facts.merges[m.node.name].kind for m in matches if m.node.name in facts.merges)
    report = BuildReport(
        source=source, ops_before=ops_before,
        ops_after=Counter(n.op_type for n in out.graph.node), merges=dict(kinds),
        rules=[(m.node.name, m.node.op, m.note) for m in matches],
        warnings=_folded_bn_warning(method, matches), seconds=time.perf_counter() - t0,
        outputs=[o.name for o in out.graph.output], layout=layout_name,
    )
    return out, report


def default_preprocess(shape, channel_axis: int, layout_name: str) -> Preprocess:
    """ImageNet's preprocessing, at the model's own square input size where it has one
    (the crop, and the short side in ImageNet's 256/224 proportion)."""
    spatial = [d for i, d in enumerate(shape or [], start=0) if i not in (0, channel_axis)]
    if len(spatial) == 2 and spatial[0] == spatial[1] and isinstance(spatial[0], int):
        return Preprocess(size=spatial[0], resize=round(spatial[0] * 256 / 224), layout=layout_name)
    return Preprocess(layout=layout_name)


def _forward_model(model, half: bool, size=None):
    """(where it came from, the canonical forward model, its op counts as given). A model
    read here is freed as soon as its canonical copy exists (a ResNet50 is 100 MB)."""
    source = "<model>" if isinstance(model, onnx.ModelProto) else os.fspath(model)
    if not isinstance(model, onnx.ModelProto):
        model = load_model(source)
    ops_before = Counter(n.op_type for n in model.graph.node)
    forward = canonicalise(model, size=size)
    if half and any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in forward.graph.node):
        raise LrpGraphError(f"{source}: an int8 (QDQ) model; its explainer runs the relevance pass in float32 "
                            "on the dequantized tensors: build it without --dtype float16")
    return source, to_float16(forward) if half else forward, ops_before


def _export(graph, outputs, forward, config, start) -> onnx.ModelProto:
    """The graph with the image as its one input (named ``input``) and ``outputs``, dead
    nodes removed, the forward model's IR version and opsets; ``target`` an input."""
    image = graph.inputs[0]
    if image.name != "input" and "input" not in graph.tensors():
        image.name = "input"
    graph.outputs = outputs
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    del out.opset_import[:]
    out.opset_import.extend(forward.opset_import)
    # the oldest IR version the opsets allow: a model saved by the newest onnx (IR 13)
    # is refused by runtimes a release behind (onnxruntime-web 1.30 reads up to IR 11)
    lowest = onnx.helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True)
    out.ir_version = min(forward.ir_version, max(lowest, 8))
    if config.target_input and config.targets is None:
        target_input(out.graph, start.given.name)
    elif config.target_input:
        target_input(out.graph, start.given.name, "targets", ("N", config.targets))
    return out


def _record(out, config, preprocess, facts, source_output, layout_name, composite, matches) -> None:
    """What explain and check read back: the settings, the preprocessing, the head, and
    which nodes' rules absorb relevance by design (and why)."""
    absorbing = {m.node.name: why for m in matches if (why := m.rule.absorption(m.node, facts))}
    meta = {
        "lrpgraph.version": __version__,
        "lrpgraph.config": config.to_json(),
        "lrpgraph.preprocess": preprocess.to_json(),
        "lrpgraph.source_output": source_output,
        "lrpgraph.layout": layout_name,
        "lrpgraph.head": "softmax" if facts.head is not facts.logits else "logits",
        "lrpgraph.composite": composite.name,
        "lrpgraph.absorbs": json.dumps(absorbing, sort_keys=True),
    }
    for key, value in meta.items():
        out.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    out.producer_name, out.producer_version = "lrpgraph", __version__


def _check(out) -> None:
    try:
        onnx.checker.check_model(out, full_check=out.ByteSize() < _EXTERNAL_DATA_BYTES)
    except Exception as exc:
        raise LrpGraphError(f"internal error: the emitted explainer fails onnx.checker: {exc}") from exc


class InspectReport(tuple):
    """(rules [(node, op, rule)], skip-merge kinds {kind: count}, unsupported [(node, op,
    reason)], layout), unpackable as before, ``composite``: the rule set's name, and
    ``quantized``: a QDQ model's Q/DQ counts and recovered Relus (rules/qdq.py), or None."""

    def __new__(cls, rules, merges, problems, layout_name, composite, quantized=None):
        report = super().__new__(cls, (rules, merges, problems, layout_name))
        report.composite, report.quantized = composite, quantized
        return report


def inspect(model, config: Config = Config(), output_name=None, size=None):
    """What ``build`` would match, without emitting (an :class:`InspectReport`)."""
    model = canonicalise(load_model(model) if not isinstance(model, onnx.ModelProto) else model,
                         size=size)
    facts = GraphFacts.read(gs.import_onnx(model), output_name)
    problems = []
    composite = get_method(config.method).composite(config, facts)
    matches = assign_rules(facts, composite, problems=problems)
    kinds = Counter(facts.merges[m.node.name].kind for m in matches if m.node.name in facts.merges)
    return (InspectReport([(m.node.name, m.node.op, m.note) for m in matches], dict(kinds), problems,
                          layout(facts)[1], composite.name, qdq.quantization(facts)))


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


def check_output_path(model_path, output_path) -> None:
    """Refuse to write the explainer over the model it is built from (also via a link)."""
    if isinstance(model_path, onnx.ModelProto) or not os.path.exists(output_path):
        return
    if os.path.samefile(model_path, output_path):
        raise LrpGraphError(f"-o {output_path} is the model itself ({model_path}): the explainer would "
                            "replace it. Give another output path (default: MODEL.lrp.onnx)")


def build(model_path, output_path, config: Config = Config(), preprocess=None, output_name=None,
          size=None) -> BuildReport:
    check_output_path(model_path, output_path)
    model, report = build_explainer(model_path, config, preprocess, output_name, size)
    save_model(model, output_path)
    return report
