"""Score-CAM (Wang et al. 2020) as pytorch-grad-cam computes it, inside the explainer graph.

For each channel k of the feature map A (the Grad-CAM layer): upsample A_k to the input
size (bilinear, align_corners), min-max normalise it to a mask M_k, run the model on
``x * M_k``, and take the target's logit s_k. Weights ``softmax_k(s)``;
``cam = ReLU(sum_k w_k A_k)``, upsampled bilinearly (half-pixel) to the input.

The N*K masked images run through a copy of the forward graph inside a Scan, in chunks of
``CHUNK`` images, so memory stays that of one chunk. The copy reads the model's weights from
the outer graph: the file does not grow.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx

CHUNK = 16


def emit_masks(e, facts, cam_layer):
    """The masked images, N*K x C x H x W, grouped as chunks x CHUNK x C x H x W, and a
    placeholder for the logits of every masked image (filled in by ``insert_scan``)."""
    image = facts.image
    channels = int(cam_layer.shape[1])
    if channels % CHUNK:
        raise ValueError(f"Score-CAM needs the feature map's channels ({channels}) to be a multiple of {CHUNK}")
    height, width = [int(d) for d in image.shape[2:4]]
    e.scope = "lrp/scorecam"
    sizes = e.op("Concat", [e.op("Slice", [e.op("Shape", [cam_layer]), np.array([0], np.int64), np.array([2], np.int64)]),
                            np.array([height, width], np.int64)], {"axis": 0}, hint="sizes")
    up = e.op("Resize", [cam_layer, None, None, sizes], {"mode": "linear",
                                                         "coordinate_transformation_mode": "align_corners"}, hint="up")
    lo = e.reduce("ReduceMin", up, [2, 3], keepdims=True, hint="min")
    hi = e.reduce("ReduceMax", up, [2, 3], keepdims=True, hint="max")
    masks = e.op("Div", [e.op("Sub", [up, lo]), e.op("Add", [e.op("Sub", [hi, lo]), e.scalar(1e-8)])], hint="masks")
    masked = e.op("Mul", [e.op("Unsqueeze", [image, np.array([1], np.int64)]),
                          e.op("Unsqueeze", [masks, np.array([2], np.int64)])], hint="masked")  # N, K, C, H, W
    shape = [int(d) for d in image.shape[1:]]
    chunks = e.op("Reshape", [masked, np.array([-1, CHUNK] + shape, np.int64)], hint="chunks")
    logits = e.op("Identity", [chunks], hint="all_logits")  # becomes the Scan
    return chunks, logits, channels


def weights_and_cam(e, facts, cam_layer, all_logits, channels, target):
    """``target``: int64[N], or int64[N, K] for K targets, whose K cams come out stacked
    (K*N rows, emit.py): the masked passes are the same for every target."""
    classes = int(facts.head.shape[1])
    k = e.targets
    per_image = e.op("Reshape", [all_logits, np.array([-1, channels, classes], np.int64)], hint="per_image")
    index = e.op("Expand", [e.op("Reshape", [target, np.array([-1, 1, k], np.int64)]),
                            e.op("Concat", [e.op("Slice", [e.op("Shape", [per_image]), np.array([0], np.int64),
                                                           np.array([2], np.int64)]),
                                            np.array([k], np.int64)], {"axis": 0})], hint="target_index")
    scores = e.op("GatherElements", [per_image, index], {"axis": 2}, hint="scores")  # N, channels, K
    weights = e.op("Softmax", [scores], {"axis": 1}, hint="weights")
    if k == 1:
        weights = e.op("Unsqueeze", [weights, np.array([3], np.int64)], hint="weights4")  # N, channels, 1, 1
    else:  # K*N, channels, 1, 1: stacked
        weights = e.op("Transpose", [weights], {"perm": [2, 0, 1]}, hint="weights_k")
        weights = e.stack(e.op("Reshape", [weights, np.array([-1, channels, 1, 1], np.int64)], hint="weights4"))
    return e.op("Relu", [e.reduce("ReduceSum", e.op("Mul", [weights, cam_layer]), [1], keepdims=True)], hint="cam")


def cam_to_image(e, facts, cam):
    """N x 1 x h x w -> N x H x W, bilinear with half-pixel centres (cv2.resize's): how
    Grad-CAM and Score-CAM bring their map to the input's size."""
    height, width = [int(d) for d in facts.image.shape[2:4]]
    batch = e.op("Slice", [e.op("Shape", [cam]), np.array([0], np.int64), np.array([1], np.int64)], hint="batch")
    sizes = e.op("Concat", [batch, np.array([1, height, width], np.int64)], {"axis": 0}, hint="sizes")
    up = e.op("Resize", [cam, None, None, sizes], {"mode": "linear"}, hint="cam_up")
    return e.op("Reshape", [up, e.op("Concat", [batch, np.array([height, width], np.int64)], {"axis": 0})],
                hint="cam_map")


def insert_scan(model: onnx.ModelProto, forward: onnx.ModelProto, image: str, chunks: str, placeholder: str):
    """Replace the placeholder ``Identity(chunks)`` by a Scan whose body is ``forward``
    (the canonical model) run on one chunk; every tensor of the copy is renamed so that
    it does not clash with the outer graph, the weights are read from it."""
    graph = model.graph
    fwd = forward.graph
    outer = {t.name for t in fwd.initializer}
    prefix = "scorecam/"

    def rename(name):
        if not name or name in outer:
            return name
        return prefix + name

    body_nodes = []
    for node in fwd.node:
        n = copy.deepcopy(node)
        n.input[:] = [prefix + "chunk" if x == image else rename(x) for x in n.input]
        n.output[:] = [rename(x) for x in n.output]
        n.name = prefix + n.name
        body_nodes.append(n)
    head = rename(fwd.output[0].name)
    elem = fwd.input[0].type.tensor_type.elem_type
    body = onnx.helper.make_graph(
        body_nodes, "scorecam_forward",
        [onnx.helper.make_tensor_value_info(prefix + "chunk", elem, None)],
        [onnx.helper.make_tensor_value_info(head, fwd.output[0].type.tensor_type.elem_type, None)])
    position, old = next((i, n) for i, n in enumerate(graph.node) if placeholder in n.output)
    scan = onnx.helper.make_node("Scan", [chunks], [placeholder], name="lrp/scorecam/scan",
                                 num_scan_inputs=1, body=body)
    del graph.node[position]
    graph.node.insert(position, scan)
