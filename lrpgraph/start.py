"""Where the relevance pass starts: the target (given, or the predicted class) and the
relevance at the logits; and the optional ``target`` input that feeds it.

SPEC.md section 1: the target's probability, 0 elsewhere (a model that ends in Softmax
gives it itself); ``start="logit"`` starts from the target's logit; the gradient methods
start from the one-hot of the target (d target logit / d logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .errors import LrpGraphError


@dataclass
class Start:
    relevance: object  # N x classes (K*N x classes for K targets), at facts.logits
    chosen: object  # int64[N] (int64[N, K] for K targets), the classes explained (target_used)
    given: object  # the placeholder that target_input points at the fed target
    onehot: object  # as relevance


def start_relevance(e, facts, kind: str, scores=None, repeat=None, targets=None) -> Start:
    """``kind``: ``probability``, ``logit`` or ``gradient``. The target is the caller's, or
    the predicted class where none was fed (the ``given`` placeholder reads the ``target``
    input instead, see target_input); a negative entry also means "the predicted class". ``scores``
    replace the model's output for that choice (IG: the scores of the image itself);
    ``repeat`` gives each image that many rows (IG's path points). ``targets`` (K): K
    classes per image, int64[N, K], a negative entry meaning the k-th most probable class;
    the start then has K*N rows, target-major, stacked (emit.py)."""
    e.scope = "lrp/start"
    head, logits = facts.head, facts.logits
    classes = class_count(head)
    scores = head if scores is None else scores
    chosen, given, rows = (_top_k(e, scores, targets) if targets is not None else _top_1(e, scores))
    # Equal against 0..classes-1, not OneHot: TensorRT's 8.x parsers have no OneHot
    hit = e.op("Equal", [e.op("Unsqueeze", [rows, np.array([1], np.int64)]), np.arange(classes, dtype=np.int64)])
    onehot = e.op("Cast", [hit], {"to": onnx.helper.np_dtype_to_tensor_dtype(np.dtype(e.dtype))}, hint="onehot")
    if repeat:  # one row per path point of each image (IG)
        onehot = e.op("Tile", [e.op("Unsqueeze", [onehot, np.array([1], np.int64)]),
                               np.array([1, repeat, 1], np.int64)])
        onehot = e.op("Reshape", [onehot, np.array([-1, classes], np.int64)], hint="onehot_path")
    if kind == "gradient":
        return Start(onehot, chosen, given, onehot)
    if kind == "logit":
        value = logits
    elif head is not logits:
        value = head  # the model's own Softmax
    else:
        value = e.op("Softmax", [logits], {"axis": -1}, hint="probability")
    return Start(e.op("Mul", [value, onehot], hint="relevance"), chosen, given, onehot)


def _top_1(e, scores):
    predicted = e.op("ArgMax", [scores], {"axis": 1, "keepdims": 0}, hint="predicted")
    given = e.op("Identity", [predicted], hint="given")
    use_predicted = e.op("Less", [given, np.array(0, dtype=np.int64)], hint="no_target")
    chosen = e.op("Where", [use_predicted, predicted, given], hint="target")
    return chosen, given, chosen


def _top_k(e, scores, k: int):
    """(targets N x K, the placeholder, the K*N targets of the stacked rows)."""
    ranked = e.op("TopK", [scores, np.array([k], np.int64)], {"axis": 1}, hint="ranked", outputs=2)[1]
    given = e.op("Identity", [ranked], hint="given")
    use_ranked = e.op("Less", [given, np.array(0, dtype=np.int64)], hint="no_target")
    chosen = e.op("Where", [use_ranked, ranked, given], hint="targets")
    rows = e.op("Reshape", [e.op("Transpose", [chosen], {"perm": [1, 0]}), np.array([-1], np.int64)],
                hint="target_rows")
    return chosen, given, e.stack(rows)


def class_count(head) -> int:
    if head.shape is None or len(head.shape) != 2 or not isinstance(head.shape[1], (int, np.integer)):
        raise LrpGraphError(
            f"output {head.name!r} has shape {head.shape}; lrpgraph needs class scores of "
            "shape N x classes with a known number of classes."
        )
    return int(head.shape[1])


def target_input(graph: onnx.GraphProto, given: str, name: str = "target", shape=("N",)) -> None:
    """Make ``name`` (``target`` int64[N], or ``targets`` int64[N, K]) a plain input that
    the placeholder ``given = Identity(predicted)`` reads instead; -1 means the predicted
    (k-th most probable) class. Plain, not optional, nor an initializer default, because
    OpenVINO has no Optional ops, TensorRT no If, onnxruntime-web requires every input
    anyway, and a default initializer is frozen into a constant by OpenVINO and TensorRT
    (a fed target silently ignored) and makes ORT warn at every session start."""
    o = onnx.helper
    placeholder = next(n for n in graph.node if given in n.output)
    graph.input.append(o.make_tensor_value_info(name, onnx.TensorProto.INT64, list(shape)))
    placeholder.input[0] = name
