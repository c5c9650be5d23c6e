"""The one way lrpgraph opens a model in ONNX Runtime: explain, eval, check and the Ray
actors all come here. The provider is chosen by name (``auto``: CUDA where onnxruntime-gpu
works, else the CPU); CPU sessions get the layout pass of cpu_layout.py; a CUDA provider
that fails to start falls back to the CPU with a warning.

A model is a path, serialized bytes or an ``onnx.ModelProto`` (built in memory: no file).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx

from .errors import LrpGraphError

PROVIDERS = ("auto", "cuda", "cpu")


def providers(provider: str) -> list[str]:
    """ORT's provider list for ``auto``, ``cuda`` or ``cpu``."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise LrpGraphError(f"--provider {provider}: choose auto, cuda or cpu")
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        if hasattr(ort, "preload_dlls"):
            try:  # CUDA/cuDNN from the nvidia-* wheels, without LD_LIBRARY_PATH
                ort.preload_dlls()
            except Exception:
                pass
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "cuda":
        warnings.warn("CUDA was asked for, but this onnxruntime has no CUDA provider; running on the "
                      "CPU (for CUDA: pip uninstall onnxruntime && pip install -e '.[gpu]', see README)",
                      stacklevel=3)
    return ["CPUExecutionProvider"]


def open_model(model, provider: str = "auto", threads: int | None = None, cpu_layout: bool = True):
    """An ORT session for ``model`` with every graph optimization on."""
    import onnxruntime as ort

    from .cpu_layout import cpu_session, open_session

    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    where = "the model" if isinstance(model, bytes) else os.fspath(model)

    def configure(opts):
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads

    chosen = providers(provider)
    try:
        return open_session(model, chosen, configure, layout=cpu_layout)
    except Exception as exc:
        if chosen[0] != "CUDAExecutionProvider":
            raise LrpGraphError(f"{where}: onnxruntime cannot load it ({exc})") from None
        warnings.warn(f"CUDA provider failed to start ({exc}); running on the CPU", stacklevel=2)
        return cpu_session(model if isinstance(model, bytes) else os.fspath(model), configure,
                           layout=cpu_layout)


def predicted_targets(session, feeds: dict) -> dict:
    """``feeds`` with ``target`` (or ``targets``) set to -1, "the predicted class", where
    the explainer takes one and none is given: the portable explainer's target is a plain
    input that every runtime requires (start.target_input)."""
    n = len(next(iter(feeds.values())))
    missing = [i for i in session.get_inputs() if i.name in ("target", "targets") and i.name not in feeds
               and not i.type.startswith("optional")]  # built before target became plain
    return {**feeds, **{i.name: np.full((n, *i.shape[1:]), -1, np.int64) for i in missing}}


def probabilities(scores: np.ndarray, softmax_head: bool) -> np.ndarray:
    """Class probabilities from a model's output: itself if the model ends in Softmax."""
    if softmax_head:
        return scores
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
