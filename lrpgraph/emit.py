"""Emit the relevance graph beside the forward graph.

Nodes are visited in reverse topological order; each rule turns the relevance at a node's
output into relevance at its inputs; where a tensor fans out (a block input feeding both
the residual branch and the skip), the contributions of all consumers are summed.
Everything the rules read from the forward pass is a forward tensor: nothing is
recomputed.

Several targets at once (``build --targets K``): the relevance pass runs over K*N rows,
target-major (row ``k*N + n`` is image n's k-th target), while the forward pass, and every
rule's z and denominator, run once over N rows. The Emitter keeps track of which tensors
are *stacked* (over K*N rows) and, where an elementwise op meets a stacked tensor and a
forward one, views the stacked operand as K x N x ... so that the forward one broadcasts
over the targets; shapes taken from forward tensors get their batch axis freed. The rules
need not know: what a rule computes for one target, it computes for each.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_graphsurgeon as gs

from .rules.base import Relevance, Scaled

# Ops whose operands broadcast elementwise (NumPy's rules): where a stacked tensor meets a
# forward one, the op runs on the stacked tensor's K x N x ... view.
BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Where", "Max", "Min", "Pow", "Equal", "Less",
                          "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor"})
_COMPARISONS = frozenset({"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor"})
# Ops whose output describes the input's shape, not its rows: never stacked.
_SHAPE_OPS = frozenset({"Shape", "Size"})


class Emitter:
    """Builds nodes into a graphsurgeon graph with unique, readable names under ``lrp/``.

    ``map_only``: only the channel sum of the relevance at the image is read (no
    ``relevance`` output), so a first-layer rule may deliver just that sum."""

    def __init__(self, graph: gs.Graph, opset: int, dtype=np.float32, map_only: bool = False):
        self.graph = graph
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.map_only = map_only
        self.scope = "lrp"
        self._count = defaultdict(int)
        self.targets = 1  # K: relevance rows per image (see the module's docstring)
        self.batch = "N"  # the forward pass's batch dim (the driver sets the image's)
        self._stacked = {}  # id(tensor) -> tensor, for the tensors over K*N rows
        self._views = {}  # id(stacked tensor) -> its K x N x ... view
        self._constant = {}  # id(tensor) -> tensor, for those computed from constants alone

    def _name(self, hint: str) -> str:
        base = f"{self.scope}/{hint}"
        self._count[base] += 1
        n = self._count[base]
        return base if n == 1 else f"{base}_{n}"

    def const(self, value, hint: str = "const") -> gs.Constant:
        return gs.Constant(self._name(hint), np.asarray(value))

    def scalar(self, value) -> gs.Constant:
        """A float constant in the relevance graph's dtype."""
        return self.const(np.asarray(value, dtype=self.dtype), "k")

    def op(self, op_type: str, inputs, attrs=None, hint: str | None = None, outputs: int = 1,
           dtype=None):
        ins = [self._input(t) for t in inputs]
        stacked = self.targets > 1 and op_type not in _SHAPE_OPS and any(map(self.is_stacked, ins))
        if stacked and op_type in BROADCASTING and any(map(self._has_rows, ins)):
            views = [self.view_rows(t) for t in ins]
            return self._unview(self._node(op_type, views, attrs, hint, 1, dtype), views,
                                op_type not in _COMPARISONS)
        if stacked and op_type in ("Reshape", "Expand") and self._has_rows(ins[1]):
            ins[1] = self._free_batch(ins[1], -1 if op_type == "Reshape" else 1)
        outs = self._node(op_type, ins, attrs, hint, outputs, dtype)
        for t in outs if outputs > 1 else [outs]:
            if stacked:
                self.stack(t)
            elif all(isinstance(i, gs.Constant) or id(i) in self._constant or i.is_empty() for i in ins):
                self._constant[id(t)] = t
        return outs

    def copy_of_constant(self, t):
        """``t`` rebuilt from copies of the constants it is computed from (``t`` itself
        where it reads anything else): the same values in a tensor no other node reads."""
        if isinstance(t, gs.Constant):
            return self.const(t.values.copy(), t.name.rsplit("/", 1)[-1] + "_copy")
        node = t.inputs[0] if t.inputs else None
        if node is None or len(node.outputs) != 1 or not self._from_constants(t):
            return t
        ins = [None if i.is_empty() else self.copy_of_constant(i) for i in node.inputs]
        return self.op(node.op, ins, dict(node.attrs), hint=node.name.rsplit("/", 1)[-1] + "_copy")

    def _from_constants(self, t) -> bool:
        """Computed from initializers alone: by this emitter, or in the forward graph (a
        DequantizeLinear of int8 weights)."""
        if isinstance(t, gs.Constant) or t.is_empty() or id(t) in self._constant:
            return True
        node = t.inputs[0] if t.inputs else None
        return node is not None and node.op not in _SHAPE_OPS and all(map(self._from_constants, node.inputs))

    def _has_rows(self, t) -> bool:
        """A tensor of the forward pass over N rows, or a shape read off one (not stacked,
        not computed from constants alone)."""
        return (isinstance(t, gs.Variable) and not t.is_empty() and not self.is_stacked(t)
                and id(t) not in self._constant)

    def _input(self, t):
        if isinstance(t, Relevance):
            t = t.tensor
        if t is None:
            return gs.Variable.empty()
        return t if isinstance(t, gs.Tensor) else self.const(t, "c")

    def _node(self, op_type, ins, attrs, hint, outputs, dtype):
        name = self._name(hint or op_type)
        outs = [gs.Variable(name if outputs == 1 else f"{name}:{i}", dtype=dtype)
                for i in range(outputs)]
        self.graph.nodes.append(gs.Node(op_type, name=name, attrs=dict(attrs or {}),
                                        inputs=ins, outputs=outs))
        return outs[0] if outputs == 1 else outs

    # Several targets: stacked tensors --------------------------------------------------
    def stack(self, tensor):
        """Mark ``tensor`` as stacked: K*N rows, target-major."""
        self._stacked[id(tensor)] = tensor
        return tensor

    def is_stacked(self, tensor) -> bool:
        if isinstance(tensor, Relevance):
            tensor = tensor.tensor
        return id(tensor) in self._stacked

    def view_rows(self, t):
        """A stacked tensor as K x N x ...; any other operand as it is."""
        if not self.is_stacked(t):
            return t
        if id(t) not in self._views:
            rest = _static_rest(t)
            if rest is not None:  # constant shapes: ORT's CPU layout pass can follow them
                shape = self.const(np.array([self.targets, -1] + rest, np.int64), "rows_view_shape")
            else:
                rest = self._node("Shape", [t], {"start": 1}, "rows_rest", 1, None)
                shape = self._node("Concat", [self.const(np.array([self.targets, -1], np.int64), "k_n"), rest],
                                   {"axis": 0}, "rows_view_shape", 1, None)
            self._views[id(t)] = view = self._node("Reshape", [t, shape], None, "rows_view", 1, None)
            if not isinstance(rest, gs.Tensor):
                view.shape = [self.targets, None] + rest
        return self._views[id(t)]

    def _unview(self, view, operands, numeric=True):
        """A K x N x ... result of ``operands`` back as a stacked K*N x ... tensor (its view
        remembered)."""
        rest = _broadcast_rest(operands)
        if rest is not None:
            shape = self.const(np.array([-1] + rest, np.int64), "rows_shape")
        else:
            dims = self._node("Shape", [view], {"start": 2}, "rows_rest", 1, None)
            shape = self._node("Concat", [self.const(np.array([-1], np.int64), "minus_one"), dims],
                               {"axis": 0}, "rows_shape", 1, None)
        out = self.stack(self._node("Reshape", [view, shape], None, "rows", 1, None))
        self._views[id(out)] = view
        if rest is not None and numeric:
            view.shape, view.dtype = [self.targets, None] + rest, self.dtype
            self.annotate(out, [self.batch] + rest)
        return out

    def _free_batch(self, shape, batch: int):
        """A shape read off a forward tensor, for a stacked one: its batch entry ``batch``
        (-1 for Reshape; 1 for Expand, which broadcasts it to the K*N rows)."""
        rest = self._node("Slice", [shape, self.const(np.array([1], np.int64), "one"),
                                    self.const(np.array([np.iinfo(np.int64).max], np.int64), "end")],
                          None, "shape_rest", 1, None)
        return self._node("Concat", [self.const(np.array([batch], np.int64), "batch"), rest], {"axis": 0},
                          "rows_shape", 1, None)

    def annotate(self, tensor, like) -> None:
        """Give ``tensor`` the shape of the forward tensor ``like`` (or the shape ``like``),
        for a stacked tensor with K times its rows, and the relevance dtype."""
        shape = list(like if isinstance(like, (list, tuple)) else like.shape)
        if self.is_stacked(tensor) and shape:
            shape[0] = shape[0] * self.targets if isinstance(shape[0], int) else f"{shape[0]}x{self.targets}"
        tensor.shape, tensor.dtype = shape, tensor.dtype or self.dtype

    # Small vocabulary the rules share -------------------------------------------------
    def reduce(self, op_type: str, x, axes, keepdims: bool, hint=None):
        axes = [int(a) for a in axes]
        # ReduceSum took axes as an input from opset 13, the other reductions from 18.
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, np.array(axes, dtype=np.int64)],
                           {"keepdims": int(keepdims)}, hint)
        return self.op(op_type, [x], {"axes": axes, "keepdims": int(keepdims)}, hint)

    def scaled(self, a, c):
        """Relevance ``a * c``, multiplied out where the parts at ``a`` meet (:class:`Scaled`)."""
        return Scaled(a, c)

    def stabilised_ratio(self, relevance, z, eps: float, hint="s"):
        """``R / (z + eps)``, eps added plainly, not with the sign of z (SPEC.md section 1)."""
        return self.ratio(relevance, self.op("Add", [z, self.scalar(eps)], hint="z_eps"), hint)

    def ratio(self, relevance, z, hint="s"):
        """``R / z`` for a z that is never 0. Where R is stacked and the product ``a * c``
        of a forward ``a`` (a z-rule's ``R_in`` passed down to the next layer), it is
        ``c * (a / z)``: the division runs once per image instead of once per target (in
        float32; float16's a / z could overflow)."""
        factors = relevance.factors if isinstance(relevance, Relevance) else None
        if (factors is not None and self.is_stacked(relevance) and self.dtype == np.float32
                and self._has_rows(factors[0])):
            a, c = factors
            return self.op("Mul", [c, self.op("Div", [a, z], hint="a_over_z")], hint=hint)
        return self.op("Div", [relevance, z], hint=hint)

    def positive_part(self, weight: gs.Tensor):
        """``W+ = max(W, 0)`` as a Relu of the initializer: ORT folds it once at session load,
        so the file keeps the original's size and no call pays for it."""
        out = self.op("Relu", [weight], hint="w_plus")
        out.shape = weight.shape  # rules derive transposed kernels from it
        return out

    def per_sample_sum(self, x, rank: int, hint="relsum", batch_axis: int = 0):
        axes = [a for a in range(rank) if a != batch_axis]
        return self.reduce("ReduceSum", x, axes, keepdims=False, hint=hint)


