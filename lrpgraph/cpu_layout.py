"""ORT CPU sessions whose elementwise relevance arithmetic stays in ORT's blocked layout.

ORT's CPU provider runs convolutions in a blocked channel layout (NCHWc: channels in blocks
of 8 or 16, MLAS's vector width) and moves only convs, pools, Add/Sum/Mul, Concat and a few
activations into it; every other op gets its inputs reordered back to plain NCHW and its
output reordered in again. An LRP pass divides at every conv (``R / z``) and splits at every
skip merge (``Sub``, ``Abs``, ``Div``), so on ResNet50 ORT's own layout pass leaves ~175
reorders per call (80-110 ms of a ~1100 ms batch of 8 on a 2-core AVX-512 machine).

An elementwise op on same-shaped operands gives the same numbers in any layout as long as
every operand uses the same one, so this module lets ORT optimize the graph, reads back the
graph it saved (nodes only: the weights stay in an external file), moves the remaining
elementwise ops onto the blocked tensors (a reorder-in only for an operand that has no
blocked twin, a reorder-out only where a plain-layout reader remains) and opens the result
with ORT's own optimizations off, since they have already run.

Only tensors whose channel count is a whole number of blocks move: ORT pads the last block
with zeros, and ``0 / 0`` there would put NaN into the next conv's sum. The block size comes
from a probe (ORT does not report it). Anything unexpected falls back to ORT's plain session
with a warning: the layout only changes speed, never the numbers. Where ORT laid out a
subgraph too (Score-CAM's Scan body) the saved graph is one ORT itself cannot reopen, so
those keep ORT's session without a word.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from typing import Callable

import numpy as np
import onnx
from onnx import helper

NCHWC = "com.microsoft.nchwc"

# Ops that map each output element to the operands' elements at the same index (with a
# one-element operand broadcast), so the layout the operands share does not matter.
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Abs", "Neg", "Max", "Min", "Reciprocal", "Sign"})


def _options(configure: Callable | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if configure is not None:
        configure(opts)
    return opts


def _optimized_nodes(model, directory: str, configure: Callable | None = None) -> onnx.ModelProto:
    """Let ORT optimize ``model`` for the CPU and return the graph it saved, its
    initializers left in an external file beside it (so only the nodes are parsed)."""
    import onnxruntime as ort

    opts = _options(configure)
    opts.enable_profiling = False
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = os.path.join(directory, "optimized.onnx")
    opts.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                  "optimized.data")
    opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                  "1024")
    ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return onnx.load(opts.optimized_model_filepath, load_external_data=False)


@functools.lru_cache(maxsize=1)
def block_size() -> int:
    """MLAS's NCHWc block on this CPU: ORT pads a one-channel conv's reordered weight to it."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 4, 4])
    w = onnx.numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "probe", [x], [y], [w])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as d:
        opt = _optimized_nodes(probe.SerializeToString(), d)
    conv = next((n for n in opt.graph.node if n.domain == NCHWC and n.op_type == "Conv"), None)
    if conv is None:
        return 0  # no NCHWc layout on this CPU: nothing to rewrite
    weight = next(t for t in opt.graph.initializer if t.name == conv.input[1])
    return int(weight.dims[0])


def _shapes(model: onnx.ModelProto) -> dict:
    """Float tensors' shapes by name (dims as ints or symbol names; None where unknown)."""
    # data_prop: the several-target explainer's row views take their shapes from Shape ops
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.elem_type == onnx.TensorProto.FLOAT and t.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value or d.dim_param or None for d in t.shape.dim)
    return shapes


def _one_element(graph: onnx.GraphProto) -> set:
    names = {t.name for t in graph.initializer if int(np.prod(t.dims)) == 1}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR:
            if int(np.prod(n.attribute[0].t.dims)) == 1:
                names.add(n.output[0])
    return names


def _subgraphs(node):
    for a in node.attribute:
        yield from ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)


def _subgraph_inputs(node) -> set:
    """Names a node's subgraphs (If/Loop bodies) read, outer-scope ones among them."""
    names = set()
    for g in _subgraphs(node):
        for n in g.node:
            names.update(n.input)
            names |= _subgraph_inputs(n)
    return names


def _blocked_subgraph(graph) -> bool:
    """Whether ORT laid out a subgraph too (Score-CAM's Scan body): the graph it saves then
    names a reorder in the body like one outside, which ORT itself rejects on reload."""
    return any(any(n.domain == NCHWC for n in g.node) or _blocked_subgraph(g)
               for m in graph.node for g in _subgraphs(m))


