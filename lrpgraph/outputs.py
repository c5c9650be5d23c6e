"""The explainer's outputs, assembled in one place: ``logits`` (the model's own answer),
``relevance_map`` (N x H x W, channel-summed), ``target_used``, and on request
``relevance`` (N x C x H x W), ``relevance_map_hq`` (Heat Quantization) and the
conservation sums ``relsum/...``. Relevance of a float16 pass is cast and scaled back to
the true start here.

With K targets per image (``Config.targets``) the maps are ``relevance_maps`` N x K x H x W
and ``relevance_maps_hq``, the classes ``targets_used`` N x K, ``relevance`` N x K x C x H x W
and each ``relsum/...`` N x K: the stacked K*N rows of the pass (emit.py), per image."""

from __future__ import annotations

import numpy as np
import onnx

from .emit import add_all


class Outputs:
    def __init__(self, e, facts, channel_axis: int, per_image=None, targets=None):
        self.e, self.facts, self.channel_axis, self.per_image = e, facts, channel_axis, per_image
        self.targets = targets
        self.tensors = []
        image = facts.image
        self.batch = (image.shape or ["N"])[0]
        self.spatial = [d for i, d in enumerate(image.shape[1:], start=1) if i != channel_axis]
        self.k = [] if targets is None else [targets]  # the K axis of per-image outputs
        self.plural = "" if targets is None else "s"

    def per_target(self, t, rank):
        """A stacked tensor (K*N x ...) as N x K x ...; as it is for one target per image."""
        if self.targets is None:
            return t
        e = self.e
        if e.targets == 1:
            return e.op("Unsqueeze", [t, np.array([1], np.int64)], hint="per_image")
        return e.op("Transpose", [e.view_rows(t)], {"perm": [1, 0] + list(range(2, rank + 1))}, hint="per_image")

    def add(self, tensor, name, shape, dtype=np.float32):
        if tensor in self.tensors or tensor is self.facts.image:
            tensor = self.e.op("Identity", [tensor], hint=name)
        tensor.name, tensor.dtype, tensor.shape = name, dtype, shape
        self.tensors.append(tensor)
        return tensor

    def float32(self, t, rank):
        """A relevance-valued tensor as float32, scaled back to the true start."""
        if self.per_image is None:
            return t
        e = self.e
        t = e.op("Cast", [t], {"to": onnx.TensorProto.FLOAT})
        factor = e.op("Reshape", [self.per_image, np.array([-1] + [1] * (rank - 1), np.int64)])
        return e.op("Mul", [t, factor])

    def half(self):
        return self.per_image is not None


def assemble(e, facts, config, start, attribution, channel_axis, scores=None, per_image=None,
             start_sum=None) -> list:
    """Every output tensor of the explainer, named and typed, in order."""
    out = Outputs(e, facts, channel_axis, per_image, config.targets)
    e.scope = "lrp/output"
    head = scores if scores is not None else facts.head
    if out.half():
        head = e.op("Cast", [head], {"to": onnx.TensorProto.FLOAT})
    if head is not facts.head:
        facts.head.name += "/model"  # the output below takes its name
    out.add(head, "logits", list(facts.head.shape))
    relevance = attribution.relevance
    if attribution.cam is not None:
        alpha = e.op("Cast", [attribution.cam], {"to": onnx.TensorProto.FLOAT}) if out.half() else attribution.cam
    else:
        relevance = out.float32(relevance, len(facts.image.shape))
        alpha = e.op("ReduceSum", [relevance, np.array([channel_axis], dtype=np.int64)],
                     {"keepdims": 0}, hint="map")
    maps = [out.batch] + out.k + out.spatial
    out.add(out.per_target(alpha, 3), f"relevance_map{out.plural}", maps)
    out.add(start.chosen, f"target{out.plural}_used", [out.batch] + out.k, np.int64)
    if config.full_relevance and attribution.cam is None:
        image = list(facts.image.shape)
        out.add(out.per_target(relevance, len(image)), "relevance", image[:1] + out.k + image[1:])
    if config.hq_levels:
        out.add(out.per_target(heat_quantize(e, alpha, config.hq_levels), 3), f"relevance_map{out.plural}_hq", maps)
    if attribution.tokens is not None:
        grid = [d for d in attribution.tokens.shape[2:]] if attribution.tokens.shape else ["h", "w"]
        tokens = e.op("ReduceSum", [attribution.tokens, np.array([1], np.int64)], {"keepdims": 0}, hint="tokens")
        out.add(tokens, "relevance_tokens", [out.batch] + grid)
    if attribution.probes is not None:
        _conservation(out, start, attribution.probes, relevance, start_sum)
    return out.tensors


def _conservation(out, start, probes, relevance, start_sum):
    """Per-sample relevance sums at the start, entering and leaving every probed rule, and
    at the image: what ``lrpgraph check`` reads."""
    e, facts = out.e, out.facts
    e.scope = "lrp/conservation"
    shape = [out.batch] + out.k

    def add(total, name):
        out.add(out.per_target(total, 1), name, shape)

    def summed(r, t):
        return e.per_sample_sum(r, len(t.shape), batch_axis=_batch_axis(t, out.batch))

    add(start_sum if out.half() else e.per_sample_sum(start.relevance, 2), "relsum/start")
    for node, r_out, sent in probes:
        outs = r_out if isinstance(r_out, list) else [r_out]  # a list: each output's (Split)
        tensors = [t for r, t in zip(outs, node.outputs) if r is not None] + [node.inputs[i] for i in sent]
        if any(_batch_axis(t, out.batch) is None for t in tensors):
            continue  # the batch merged into another axis ([tokens * N, C]): no per-image sums
        r_out = add_all(e, [summed(r, t) for r, t in zip(outs, node.outputs) if r is not None])
        add(out.float32(r_out, 1), f"relsum/{node.name}/out")
        r_in = [summed(r, node.inputs[i]) for i, r in sent.items()]
        add(out.float32(add_all(e, r_in), 1), f"relsum/{node.name}/in")
    if relevance is not None:  # the CAMs stop at their feature map: nothing reaches the image
        add(e.per_sample_sum(relevance, len(facts.image.shape)), "relsum/input")


def _batch_axis(t, batch) -> int:
    """Where ``t`` keeps the batch: the axis of the image's symbolic batch dimension (a
    transformer's sequence-first tensors have it second), the first for a static batch;
    None where the batch is merged into another axis."""
    shape = list(t.shape or [])
    if not isinstance(batch, str):
        return 0
    return shape.index(batch) if shape.count(batch) == 1 else None


def heat_quantize(e, alpha, levels: int):
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
