"""Load an ONNX classifier and bring it to the one form the matcher expects.

canonicalise: opset >= 17 (ops the relevance graph needs: ScatterElements with
reduction=add, ReduceSum with axes as input), initializers no longer listed as graph
inputs (IR < 4 style, so nothing but the image can be overridden), the image size given
where asked, shape arithmetic folded (fold.py), ``Sum`` of two inputs as ``Add``, every
node named, shapes inferred.
"""

from __future__ import annotations

import os

import onnx
from onnx import shape_inference, version_converter

from .errors import LrpGraphError
from .fold import check_static_image, computes_shapes, fold_shapes, set_size

MIN_OPSET = 17
# Ops whose output is not a function of their inputs: never constant, even on constants.
RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                        "RandomUniformLike", "Multinomial", "Bernoulli"})
# opset 17 needs IR 8; keep what a newer model already declares.
MIN_IR_VERSION = 8


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LrpGraphError(f"{path}: no such file. Give the path of an .onnx model.")
    if os.path.isdir(path):
        raise LrpGraphError(f"{path}: is a folder. Give the path of an .onnx model file.")
    try:
        # External data stays unloaded until it is checked to live beside the model.
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise LrpGraphError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc}). "
            "The file may be truncated or not ONNX at all; re-export it."
        ) from None
    if len(model.graph.node) == 0:
        raise LrpGraphError(f"{path}: the ONNX graph has no nodes; re-export the model.")
    _load_external_data(model, os.path.dirname(os.path.abspath(path)), path)
    return model


def _tensors(graph: onnx.GraphProto):
    """Every tensor a graph holds: initializers and node attributes (Constant's value),
    subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else []) + list(attr.graphs):
                yield from _tensors(sub)


def _load_external_data(model: onnx.ModelProto, base_dir: str, path: str) -> None:
    """Read external data only from regular files inside the model's folder."""
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    base_real = os.path.realpath(base_dir)
    for tensor in _tensors(model.graph):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = os.path.realpath(os.path.join(base_dir, location))
        if os.path.commonpath([base_real, target]) != base_real:
            raise LrpGraphError(
                f"{path}: tensor {tensor.name!r} points at external data {location!r} "
                "outside the model's folder; refusing to read it. Move the data file next to "
                "the model and fix its location."
            )
        if not os.path.isfile(target):
            raise LrpGraphError(
                f"{path}: tensor {tensor.name!r} needs external data file {location!r}, which is "
                "missing or not a file. Copy it next to the model."
            )
        try:
            load_external_data_for_tensor(tensor, base_dir)
        except Exception as exc:
            raise LrpGraphError(f"{path}: external data of {tensor.name!r} in {location!r} cannot be "
                                f"read ({type(exc).__name__}: {exc}); re-export the model") from None
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise LrpGraphError("the model imports no default ONNX opset; it is not a standard ONNX model.")


# One image larger than this is no photo (and numpy, ORT or protobuf would fail on it).
MAX_IMAGE_ELEMENTS = 1 << 31


def _check_input(graph: onnx.GraphProto) -> None:
    """The image input is float32 with positive static dimensions (the batch may be
    symbolic) and of a sane size; other models get one clear error."""
    inits = {t.name for t in graph.initializer}
    for inp in (i for i in graph.input if i.name not in inits):
        kind = inp.type.tensor_type
        if inp.type.WhichOneof("value") != "tensor_type":
            continue  # GraphFacts refuses what is no tensor
        if kind.elem_type != onnx.TensorProto.FLOAT:
            name = onnx.TensorProto.DataType.Name(kind.elem_type).lower()
            raise LrpGraphError(f"input {inp.name!r} is {name}; lrpgraph builds from float32 models "
                                "(export in float32; build --dtype float16 makes a half-precision explainer)")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim]
        shape = [d if d is not None else "?" for d in dims]
        if any(d is not None and d <= 0 for d in dims):
            raise LrpGraphError(f"input {inp.name!r} has shape {shape}: every dimension must be "
                                "positive; re-export with the image size the model takes")
        per_image = 1
        for d in dims[1:]:
            per_image *= d or 1
        if per_image > MAX_IMAGE_ELEMENTS:
            raise LrpGraphError(f"input {inp.name!r} has shape {shape}: {per_image:.3g} values per "
                                f"image, more than lrpgraph explains ({MAX_IMAGE_ELEMENTS:.3g})")


def canonicalise(model: onnx.ModelProto, batch: int | str | None = None,
                 size: tuple[int, int] | None = None) -> onnx.ModelProto:
    """Return a copy of ``model`` in canonical form (see the module docstring), at image
    size ``size`` (H, W) where the file leaves it open."""
    opset = default_opset(model)
    if opset < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise LrpGraphError(
                f"the model uses opset {opset}; converting it to opset {MIN_OPSET} failed "
                f"({exc}). Re-export the model with opset >= {MIN_OPSET}."
            ) from None
    else:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    if model.ir_version < MIN_IR_VERSION:
        model.ir_version = MIN_IR_VERSION

    graph = model.graph
    _check_input(graph)
    init_names = {t.name for t in graph.initializer}
    keep = [i for i in graph.input if i.name not in init_names]
    del graph.input[:]
    graph.input.extend(keep)
    if size is not None and len(graph.input) == 1:
        set_size(model, size)
    if computes_shapes(model) and len(graph.input) == 1:
        check_static_image(model)
        model = fold_shapes(model)
        graph = model.graph

    used = set()
    for i, node in enumerate(graph.node):
        if node.op_type == "Sum" and len(node.input) == 2:
            node.op_type = "Add"
        elif node.op_type == "Sum" and len(node.input) == 1:
            node.op_type = "Identity"
        if not node.name or node.name in used:
            node.name = f"{node.op_type}_{i}"
        used.add(node.name)

    if batch is not None and len(graph.input) == 1:
        dim0 = graph.input[0].type.tensor_type.shape.dim[0]
        if isinstance(batch, int):
            dim0.dim_value = batch
        else:
            dim0.dim_param = batch
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:
        raise LrpGraphError(f"ONNX shape inference failed on the model: {exc}") from None
    return model