class _Layout:
    """Which tensors of ORT's optimized graph may be read in the blocked layout.

    A blocked tensor keeps each row's C x H x W contiguous, in one order for every tensor of
    that C x H x W: an elementwise op whose operands broadcast only over the leading axes
    is exact in the blocked layout as in the plain one, and so is a Reshape of the leading
    axes alone. That covers the stacked rows of a several-target explainer (emit.py):
    K*N rows viewed as K x N, an N-row operand broadcast over the K."""

    def __init__(self, graph, shapes, block):
        self.shapes, self.block = shapes, block
        self.single = _one_element(graph)
        self.blocked = {}  # plain tensor name -> its blocked twin

    def full_blocks(self, name):
        s = self.shapes.get(name)
        return s is not None and len(s) == 4 and None not in s and isinstance(s[1], int) and s[1] % self.block == 0

    def rows(self, name):
        """C x H x W of a 4-D or 5-D tensor whose channels are whole blocks, else None."""
        s = self.shapes.get(name)
        if s is None or len(s) not in (4, 5) or not all(isinstance(d, int) for d in s[-3:]) or s[-3] % self.block:
            return None
        return tuple(s[-3:])

    def aligned(self, n, operands) -> bool:
        """Operands and output of one C x H x W (whole blocks), differing at most in the
        leading axes, which broadcast row by row; 5-D ones (K x N x ...) already blocked."""
        names = operands + [n.output[0]]
        rests = {self.rows(i) for i in names}
        return None not in rests and len(rests) == 1 and all(
            i in self.blocked for i in operands if len(self.shapes[i]) == 5)

    def movable(self, n) -> bool:
        operands = [i for i in n.input if i not in self.single]
        return (n.domain in ("", "ai.onnx") and n.op_type in ELEMENTWISE and bool(operands)
                and any(i in self.blocked for i in operands)
                and self.aligned(n, operands))

    def row_reshape(self, n) -> bool:
        """A Reshape of a blocked tensor that keeps C x H x W: it only splits or merges the
        rows, each of which the blocked layout keeps contiguous."""
        if n.op_type != "Reshape" or n.domain not in ("", "ai.onnx"):
            return False
        if n.input[0] not in self.blocked and not self.full_blocks(n.input[0]):
            return False  # a plain 4-D input is reordered in; a 5-D one cannot be
        rest = self.rows(n.input[0])
        return rest is not None and self.rows(n.output[0]) == rest

    def read_shape_of_twin(self, n) -> None:
        """A Shape of a tensor with a blocked twin reads the twin: whole blocks, same shape."""
        if n.op_type == "Shape" and n.domain in ("", "ai.onnx") and n.input[0] in self.blocked \
                and self.rows(n.input[0]) is not None:
            n.input[0] = self.blocked[n.input[0]]


def move_elementwise(opt: onnx.ModelProto, shapes: dict, block: int) -> int:
    """Rewrite ORT's optimized graph ``opt`` in place: elementwise ops whose operands are
    all blocked tensors of one shape (or single elements, or the stacked rows of _Layout)
    read and write the blocked layout. ``shapes``: the plain tensors' shapes (ORT keeps
    their names). Returns how many ops moved."""
    g = opt.graph
    lay = _Layout(g, shapes, block)
    blocked = lay.blocked
    for n in g.node:
        if n.domain == NCHWC and n.op_type == "ReorderOutput":
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if not attrs.get("channels_last", 0) and lay.full_blocks(n.output[0]):
                blocked[n.output[0]] = n.input[0]

    nodes, moved = [], 0
    for n in g.node:
        lay.read_shape_of_twin(n)
        reshape = lay.row_reshape(n)
        if not (reshape or lay.movable(n)):
            nodes.append(n)
            continue
        for i in n.input if not reshape else n.input[:1]:
            if i not in blocked and i not in lay.single:
                blocked[i] = f"{i}/nchwc"
                nodes.append(helper.make_node("ReorderInput", [i], [blocked[i]], domain=NCHWC,
                                              name=f"{blocked[i]}/ReorderInput"))
        out = n.output[0]
        blocked[out] = f"{out}/nchwc"
        nodes.append(helper.make_node(n.op_type, [blocked.get(i, i) for i in n.input],
                                      [blocked[out]], name=blocked[out]))
        # the plain tensor, for readers that stay plain; dropped below if there are none
        if len(shapes[out]) == 4:
            nodes.append(helper.make_node("ReorderOutput", [blocked[out]], [out], domain=NCHWC,
                                          channels=shapes[out][1], name=f"{out}/ReorderOutput"))
        else:  # no reorder of 5-D tensors: the plain node stays for plain readers
            nodes.append(n)
        moved += 1
    _alias_reorders(nodes, blocked)
    nodes = _live(nodes, {o.name for o in g.output})
    del g.node[:]
    g.node.extend(nodes)
    return moved


