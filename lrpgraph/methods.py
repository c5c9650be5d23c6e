"""Explanation methods as small objects, and the one table of their names.

A method says which composite (rules/composites.py) its backward pass runs on and has
hooks for what it does around that pass (Integrated Gradients' path of images, Grad-CAM's
stop at the feature map, Score-CAM's masked forward passes):

    composite(config, facts)    -> the rule set of the backward pass (facts: the graph's)
    prepare(graph, config)      -> reshape the forward graph before it is read (IG's path)
    scores(ctx), repeat(config) -> the model's answer per image where the forward runs more
                                   rows, and how many rows per image (IG)
    start                       -> "relevance" (Config.start: probability or logit) or
                                   "gradient" (the one-hot of the target)
    stop(ctx)                   -> the tensor the backward pass ends at (default: the image)
    attribute(ctx), finish(...) -> the pass and what follows it: relevance at the image, or
                                   a map (the CAMs)
    finalise(model, forward)    -> after export (Score-CAM's Scan)

``ctx`` (:class:`Pass`) is what the hooks see: the emitter, the graph facts, the matched
rules, the start, the config, and the tensor ``prepare`` returned.

config.METHOD_NAMES maps every name that ``build --method``, ``eval --methods`` and the API
accept to one of these methods and the Config fields the name implies: one name means one
thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np
import onnx_graphsurgeon as gs

from . import scorecam
from .config import Config, Preprocess
from .emit import emit_relevance, tensor_of
from .errors import LrpGraphError
from .match import toposort
from .rules import composites


@dataclass
class Attribution:
    relevance: object = None  # N x C x H x W at the image, or None (the CAMs)
    cam: object = None  # N x H x W, the CAMs' map
    probes: list | None = None  # conservation probes of the pass
    tokens: object = None  # relevance at the patch embedding's output (Config.tokens)


@dataclass
class Pass:
    e: object  # emit.Emitter
    facts: object  # match.GraphFacts
    matches: list
    config: Config
    prepared: object = None  # what Method.prepare returned
    start: object = None  # start.Start


class Method:
    name = ""
    start = "relevance"
    half_precision = True

    def composite(self, config: Config, facts=None, preprocess=None):
        return composites.gradient()

    def prepare(self, graph: gs.Graph, config: Config):
        return None

    def scores(self, ctx: Pass):
        return None

    def repeat(self, config: Config) -> int | None:
        return None

    def stop(self, ctx: Pass):
        return ctx.prepared

    def attribute(self, ctx: Pass) -> Attribution:
        probes = [] if ctx.config.conservation else None
        record = _patch_embedding(ctx) if ctx.config.tokens else None
        signal = emit_relevance(ctx.facts, ctx.matches, ctx.e, ctx.start.relevance, probes,
                                stop=self.stop(ctx), record=record)
        tokens = tensor_of(next(iter(record.values()))) if record else None
        return self.finish(ctx, signal, Attribution(probes=probes, tokens=tokens))

    def finish(self, ctx: Pass, signal, out: Attribution) -> Attribution:
        out.relevance = signal
        return out

    def finalise(self, model, forward, ctx: Pass) -> None:
        pass


class LRP(Method):
    """The paper's LRP (SPEC.md section 1) on the ``paper`` composite, or on ``conserving``
    or ``transformer`` (``config.composite``; ``auto``: the one composites.for_graph picks)."""

    name = "lrp"

    def composite(self, config, facts=None, preprocess=None):
        name = composites.for_graph(facts) if config.composite == "auto" else config.composite
        bounds = pixel_bounds(preprocess or Preprocess())
        if name == "transformer":
            return composites.transformer(config.epsilon)
        if name in composites.SEARCH:
            return composites.searched(name, bounds=bounds, eps=config.eps)
        if name == "conserving":
            return composites.conserving(identity_skip=config.identity_skip, split=config.split,
                                         first_layer=config.first_layer, eps=config.eps, bounds=bounds)
        return composites.paper(identity_skip=config.identity_skip, split=config.split, maxpool=config.maxpool,
                                first_layer=config.first_layer, eps=config.eps, bounds=bounds)


def pixel_bounds(pre: Preprocess):
    """The normalised image's range per channel, ``((0 - mean) / std, (1 - mean) / std)``:
    the z^B rule's bounds for pixels in [0, 1]."""
    mean, std = np.asarray(pre.mean, np.float64), np.asarray(pre.std, np.float64)
    return tuple(-mean / std), tuple((1 - mean) / std)


