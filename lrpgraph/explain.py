"""Run an explainer: images in, prediction and heatmap out, on ORT's CUDA or CPU provider.

    from lrpgraph import Explainer
    ex = Explainer("resnet50.lrp.onnx")            # provider="auto": CUDA if it works, else CPU
    result = ex.explain(["cat.jpg", pil_image, hwc_uint8_array])
    result.heatmaps, result.classes, result.probabilities
    result.save("out/")

Needs onnxruntime, numpy and Pillow; matplotlib only to write PNGs. No PyTorch.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_path
from .config import Preprocess
from .errors import LrpGraphError
from .preprocess import ImageError, find_images, prepare

RESULTS = "results.jsonl"


def imagenet_class_names() -> list[str]:
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_classes.txt")
    with open(path, encoding="utf-8") as fh:
        return fh.read().splitlines()


def heat_quantize(alpha: np.ndarray, levels: int = 8) -> np.ndarray:
    """SPEC.md Heat Quantization per image (N x H x W): edges linspace(min, max, L); values
    in [e_i, e_i+1) become e_i; the maximum keeps its value."""
    out = np.empty_like(alpha)
    for i, a in enumerate(alpha):
        edges = np.linspace(a.min(), a.max(), levels).astype(a.dtype)
        idx = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, levels - 1)
        out[i] = np.where(a == a.max(), a.max(), edges[idx])
    return out


def probabilities(scores: np.ndarray, softmax_head: bool) -> np.ndarray:
    """Class probabilities from a model's output: itself if the model ends in Softmax."""
    if softmax_head:
        return scores
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def append_results(folder, lines) -> None:
    """Add lines to ``folder``/results.jsonl and make them durable before going on."""
    with open(os.path.join(folder, RESULTS), "a", encoding="utf-8") as fh:
        fh.writelines(lines)
        fh.flush()
        os.fsync(fh.fileno())


def _providers(provider: str):
    import onnxruntime as ort

    if provider not in ("auto", "cuda", "cpu"):
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
        warnings.warn("CUDA was asked for but this onnxruntime has no CUDAExecutionProvider "
                      "(pip install lrpgraph[gpu]); running on the CPU", stacklevel=3)
    return ["CPUExecutionProvider"]