def _static_rest(t):
    """The dims after the rows of a stacked tensor, where all are known."""
    shape = getattr(t, "shape", None)
    if not shape or any(not isinstance(d, (int, np.integer)) for d in shape[1:]):
        return None
    return [int(d) for d in shape[1:]]


def _broadcast_rest(operands):
    """The dims after K x N of a broadcasting op on K x N x ... views and forward tensors,
    where every operand's shape is known there; else None."""
    shapes = []
    for t in operands:
        shape = getattr(t, "shape", None)
        if isinstance(t, gs.Variable) and t.is_empty():
            continue
        if shape is None:
            return None
        shapes.append(list(shape))
    rank = max(len(s) for s in shapes)
    tail = [([1] * (rank - len(s)) + s)[2:] for s in shapes]
    if any(not isinstance(d, (int, np.integer)) for s in tail for d in s):
        return None
    return [int(d) for d in np.broadcast_shapes(*[tuple(s) for s in tail])]


def _chain(e: Emitter, parts: list, hint: str):
    # pairwise Adds, not one Sum: ORT's CPU Sum is slower than Add for two inputs
    total = parts[0]  # one part alone keeps what is known of it (a Relevance)
    for part in parts[1:]:
        total = e.op("Add", [total, part], hint=hint)
    return total