class LRPEpsilon(Method):
    """LRP-epsilon everywhere, as captum computes it."""

    name = "lrp-epsilon"

    def composite(self, config, facts=None, preprocess=None):
        return composites.epsilon(config.epsilon)


class Gradient(Method):
    """The gradient family: ``transform`` turns the gradient at the image into the map."""

    start = "gradient"

    def __init__(self, name, transform=None, guided=False):
        self.name, self.transform, self.guided = name, transform, guided

    def composite(self, config, facts=None, preprocess=None):
        return composites.gradient(guided=self.guided)

    def finish(self, ctx, signal, out):
        ctx.e.scope = "lrp/method"
        out.relevance = self.transform(ctx, signal) if self.transform else signal
        return out


def _saliency(ctx, grad):
    return ctx.e.op("Abs", [grad], hint="saliency")


def _times_input(ctx, grad):
    return ctx.e.op("Mul", [grad, ctx.facts.image], hint="grad_x_input")


class IntegratedGradients(Gradient):
    """The model runs on the straight path from the baseline (0, as captum's default) to
    each image, at the points of ``Config.ig_method``: ``k/steps`` for k = 1..steps (right
    Riemann sum, weights 1/steps) or the Gauss-Legendre nodes mapped to [0, 1] (captum's
    default); the map is the weighted sum of the gradients along the path times the image."""

    def __init__(self):
        super().__init__("ig")

    def repeat(self, config):
        return config.ig_steps

    def prepare(self, graph, config):
        return integration_path(graph, path_points(config)[0])

    def scores(self, ctx):
        # The model ran on N x steps path images; its answer for image n is the last point.
        e, steps = ctx.e, ctx.config.ig_steps
        e.scope = "lrp/ig"
        classes = int(ctx.facts.head.shape[1])
        per_path = e.op("Reshape", [ctx.facts.head, np.array([-1, steps, classes], np.int64)])
        return e.op("Gather", [per_path, np.array(steps - 1, np.int64)], {"axis": 1}, hint="scores")

    def finish(self, ctx, signal, out):
        e, image = ctx.e, ctx.facts.image
        e.scope = "lrp/method"
        shape = [-1, ctx.config.ig_steps] + [int(d) for d in image.shape[1:]]
        per_path = e.op("Reshape", [signal, np.array(shape, np.int64)], hint="grads")
        if ctx.config.ig_method == "riemann-right":  # equal weights: the mean
            mean = e.reduce("ReduceMean", per_path, [1], keepdims=False, hint="mean_grad")
        else:
            weights = path_points(ctx.config)[1].reshape([1, -1] + [1] * (len(shape) - 2))
            weighted = e.op("Mul", [per_path, weights.astype(e.dtype)], hint="weighted_grads")
            mean = e.reduce("ReduceSum", weighted, [1], keepdims=False, hint="mean_grad")
        out.relevance = e.op("Mul", [mean, image], hint="ig")
        return out


def path_points(config) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of the path integral, as captum's approximation methods define them."""
    n = config.ig_steps
    if config.ig_method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * (nodes + 1)).astype(np.float32), (0.5 * weights).astype(np.float32)
    return np.arange(1, n + 1, dtype=np.float32) / n, np.full(n, 1.0 / n, np.float32)