def _alias_reorders(nodes, blocked) -> None:
    """ORT's own reorders of a tensor that now has a blocked twin read the twin instead."""
    alias = {}
    for n in nodes:
        if (n.domain == NCHWC and n.op_type == "ReorderInput" and n.input[0] in blocked
                and blocked[n.input[0]] != n.output[0]
                and not any(a.name == "channels_last" and a.i for a in n.attribute)):
            alias[n.output[0]] = blocked[n.input[0]]
    for n in nodes:
        for k, i in enumerate(n.input):
            n.input[k] = alias.get(i, i)


def _live(nodes: list, graph_outputs: set) -> list:
    """``nodes`` without those whose outputs nothing reads (the plain-layout twins and
    reorders the moves left unread)."""
    while True:
        read = set(graph_outputs)
        for n in nodes:
            read.update(n.input)
            read |= _subgraph_inputs(n)
        alive = [n for n in nodes if any(o in read for o in n.output)]
        if len(alive) == len(nodes):
            return nodes
        nodes = alive


def cpu_session(model, configure: Callable | None = None, *, layout: bool = True):
    """An ORT CPU session for ``model`` (a path or serialized bytes), with its elementwise ops
    moved into ORT's blocked layout where that is exact (``layout=False`` or the environment
    variable ``LRPGRAPH_CPU_LAYOUT=0``: ORT's plain session). ``configure(opts)`` sets the
    caller's session options (threads, spinning, profiling) on each SessionOptions made."""
    import onnxruntime as ort

    model = model if isinstance(model, bytes) else os.fspath(model)

    def plain():
        return ort.InferenceSession(model, _options(configure), providers=["CPUExecutionProvider"])

    # os.name: the rewritten graph's weights are a file ORT maps, removed while mapped, which
    # only POSIX allows (elsewhere each session would leave its weights' copy behind)
    if (not layout or os.environ.get("LRPGRAPH_CPU_LAYOUT", "1") == "0" or os.name != "posix"
            or not block_size()):
        return plain()
    with tempfile.TemporaryDirectory(prefix="lrpgraph-cpu-") as d:
        try:
            opt = _optimized_nodes(model, d, configure)
        except Exception as exc:
            # a model ORT cannot load fails here with ORT's own message, and nothing more
            session = plain()
            _keep_orts_layout(exc)  # it loads, so saving it failed (a full temporary disk)
            return session
        if _blocked_subgraph(opt.graph):
            return plain()
        try:
            source = (onnx.load_model_from_string(model) if isinstance(model, bytes)
                      else onnx.load(model, load_external_data=False))
            move_elementwise(opt, _shapes(source), block_size())
            if not opt.metadata_props:
                opt.metadata_props.extend(source.metadata_props)
            # an input backed by an initializer (old exporters list every weight as one) is
            # optional; ORT's saved graph keeps the input but may drop the folded weight,
            # which would make it a required feed
            real = {i.name for i in source.graph.input} - {t.name for t in source.graph.initializer}
            backed = {t.name for t in opt.graph.initializer}
            inputs = [i for i in opt.graph.input if i.name in real or i.name in backed]
            del opt.graph.input[:]
            opt.graph.input.extend(inputs)
            del source
            path = os.path.join(d, "rewritten.onnx")
            onnx.save(opt, path)
            opts = _options(configure)
            # ORT's passes have run already; running them again would re-layout the moved ops
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a speed-up only: any surprise keeps ORT's own layout
            _keep_orts_layout(exc)
    return plain()


def open_session(model, providers: list, configure: Callable | None = None, *, layout: bool = True):
    """An ORT session for ``model`` on ``providers``: :func:`cpu_session` where the CPU
    provider comes first, else ORT's own with the same options."""
    import onnxruntime as ort

    if providers[0] == "CPUExecutionProvider":
        return cpu_session(model, configure, layout=layout)
    model = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(model, _options(configure), providers=providers)


def _keep_orts_layout(exc: Exception) -> None:
    warnings.warn(f"lrpgraph: keeping ORT's CPU layout ({type(exc).__name__}: {exc})", stacklevel=3)
