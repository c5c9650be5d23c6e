"""Fold a graph's run-time shape arithmetic into constants, before matching.

Exporters write shapes as computations: TF-style 'same' padding reads the image size with
Shape → Gather → Sub → Div → ... → Pad, a channel shuffle reshapes to sizes read off its
input. With the image size known (static in the file, or given with ``build --size``) all
of it is constant except the batch, and the rules need it as constants (Pad's pads, a
Reshape's target). The folding is onnxscript's constant folder with ONNX shape inference,
run to a fixed point; the batch stays symbolic.

Two rewrites help it. The folder evaluates ``Gather`` of a shape only with 1-D indices,
while the TorchScript exporter gathers one dimension with a scalar index: the rule below
(an onnxscript pattern rewrite) gives such a Gather 1-D indices and squeezes the result.
And a Reshape to ``[the data's own batch, constants...]`` (ShuffleNet's channel shuffle)
cannot fold while the batch is symbolic: it takes ONNX Reshape's 0 ("copy this
dimension") there instead, which is the same reshape.
"""

from __future__ import annotations

import onnx

from .batch_shapes import write_batch_affine
from .errors import LrpGraphError

SHAPE_OPS = frozenset({"Shape", "Size"})
_ROUNDS = 100  # each round folds at least one more layer of the arithmetic (a block of a deep net)


def computes_shapes(model: onnx.ModelProto) -> bool:
    return any(node.op_type in SHAPE_OPS for node in model.graph.node)


def _scalar_gather_rule():
    from onnxscript.rewriter import pattern

    def target(op, shape, index):
        return op.Gather(shape, index, axis=0)

    def check(context, shape, index, **_):
        value = index.const_value
        producer = shape.producer()
        return value is not None and value.numpy().ndim == 0 and producer is not None \
            and producer.op_type == "Shape"

    def replacement(op, shape, index):
        zero = op.Constant(value_ints=[0])
        return op.Squeeze(op.Gather(shape, op.Unsqueeze(index, zero), axis=0), zero)

    return pattern.RewriteRuleSet([pattern.RewriteRule(target, replacement, check)])


_PASSING = ("Unsqueeze", "Squeeze", "Cast", "Identity")


def _batch_read(value):
    """The tensor whose batch size ``value`` (a 1-element shape piece) reads, or None:
    ``Gather(Shape(t), 0)`` or ``Shape(t, end=1)``, through Unsqueeze/Squeeze/Cast."""
    node = value.producer()
    while node is not None and node.op_type in _PASSING:
        node = node.inputs[0].producer()
    if node is not None and node.op_type == "Gather":
        index = node.inputs[1].const_value
        if index is None or index.numpy().reshape(-1).tolist() != [0]:
            return None
        node = node.inputs[0].producer()
    elif node is not None and node.op_type == "Shape" and node.attributes.get_int("end", None) != 1:
        return None
    if node is None or node.op_type != "Shape" or node.attributes.get_int("start", 0) != 0:
        return None
    return node.inputs[0]


def _same_batch(a, b) -> bool:
    """Whether tensors ``a`` and ``b`` have the same batch size: one tensor, or one named
    symbolic first dimension (shape inference names the batch through the graph)."""
    if a is None or b is None:
        return False
    if a is b:
        return True
    if a.shape is None or b.shape is None or len(a.shape) == 0 or len(b.shape) == 0:
        return False
    first_a, first_b = a.shape[0], b.shape[0]
    return not isinstance(first_a, int) and first_a.value is not None and first_a.value == getattr(first_b, "value", None)


def _copy_batch(graph) -> int:
    """Reshapes to ``[batch read off the data, constants...]`` (a channel shuffle's view)
    take 0 there instead, ONNX Reshape's "copy this dimension": then their shape folds
    while the batch stays symbolic. Returns how many were changed."""
    import numpy as np
    import onnx_ir as ir

    changed = 0
    for node in list(graph):
        if node.op_type != "Reshape" or node.attributes.get_int("allowzero", 0):
            continue
        cat = node.inputs[1].producer()
        if cat is None or cat.op_type != "Concat" or any(
                use.op_type != "Reshape" or not _same_batch(_batch_read(cat.inputs[0]), use.inputs[0])
                for use, _ in cat.outputs[0].uses()):
            continue
        zero = ir.Value(name=f"{cat.name}_batch_copy", const_value=ir.tensor(np.zeros(1, np.int64)))
        zero.shape, zero.type = ir.Shape([1]), ir.TensorType(ir.DataType.INT64)
        graph.register_initializer(zero)
        cat.replace_input_with(0, zero)
        changed += 1
    return changed


def _should_fold(node):
    # the folder keeps ConstantOfShape so as not to grow a model; here its outputs are pads
    return True if node.op_type == "ConstantOfShape" else None


def _fold(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass
    from onnxscript import optimizer

    graph = ir.serde.deserialize_model(model)
    rules = _scalar_gather_rule()
    for _ in range(_ROUNDS):
        rewritten = rules.apply_to_model(graph) + _copy_batch(graph.graph)
        folded = optimizer.fold_constants(graph, onnx_shape_inference=True, should_fold=_should_fold)
        RemoveUnusedNodesPass()(graph)
        if not rewritten and not folded.modified:
            break
    return ir.serde.serialize_model(graph)


def fold_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every shape computation that its static input sizes decide folded,
    and those that depend on the batch written as its multiples (batch_shapes.py)."""
    try:
        import onnx_ir  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise LrpGraphError(f"the model computes shapes at run time; folding them needs onnxscript "
                            f"({exc}): pip install onnxscript") from None
    model = _fold(model)
    if computes_shapes(model) and write_batch_affine(model):
        model = _fold(model)
    return model


def set_size(model: onnx.ModelProto, size: tuple[int, int]) -> None:
    """Give the image input the spatial size ``size`` (H, W) in place: its channel axis is
    the one of size 1 or 3 (NCHW or NHWC); a static size that differs is refused."""
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise LrpGraphError(f"--size: input {inp.name!r} has rank {len(dims)}; --size sets H and W of "
                            "a rank-4 image input")
    channels_first = dims[1].HasField("dim_value") and dims[1].dim_value in (1, 3)
    spatial = (2, 3) if channels_first else (1, 2)
    for axis, value in zip(spatial, size):
        dim = dims[axis]
        if dim.HasField("dim_value") and dim.dim_value != value:
            raise LrpGraphError(f"--size {size[0]} {size[1]}: input {inp.name!r} is fixed at "
                                f"{dims[spatial[0]].dim_value}x{dims[spatial[1]].dim_value}; "
                                "drop --size or give that size")
        dim.Clear()
        dim.dim_value = int(value)


def check_static_image(model: onnx.ModelProto) -> None:
    """One clear error for an image input whose size is not in the file."""
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    free = [d.dim_param or "?" for d in dims[1:] if not d.HasField("dim_value")]
    if free:
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        raise LrpGraphError(f"input {inp.name!r} has shape {shape}: its size is not fixed "
                            f"({', '.join(free)}). Pass the size to explain at: --size H W")