@dataclass
class Result:
    names: list
    heatmaps: np.ndarray  # N x H x W relevance_map
    classes: np.ndarray  # predicted class per image
    probabilities: np.ndarray  # probability of the predicted class
    targets: np.ndarray  # the class each heatmap explains
    target_probabilities: np.ndarray
    relevance_sums: np.ndarray
    heatmaps_hq: np.ndarray | None = None
    crops: list = field(default_factory=list)  # the RGB pictures the heatmaps lie on
    class_names: list | None = None
    sources: list = field(default_factory=list)

    def __len__(self):
        return len(self.names)

    def record(self, i: int) -> dict:
        rec = {"name": self.names[i], "file": self.sources[i] if self.sources else None,
               "class": int(self.classes[i]), "probability": float(self.probabilities[i]),
               "target": int(self.targets[i]), "target_probability": float(self.target_probabilities[i]),
               "relevance_sum": float(self.relevance_sums[i])}
        if self.class_names:
            rec["class_name"] = self.class_names[rec["class"]]
            if 0 <= rec["target"] < len(self.class_names):
                rec["target_name"] = self.class_names[rec["target"]]
        return rec

    def save(self, folder, cmap: str = "jet", alpha: float = 0.5) -> None:
        """Per image ``name.npy``, ``name.png`` (colour-mapped) and ``name_overlay.png``,
        each written atomically, then one line per image appended to results.jsonl."""
        self.save_files(folder, cmap, alpha)
        append_results(folder, [json.dumps(self.record(i)) + "\n" for i in range(len(self))])

    def save_files(self, folder, cmap: str = "jet", alpha: float = 0.5) -> None:
        """The per-image files of ``save``, without results.jsonl (Ray workers write these;
        the driver merges the jsonl). Images are written in parallel: PNG encoding, not the
        explainer, bounds throughput on a GPU, and zlib releases the GIL."""
        os.makedirs(folder, exist_ok=True)
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(self.names)))) as pool:
            # list(): re-raise the first failure here rather than lose it in the pool
            list(pool.map(lambda i: self._save_one(folder, i, cmap, alpha), range(len(self.names))))

    def _save_one(self, folder, i, cmap, alpha):
        heat = self.heatmaps_hq[i] if self.heatmaps_hq is not None else self.heatmaps[i]
        base = os.path.join(folder, self.names[i])
        os.makedirs(os.path.dirname(base), exist_ok=True)
        with atomic_path(base + ".npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, heat)
        colour = colourise(heat, cmap)
        _save_png(colour, base + ".png")
        if self.crops:
            # Weight by |relevance| so that the photo shows where nothing is relevant.
            weight = alpha * np.sqrt(np.abs(heat) / (np.abs(heat).max() or 1.0))[..., None]
            blend = (1 - weight) * self.crops[i] + weight * colour
            _save_png(blend.round().astype(np.uint8), base + "_overlay.png")


def colourise(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """H x W x 3 uint8. Non-negative maps span [0, max]; signed maps are centred at 0 so
    that negative evidence reads as such."""
    from matplotlib import colormaps

    scale = float(np.abs(heat).max()) or 1.0
    if heat.min() >= 0:
        v = heat / scale
    else:
        v = 0.5 + 0.5 * heat / scale
        cmap = "seismic" if cmap == "jet" else cmap
    return (colormaps[cmap](np.clip(v, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def _save_png(array: np.ndarray, path: str) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


class Explainer:
    """An explainer model in an ORT session, with the preprocessing recorded at build."""

    def __init__(self, model_path, provider: str = "auto", preprocess: Preprocess | None = None,
                 threads: int | None = None, cpu_layout: bool = True):
        import onnxruntime as ort

        from .cpu_layout import cpu_session, open_session

        if not os.path.isfile(model_path):
            raise LrpGraphError(f"{model_path}: no such explainer model (build one with lrpgraph build)")

        def configure(opts):
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                opts.intra_op_num_threads = threads

        providers = _providers(provider)
        try:
            self.session = open_session(model_path, providers, configure, layout=cpu_layout)
        except Exception as exc:
            if providers[0] != "CUDAExecutionProvider":
                raise LrpGraphError(f"{model_path}: onnxruntime cannot load it ({exc})") from None
            warnings.warn(f"CUDA provider failed to start ({exc}); running on the CPU", stacklevel=2)
            self.session = cpu_session(os.fspath(model_path), configure, layout=cpu_layout)
        self.provider = self.session.get_providers()[0]
        meta = self.session.get_modelmeta().custom_metadata_map
        if "lrpgraph.config" not in meta:
            raise LrpGraphError(f"{model_path}: not an lrpgraph explainer (no lrpgraph metadata); "
                                "build one with: lrpgraph build MODEL.onnx")
        self.config = json.loads(meta["lrpgraph.config"])
        recorded = json.loads(meta.get("lrpgraph.preprocess", "{}"))
        recorded["mean"], recorded["std"] = tuple(recorded.get("mean", ())), tuple(recorded.get("std", ()))
        self.preprocess = preprocess or Preprocess(**recorded)
        self.softmax_head = meta.get("lrpgraph.head") == "softmax"
        self.outputs = [o.name for o in self.session.get_outputs()]
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, inp.shape
        self.takes_target = "target" in {i.name for i in self.session.get_inputs()}
        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        self.num_classes = logits.shape[1] if isinstance(logits.shape[1], int) else None
        self.class_names = imagenet_class_names() if self.num_classes == 1000 else None

    # -- arrays in, arrays out -----------------------------------------------------------
    def run(self, x: np.ndarray, target=None, hq: bool = False) -> dict:
        """Run the explainer on a preprocessed batch; returns logits, probabilities,
        relevance_map (and relevance_map_hq with hq=True)."""
        x = self.check_input(x)
        feeds = {self.input_name: x}
        if target is not None:
            feeds["target"] = self.check_target(target, len(x))
        names = ["logits", "relevance_map", "target_used"]
        if hq and "relevance_map_hq" in self.outputs:
            names.append("relevance_map_hq")
        out = dict(zip(names, self.session.run(names, feeds)))
        if hq and "relevance_map_hq" not in out:
            out["relevance_map_hq"] = heat_quantize(out["relevance_map"], self.config.get("hq_levels") or 8)
        out["probabilities"] = probabilities(out["logits"].astype(np.float64), self.softmax_head)
        return out

    def check_input(self, x):
        x = np.asarray(x)
        expected = self.input_shape
        if x.ndim != len(expected):
            raise LrpGraphError(f"input has shape {x.shape}; the model takes {expected} "
                                "(N x C x H x W for NCHW models)")
        for axis, (got, want) in enumerate(zip(x.shape[1:], expected[1:]), start=1):
            if isinstance(want, int) and got != want:
                raise LrpGraphError(f"input axis {axis} has size {got}; the model needs {want} "
                                    f"(input shape {expected})")
        if not np.isfinite(x).all():
            raise LrpGraphError("input holds NaN or Inf values; clean the images first")
        return np.ascontiguousarray(x, dtype=np.float32)

    def check_target(self, target, n):
        """``target`` (one class or one per image, -1 = predicted) as the int64[n] feed."""
        if not self.takes_target:
            raise LrpGraphError("this explainer was built with --no-target-input and explains the "
                                "predicted class only; rebuild without that flag to choose targets")
        t = np.asarray(target, dtype=np.int64).reshape(-1)
        if t.size == 1 and n > 1:
            t = np.repeat(t, n)
        if t.size != n:
            raise LrpGraphError(f"{t.size} targets for {n} images")
        if self.num_classes and (t >= self.num_classes).any():
            raise LrpGraphError(f"target {int(t.max())} is out of range: the model has "
                                f"{self.num_classes} classes (0..{self.num_classes - 1}; -1 = predicted)")
        return t

    # -- images in, Result out -------------------------------------------------------------
    def explain(self, images, target=None, hq: bool = False, names=None) -> Result:
        """Explain images (paths, PIL images, H x W x C arrays) or one preprocessed
        N x C x H x W float batch."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return self.make_result(self.run(images, target, hq), names or [f"{i}" for i in range(len(images))],
                                    [], [])
        if not isinstance(images, (list, tuple)):
            images = [images]
        prepared = [prepare(im, self.preprocess) for im in images]
        x = np.stack([p[0] for p in prepared])
        names = names or [os.path.splitext(os.path.basename(im))[0] if isinstance(im, (str, os.PathLike))
                          else f"image{i}" for i, im in enumerate(images)]
        sources = [os.fspath(im) if isinstance(im, (str, os.PathLike)) else None for im in images]
        return self.make_result(self.run(x, target, hq), names, [p[1] for p in prepared], sources)

    def make_result(self, out, names, crops, sources):
        probs = out["probabilities"]
        classes = probs.argmax(1)
        targets = out["target_used"]
        valid = np.clip(targets, 0, probs.shape[1] - 1)
        return Result(
            names=list(names), heatmaps=out["relevance_map"], classes=classes,
            probabilities=probs[np.arange(len(probs)), classes], targets=targets,
            target_probabilities=probs[np.arange(len(probs)), valid],
            relevance_sums=out["relevance_map"].reshape(len(probs), -1).sum(1),
            heatmaps_hq=out.get("relevance_map_hq"), crops=crops, class_names=self.class_names,
            sources=sources,
        )


@dataclass
class RunSummary:
    explained: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # (path, reason)


def done_names(folder) -> set:
    """Images already explained in ``folder``: a results.jsonl line and all their files.
    A line cut short by a crash is ignored (its image is redone)."""
    path = os.path.join(folder, RESULTS)
    done = set()
    if not os.path.exists(path):
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                name = json.loads(line)["name"]
            except (ValueError, KeyError, TypeError):
                continue
            if os.path.exists(os.path.join(folder, name + ".npy")):
                done.add(name)
    return done


def compact_results(folder) -> None:
    """Keep the last line per image (a re-run with --overwrite appends new ones)."""
    path = os.path.join(folder, RESULTS)
    if not os.path.exists(path):
        return
    latest = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                latest[json.loads(line)["name"]] = line if line.endswith("\n") else line + "\n"
            except (ValueError, KeyError, TypeError):
                continue
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.writelines(latest.values())


def pending_images(paths, output, overwrite):
    """The images under ``paths`` still to explain into ``output``, and a summary that
    counts those already done (all of them are redone with ``overwrite``)."""
    items = find_images(paths)
    os.makedirs(output, exist_ok=True)
    summary = RunSummary()
    if not overwrite:
        done = done_names(output)
        summary.skipped = sum(1 for _, n in items if n in done)
        items = [(p, n) for p, n in items if n not in done]
    return items, summary


def explain_paths(explainer: Explainer, paths, output, target=None, hq=False, batch_size=8,
                  overwrite=False, progress=None, cmap="jet") -> RunSummary:
    """Explain every image under ``paths`` into ``output``; bad files are reported and
    skipped; images already done are skipped unless ``overwrite``."""
    items, summary = pending_images(paths, output, overwrite)
    bar = _progress(len(items), progress)
    batches: queue.Queue = queue.Queue(maxsize=2)

    def read():  # decode and crop the next batches while ORT runs this one
        batch = []
        for path, name in items:
            try:
                x, crop = prepare(path, explainer.preprocess)
                batch.append((path, name, x, crop))
            except ImageError as exc:
                batches.put(("failed", (path, str(exc))))
            except Exception as exc:
                batches.put(("failed", (path, f"{type(exc).__name__}: {exc}")))
            if len(batch) == batch_size:
                batches.put(("batch", batch))
                batch = []
        if batch:
            batches.put(("batch", batch))
        batches.put(("end", None))

    # Written on a thread of its own, one batch behind, so that on a GPU the CPU's PNG encoding
    # (what bounded the H100 run in docs/BENCHMARKS.md) overlaps the next batch instead of
    # adding to it. All bookkeeping happens on this thread, in order.
    to_write: queue.Queue = queue.Queue(maxsize=2)
    failure: list = []

    def write():
        while (item := to_write.get()) is not None:
            kind, payload = item
            if failure:
                continue  # drain what was queued before the error, writing nothing more
            try:
                if kind == "failed":
                    summary.failed.append(payload)
                    bar.update(1)
                else:
                    payload.save(output, cmap=cmap)
                    summary.explained += len(payload)
                    bar.update(len(payload))
            except BaseException as exc:  # re-raised by the caller's thread below
                failure.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    writer = threading.Thread(target=write)
    reader.start()
    writer.start()
    try:
        while not failure:
            kind, payload = batches.get()
            if kind == "end":
                break
            if kind == "batch":
                x = np.stack([b[2] for b in payload])
                payload = explainer.make_result(explainer.run(x, target, hq), [b[1] for b in payload],
                                                [b[3] for b in payload], [b[0] for b in payload])
            to_write.put((kind, payload))
    finally:
        to_write.put(None)  # the batches already queued are written (each file atomically)
        writer.join()
        bar.close()
    if failure:
        raise failure[0]
    reader.join()
    if overwrite:
        compact_results(output)
    return summary


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, progress):
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="img", file=sys.stderr)