def add_all(e: Emitter, parts: list, hint="sum"):
    """The sum of relevance parts, each a tensor, a :class:`Relevance` or a :class:`Scaled`;
    parts scaled by the same activation share one multiplication, whose product is known
    to vanish wherever that activation does."""
    plain, by_activation = [], {}
    for part in parts:
        if isinstance(part, Scaled):
            by_activation.setdefault(id(part.a), (part.a, []))[1].append(part.c)
        else:
            plain.append(part)
    for a, signals in by_activation.values():
        signal = _chain(e, signals, hint="c_sum")
        product = e.op("Mul", [a, signal], hint="r_in")
        _annotate(product, a, e)
        plain.append(Relevance(product, a, factors=(a, signal)))
    return _chain(e, plain, hint)


def _annotate(relevance, tensor, e: Emitter):
    """Give a relevance tensor its forward tensor's shape, batch axis included. ONNX shape
    inference loses the symbolic batch axis at some rules (a Reshape to -1 x ..., a Resize
    by scales), and from there on in every tensor computed from it; ORT then
    cannot prove two relevance tensors equal in shape, keeps Mul out of its NCHWc layout and
    reorders both operands on every call."""
    if isinstance(relevance, Relevance):
        relevance = relevance.tensor
    if isinstance(relevance, gs.Variable) and relevance.shape is None and tensor.shape is not None:
        e.annotate(relevance, tensor)


