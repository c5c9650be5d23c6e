"""Shapes that depend on the batch, written as the batch times constants.

A ViT's class token is ``Expand(token, [N, -1, -1])`` with ``N`` read off the activations
through Shape → Gather → Concat → Equal → Where; a Swin window partition reshapes to
``[N * windows, ...]``. The constant folder (fold.py) leaves such arithmetic alone while the
batch is symbolic, and then shape inference loses the non-batch sizes the rules need.

Such a shape is a function of the batch alone, and in every exporter we know of an affine
one: each entry is a constant or the batch times a constant. This pass finds the tensors
computed from shapes and constants only, evaluates them with ONNX Runtime at three batch
sizes, and replaces each that is batch-affine by ``Concat(constants, Shape(image)[:1] * k,
...)``: arithmetic ONNX shape inference follows symbolically (data propagation), so the
non-batch sizes become static while the batch stays free. One that is not affine (a
float scale from a shape, say) is left as it was; one that does not depend on the batch at
all becomes a constant.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

SHAPE_READERS = frozenset({"Shape", "Size"})
_BATCHES = (1, 2, 3)
_MAX_PROBE_ELEMENTS = 1 << 24  # the probe forwards at batch 3: keep it affordable


def _shape_computed(graph: onnx.GraphProto) -> set:
    """The tensors computed from shapes and constants only, with a shape among their
    ancestors (what constants alone compute is the folder's business)."""
    constant = {t.name for t in graph.initializer}
    derived = set()
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type in SHAPE_READERS:
            derived.update(node.output)
        elif node.op_type == "Constant" or (inputs and all(i in constant for i in inputs)):
            constant.update(node.output)
        elif inputs and all(i in constant or i in derived for i in inputs) and not any(
                a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            derived.update(node.output)
    return derived


def _read_by_others(graph: onnx.GraphProto, fits: dict) -> list[str]:
    """The tensors of ``fits`` read by a node not all of whose outputs are in ``fits``:
    the outermost that can be replaced."""
    wanted = []
    for node in graph.node:
        if node.op_type == "Constant" or (node.output and all(o in fits for o in node.output)):
            continue
        wanted += [name for name in node.input if name in fits and name not in wanted]
    return wanted


def _probe(model: onnx.ModelProto, names: list[str]) -> dict[str, list[np.ndarray]] | None:
    """The values of ``names`` at each probe batch size (zero images), or None where the
    model cannot be run so (an input that is not a float image, a huge image)."""
    import onnxruntime as ort

    inp = model.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]
    if any(d <= 0 for d in dims) or int(np.prod(dims)) * _BATCHES[-1] > _MAX_PROBE_ELEMENTS:
        return None
    dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        runs = [session.run(names, {inp.name: np.zeros([b] + dims, dtype)}) for b in _BATCHES]
    except Exception:  # not ours to diagnose here: the build reports what it cannot match
        return None
    return {name: [np.asarray(run[i]) for run in runs] for i, name in enumerate(names)}


def _affine(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """(c, k) with value(b) = c + k * b and, per entry, c or k zero; None otherwise."""
    if values[0].dtype != np.int64 or values[0].ndim > 1 or any(v.shape != values[0].shape for v in values):
        return None
    k = values[1] - values[0]
    c = values[0] - k
    if not all(np.array_equal(c + k * b, v) for b, v in zip(_BATCHES, values)):
        return None
    if np.any((c != 0) & (k != 0)) or not np.any(k):
        return None
    return c, k


def _pieces(name: str, c: np.ndarray, k: np.ndarray, batch: str) -> tuple[list, list]:
    """Nodes and initializers for ``c + k * N`` as a Concat of constant runs and N * k."""
    nodes, inits, parts = [], [], []
    flat_c, flat_k = c.reshape(-1), k.reshape(-1)
    i = 0
    while i < flat_c.size:
        j = i
        if flat_k[i] == 0:
            while j < flat_c.size and flat_k[j] == 0:
                j += 1
            inits.append(numpy_helper.from_array(flat_c[i:j].copy(), f"{name}__const{i}"))
            parts.append(inits[-1].name)
        else:
            j = i + 1
            if flat_k[i] == 1:
                parts.append(batch)
            else:
                inits.append(numpy_helper.from_array(np.array([flat_k[i]], np.int64), f"{name}__k{i}"))
                nodes.append(helper.make_node("Mul", [batch, inits[-1].name], [f"{name}__nk{i}"]))
                parts.append(nodes[-1].output[0])
        i = j
    flat = f"{name}__flat" if c.ndim == 0 else name
    nodes.append(helper.make_node("Concat", parts, [flat], axis=0))
    if c.ndim == 0:
        inits.append(numpy_helper.from_array(np.array([0], np.int64), f"{name}__axes"))
        nodes.append(helper.make_node("Squeeze", [flat, inits[-1].name], [name]))
    return nodes, inits


def _fit(runs: list[np.ndarray]):
    """("const", value), ("affine", c, k), or None: what a tensor is as a function of N."""
    if all(np.array_equal(runs[0], v) and runs[0].dtype == v.dtype and runs[0].shape == v.shape
           for v in runs):
        return ("const", runs[0])
    fit = _affine(runs)
    return ("affine",) + fit if fit is not None else None


def write_batch_affine(model: onnx.ModelProto) -> bool:
    """Rewrite ``model``'s batch-dependent shape tensors in place (see the module
    docstring). Returns whether anything changed."""
    graph = model.graph
    if len(graph.input) != 1:
        return False
    derived = _shape_computed(graph)
    values = _probe(model, sorted(derived)) if derived else None
    if not values:
        return False
    fits = {name: fit for name, runs in values.items() if (fit := _fit(runs)) is not None}
    names = _read_by_others(graph, fits)
    if not names:
        return False
    image = graph.input[0].name
    batch, first = f"{image}__batch", f"{image}__batch_index"
    graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), first))
    new_nodes = [helper.make_node("Shape", [image], [f"{image}__shape"]),
                 helper.make_node("Gather", [f"{image}__shape", first], [batch], axis=0)]
    for name in names:
        if fits[name][0] == "const":
            graph.initializer.append(numpy_helper.from_array(fits[name][1], name))
        else:
            more, inits = _pieces(name, fits[name][1], fits[name][2], batch)
            new_nodes += more
            graph.initializer.extend(inits)
    replaced = set(names)
    for node in graph.node:  # the old producers stay, unread: the folder removes them
        node.output[:] = [f"{out}__replaced" if out in replaced else out for out in node.output]
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + old)
    return True