def integration_path(graph: gs.Graph, alphas: np.ndarray):
    """The old image tensor becomes the N*steps batch of path images ``alpha * input``; a
    new ``input`` feeds it. Returns the path tensor (where the backward pass stops)."""
    image = graph.inputs[0]
    if image.shape is None or len(image.shape) < 2:
        raise LrpGraphError("Integrated Gradients needs an input of known rank")
    fed = gs.Variable(image.name, dtype=image.dtype, shape=image.shape)
    image.name = "lrp/ig/path_images"
    steps = len(alphas)
    alphas = alphas.reshape([1, steps] + [1] * (len(image.shape) - 1))
    expanded, scaled = gs.Variable("lrp/ig/expanded"), gs.Variable("lrp/ig/scaled")
    path_shape = np.array([-1] + [d if isinstance(d, int) else -1 for d in image.shape[1:]], np.int64)
    graph.nodes += [
        gs.Node("Unsqueeze", "lrp/ig/expanded", inputs=[fed, gs.Constant("lrp/ig/axis", np.array([1], np.int64))],
                outputs=[expanded]),
        gs.Node("Mul", "lrp/ig/scaled", inputs=[expanded, gs.Constant("lrp/ig/alphas", alphas)], outputs=[scaled]),
        gs.Node("Reshape", "lrp/ig/path", inputs=[scaled, gs.Constant("lrp/ig/path_shape", path_shape)],
                outputs=[image]),
    ]
    image.shape = ["N_path"] + list(image.shape[1:])
    graph.inputs = [fed]
    toposort(graph)
    return image


def _patch_embedding(ctx) -> dict:
    """{name: None} of the one conv next to the image (a transformer's patch embedding),
    for emit_relevance to record the relevance reaching its output."""
    convs = [m.node.name for m in ctx.matches if m.node.op == "Conv" and ctx.facts.is_first_layer(m.node)]
    if len(convs) != 1:
        raise LrpGraphError(f"--tokens: the per-patch map is the relevance at the output of the one "
                            f"conv next to the image (a patch embedding); this graph has {len(convs)} such "
                            "convs. Build without --tokens")
    if ctx.config.method not in ("lrp", "lrp-epsilon"):
        raise LrpGraphError(f"--tokens: a per-patch relevance map needs an LRP method, not {ctx.config.method}")
    if ctx.config.targets is not None or ctx.config.dtype != "float32":
        raise LrpGraphError("--tokens: one target per image and float32 only; drop --targets/--dtype")
    return {convs[0]: None}


def cam_layer(matches):
    """The CAMs' feature map: the input of the spatial pooling nearest the output (after
    its activation: hooked before ReLU6 the maps are all zero, SPEC.md section 4)."""
    for m in matches:
        if m.rule.role == "pool":
            return m.node.inputs[0]
    raise LrpGraphError("Grad-CAM and Score-CAM need a global pooling layer before the classifier; "
                        "none was found")


class GradCAM(Gradient):
    """Grad-CAM: the gradient at the feature map, averaged per channel, weights the map."""

    def __init__(self):
        super().__init__("gradcam")

    def stop(self, ctx):
        return cam_layer(ctx.matches)

    def finish(self, ctx, signal, out):
        e = ctx.e
        e.scope = "lrp/method"
        weights = e.reduce("ReduceMean", signal, [2, 3], keepdims=True, hint="channel_weights")
        cam = e.op("Relu", [e.reduce("ReduceSum", e.op("Mul", [weights, cam_layer(ctx.matches)]), [1],
                                     keepdims=True)], hint="cam")
        out.cam = scorecam.cam_to_image(e, ctx.facts, cam)
        return out


class ScoreCAM(Gradient):
    """Score-CAM: forward passes only, on the image masked by each feature map channel
    (scorecam.py); no backward pass."""

    half_precision = False

    def __init__(self):
        super().__init__("scorecam")

    def attribute(self, ctx):
        layer = cam_layer(ctx.matches)
        chunks, all_logits, channels = scorecam.emit_masks(ctx.e, ctx.facts, layer)
        cam = scorecam.weights_and_cam(ctx.e, ctx.facts, layer, all_logits, channels, ctx.start.chosen)
        # what finalise needs to put the Scan in place of the placeholder, after export
        ctx.prepared = (ctx.facts.image.name, chunks.name, all_logits.name)
        return Attribution(cam=scorecam.cam_to_image(ctx.e, ctx.facts, cam))

    def finalise(self, model, forward, ctx):
        image, chunks, logits = ctx.prepared
        scorecam.insert_scan(model, forward, image, chunks, logits)


METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in (
    LRP(), LRPEpsilon(), Gradient("gradient", _saliency), Gradient("gradxinput", _times_input),
    Gradient("guided-bp", guided=True), IntegratedGradients(), GradCAM(), ScoreCAM())})


def method(name: str) -> Method:
    """The method object of a Config's ``method`` (config.METHOD_NAMES resolves the other
    names to these)."""
    return METHODS[name]
