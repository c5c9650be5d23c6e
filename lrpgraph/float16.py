"""A float16 copy of a canonical float32 model, for ``build --dtype float16``.

Initializers and Constant nodes become float16; the image input stays float32 with a Cast
after it, so callers feed the same type as to the float32 explainer (the driver casts the
outputs back to float32). The forward pass runs in float16, so ``logits`` differ from the
original model's by float16 rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, shape_inference

_F32 = TensorProto.FLOAT
_F16 = TensorProto.FLOAT16


def _half(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_type != _F32:
        return tensor
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name)


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    for i, t in enumerate(graph.initializer):
        graph.initializer[i].CopyFrom(_half(t))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                attr.t.CopyFrom(_half(attr.t))
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == _F32:
                    attr.i = _F16
    image = graph.input[0].name
    half_in = image + "/float16"
    for node in graph.node:
        node.input[:] = [half_in if n == image else n for n in node.input]
    graph.node.insert(0, onnx.helper.make_node("Cast", [image], [half_in], to=_F16, name="float16/input"))
    for out in graph.output:
        if out.type.tensor_type.elem_type == _F32:
            out.type.tensor_type.elem_type = _F16
    del graph.value_info[:]
    return shape_inference.infer_shapes(model, data_prop=True)


# The float16 pass starts from this much relevance per image (see half_start).
HALF_START = 1024.0


def half_start(e, start):
    """LRP is linear in the start relevance: float16 runs the pass from a start of
    HALF_START per image, where relevance spread over ~10^6 activations stays in float16's
    normal range. Returns (the new start, the float32 sum of the true start per image, the
    factor per image that scales the pass's outputs back)."""
    value = e.op("Cast", [e.reduce("ReduceSum", start.relevance, [1], keepdims=False)],
                 {"to": onnx.TensorProto.FLOAT}, hint="start_value")
    per_image = e.op("Div", [value, np.array(HALF_START, np.float32)], hint="per_image")
    start.relevance = e.op("Mul", [start.onehot, e.scalar(HALF_START)], hint="unit_start")
    return start, value, per_image
