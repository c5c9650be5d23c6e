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


class Emitter:
    """Builds nodes into a graphsurgeon graph with unique, readable names under ``lrp/``."""

    def __init__(self, graph: gs.Graph, opset: int, dtype=np.float32, eps: float = 1e-5):
        self.graph = graph
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.eps = self.dtype.type(eps)
        # A stand-in for 0 that no activation reaches, where one is representable (the ratio
        # split uses it instead of Equal + Where); float16 has none, as its subnormals are
        # activation-sized and flushed on some devices.
        self.tiny = self.dtype.type(1e-30) if self.dtype == np.float32 else None
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

    def stabilised_ratio(self, relevance, z, hint="s"):
        """``R / (z + eps)``, eps added plainly, not with the sign of z (SPEC.md section 1)."""
        return self.op("Div", [relevance, self.op("Add", [z, self.scalar(self.eps)], hint="z_eps")],
                       hint=hint)

    def positive_part(self, weight: gs.Tensor):
        """``W+ = max(W, 0)`` as a Relu of the initializer: ORT folds it once at session load,
        so the file keeps the original's size and no call pays for it."""
        out = self.op("Relu", [weight], hint="w_plus")
        out.shape = weight.shape  # rules derive transposed kernels from it
        return out

    def per_sample_sum(self, x, rank: int, hint="relsum"):
        return self.reduce("ReduceSum", x, list(range(1, rank)), keepdims=False, hint=hint)


def add_all(e: Emitter, parts: list, hint="sum"):
    if len(parts) == 1:
        return parts[0]
    return e.op("Sum", parts, hint=hint)


def _annotate(relevance, tensor, e: Emitter):
    """Give a relevance tensor its forward tensor's shape, batch axis included. ONNX shape
    inference loses the symbolic batch axis at some rules (a Reshape to -1 x ..., a Resize
    by scales), and from there on in every tensor computed from it; ORT then
    cannot prove two relevance tensors equal in shape, keeps Mul out of its NCHWc layout and
    reorders both operands on every call."""
    if isinstance(relevance, gs.Variable) and relevance.shape is None and tensor.shape is not None:
        relevance.shape = list(tensor.shape)
        relevance.dtype = relevance.dtype or e.dtype


def emit_relevance(facts, matches, e: Emitter, start, config, probes=None, stop=None):
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
        sent = match.rule.emit(node, relevance, e, facts, config)
        for index, r in sent.items():
            _annotate(r, node.inputs[index], e)
            incoming[node.inputs[index].name].append(r)
        if probes is not None and any(r is not relevance for r in sent.values()):
            probes.append((node, relevance, sent))
    e.scope = "lrp/input"
    parts = incoming.pop(target.name, [])
    if not parts:
        raise AssertionError("relevance did not reach the image")  # assign_rules checks this
    return add_all(e, parts, hint="relevance")
