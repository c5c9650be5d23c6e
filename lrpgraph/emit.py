"""Emit the relevance graph beside the forward graph.

Nodes are visited in reverse topological order; each rule turns the relevance at a node's
output into relevance at its inputs; where a tensor fans out (a block input feeding both
the residual branch and the skip), the contributions of all consumers are summed.
Everything the rules read from the forward pass is a forward tensor: nothing is
recomputed.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_graphsurgeon as gs

from .rules.base import Relevance, Scaled


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
        ins = []
        for t in inputs:
            if isinstance(t, Relevance):
                t = t.tensor
            if t is None:
                ins.append(gs.Variable.empty())
            elif isinstance(t, gs.Tensor):
                ins.append(t)
            else:
                ins.append(self.const(t, "c"))
        name = self._name(hint or op_type)
        outs = [gs.Variable(name if outputs == 1 else f"{name}:{i}", dtype=dtype)
                for i in range(outputs)]
        self.graph.nodes.append(gs.Node(op_type, name=name, attrs=dict(attrs or {}),
                                        inputs=ins, outputs=outs))
        return outs[0] if outputs == 1 else outs

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
        return self.op("Div", [relevance, self.op("Add", [z, self.scalar(eps)], hint="z_eps")],
                       hint=hint)

    def positive_part(self, weight: gs.Tensor):
        """``W+ = max(W, 0)`` as a Relu of the initializer: ORT folds it once at session load,
        so the file keeps the original's size and no call pays for it."""
        out = self.op("Relu", [weight], hint="w_plus")
        out.shape = weight.shape  # rules derive transposed kernels from it
        return out

    def per_sample_sum(self, x, rank: int, hint="relsum"):
        return self.reduce("ReduceSum", x, list(range(1, rank)), keepdims=False, hint=hint)


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
        plain.append(Relevance(product, a))
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
        relevance.shape = list(tensor.shape)
        relevance.dtype = relevance.dtype or e.dtype


def emit_relevance(facts, matches, e: Emitter, start, probes=None, stop=None):
    """Propagate ``start`` (relevance at ``facts.logits``) down to the image, or to the
    tensor ``stop`` (Grad-CAM's feature map, Integrated Gradients' path inputs).

    ``probes``, when a list, receives (node, relevance at output, {input: relevance}) for
    every non-trivial rule, for the conservation outputs.
    """
    target = stop if stop is not None else facts.image
    incoming = defaultdict(list)
    incoming[facts.logits.name].append(start)
    for match in matches:  # already in reverse topological order
        node = match.node
        if node.outputs[0] is target:
            break  # every consumer of ``target`` came before its producer
        parts = incoming.pop(node.outputs[0].name, [])
        if not parts:
            continue
        e.scope = f"lrp/{node.name}"
        relevance = add_all(e, parts, hint="fan_in")
        _annotate(relevance, node.outputs[0], e)
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