def _arriving(e: Emitter, node, multi_output: bool, incoming):
    """The relevance at ``node``'s output (each output's, a list, for a multi-output rule;
    None where none arrives), summed over its consumers; None when nothing arrives."""
    outs = node.outputs if multi_output else node.outputs[:1]
    arrived = [incoming.pop(out.name, []) for out in outs]
    if not any(arrived):
        return None
    e.scope = f"lrp/{node.name}"
    relevance = [add_all(e, parts, hint="fan_in") if parts else None for parts in arrived]
    for r, out in zip(relevance, outs):
        if r is not None:
            _annotate(r, out, e)
    return relevance if multi_output else relevance[0]


def emit_relevance(facts, matches, e: Emitter, start, probes=None, stop=None, record=None):
    """Propagate ``start`` (relevance at ``facts.logits``) down to the image, or to the
    tensor ``stop`` (Grad-CAM's feature map, Integrated Gradients' path inputs).

    ``probes``, when a list, receives (node, relevance at output, {input: relevance}) for
    every non-trivial rule, for the conservation outputs. ``record``, when a dict of node
    names, receives the relevance arriving at each of those nodes' outputs.
    """
    target = stop if stop is not None else facts.image
    incoming = defaultdict(list)
    incoming[facts.logits.name].append(start)
    for match in matches:  # already in reverse topological order
        node = match.node
        if node.outputs[0] is target:
            break  # every consumer of ``target`` came before its producer
        relevance = _arriving(e, node, match.rule.multi_output, incoming)
        if relevance is None:
            continue
        if record is not None and node.name in record:
            record[node.name] = relevance
        sent = match.rule.emit(node, relevance, e, facts)
        for index, r in sent.items():
            if probes is not None and isinstance(r, Scaled):
                sent[index] = r = add_all(e, [r])  # the probe sums it
            if not isinstance(r, Scaled):  # a Scaled's c may broadcast: its product is annotated
                _annotate(r, node.inputs[index], e)
            incoming[node.inputs[index].name].append(r)
        if probes is not None and any(r is not relevance for r in sent.values()):
            probes.append((node, relevance, sent))
    e.scope = "lrp/input"
    parts = incoming.pop(target.name, [])
    if not parts:
        raise AssertionError("relevance did not reach the image")  # assign_rules checks this
    return tensor_of(add_all(e, parts, hint="relevance"))


def tensor_of(relevance):
    """The graph tensor of a relevance value."""
    return relevance.tensor if isinstance(relevance, Relevance) else relevance
