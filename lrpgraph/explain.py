"""Run an explainer: images in, prediction and heatmap out, on ORT's CUDA or CPU provider.

    from lrpgraph import Explainer
    ex = Explainer("resnet50.lrp.onnx")            # provider="auto": CUDA if it works, else CPU
    result = ex.explain(["cat.jpg", hwc_uint8_array])
    result.heatmaps, result.classes, result.probabilities
    result.save("out/")

:class:`Explainer` runs arrays and images (session.py opens the model); explain_paths runs
whole folders into an output folder, reading the next batch and writing the last one on
threads of their own. Writing files is results.py's, colouring heatmaps.py's.

Needs onnxruntime, numpy and Pillow; matplotlib only to write PNGs. No PyTorch.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
from dataclasses import dataclass

import numpy as np
import onnx

from .config import Preprocess
from .errors import LrpGraphError
from .heatmaps import Style, contact_sheet, heat_quantize, require_pictures
from .preprocess import MAX_PIXELS, ImageError, find_images, prepare
from .results import Result, compact_results, holding, pending_images, run_settings
from .session import open_model, predicted_targets, probabilities


def imagenet_class_names() -> list[str]:
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_classes.txt")
    with open(path, encoding="utf-8") as fh:
        return fh.read().splitlines()


class Explainer:
    """An explainer model (a path, or an ``onnx.ModelProto`` built in memory) in an ORT
    session, with the preprocessing recorded at build."""

    def __init__(self, model, provider: str = "auto", preprocess: Preprocess | None = None,
                 threads: int | None = None, cpu_layout: bool = True):
        if not isinstance(model, onnx.ModelProto) and not os.path.isfile(model):
            raise LrpGraphError(f"{model}: no such explainer model (build one with lrpgraph build)")
        if isinstance(model, onnx.ModelProto):
            model = model.SerializeToString()  # once, for the session and the digest
        self.session = open_model(model, provider, threads, cpu_layout)
        # a file is hashed when a run first asks (explain_paths); bytes are at hand now
        self._source, self._digest = (None, _sha256(model)) if isinstance(model, bytes) else (model, None)
        self.max_pixels = MAX_PIXELS  # larger images are refused (decompression bombs)
        self.provider = self.session.get_providers()[0]
        meta = self.session.get_modelmeta().custom_metadata_map
        if "lrpgraph.config" not in meta:
            where = "the model" if isinstance(model, bytes) else model
            raise LrpGraphError(f"{where}: not an lrpgraph explainer (no lrpgraph metadata); "
                                "build one with: lrpgraph build MODEL.onnx")
        self.config = json.loads(meta["lrpgraph.config"])
        self.absorbs = json.loads(meta.get("lrpgraph.absorbs", "{}"))
        recorded = json.loads(meta.get("lrpgraph.preprocess", "{}"))
        recorded["mean"], recorded["std"] = tuple(recorded.get("mean", ())), tuple(recorded.get("std", ()))
        self.preprocess = preprocess or Preprocess(**recorded)
        self.softmax_head = meta.get("lrpgraph.head") == "softmax"
        self.outputs = [o.name for o in self.session.get_outputs()]
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, inp.shape
        # K: the classes per image of an explainer built with --targets K (None: one)
        self.k = self.config.get("targets")
        self.target_input = "targets" if self.k else "target"
        self.takes_target = self.target_input in {i.name for i in self.session.get_inputs()}
        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        self.num_classes = logits.shape[1] if isinstance(logits.shape[1], int) else None
        self.class_names = imagenet_class_names() if self.num_classes == 1000 else None

    # -- arrays in, arrays out -----------------------------------------------------------
    def run(self, x: np.ndarray, target=None, hq: bool = False, names=None, top_k: int | None = None) -> dict:
        """Run the explainer on a preprocessed batch; returns logits, probabilities,
        relevance_map (and relevance_map_hq with hq=True), or the outputs ``names``. For an
        explainer built with ``targets=K``, relevance_map is N x K x H x W and target_used
        N x K (the first ``top_k`` of the K where given)."""
        x = self.check_input(x)
        top_k = self.check_top_k(top_k)
        feeds = {self.input_name: x}
        if target is not None:
            feeds[self.target_input] = self.check_target(target, len(x))
        feeds = predicted_targets(self.session, feeds)
        if names is not None:
            return self._session_run(names, feeds)
        plural = "s" if self.k else ""
        wanted = {"logits": "logits", f"relevance_map{plural}": "relevance_map",
                  f"target{plural}_used": "target_used"}
        if hq and f"relevance_map{plural}_hq" in self.outputs:
            wanted[f"relevance_map{plural}_hq"] = "relevance_map_hq"
        out = {wanted[k]: v for k, v in self._session_run(list(wanted), feeds).items()}
        if top_k is not None:
            out.update({k: v[:, :top_k] for k, v in out.items() if k != "logits"})
        if hq and "relevance_map_hq" not in out:
            out["relevance_map_hq"] = _quantize(out["relevance_map"], self.config.get("hq_levels") or 8)
        out["probabilities"] = probabilities(out["logits"].astype(np.float64), self.softmax_head)
        return out

    def check_top_k(self, top_k):
        """The number of the K maps to keep (None: all K)."""
        if top_k is None or (top_k == 1 and not self.k):
            return None
        if not self.k:
            raise LrpGraphError(f"this explainer explains one class per image; for the top {top_k} build it with "
                                f"lrpgraph build MODEL.onnx --targets {top_k}")
        if not 1 <= top_k <= self.k:
            raise LrpGraphError(f"top_k={top_k}: this explainer explains {self.k} classes per image "
                                f"(built with --targets {self.k}); choose 1..{self.k} or rebuild")
        return top_k if top_k < self.k else None

    def _session_run(self, names, feeds) -> dict:
        """One session call, or, for a model whose batch size is fixed (1, say), one call
        per that many images, the last padded with zeros and cut back."""
        fixed, n = self.input_shape[0], len(feeds[self.input_name])
        if not isinstance(fixed, int) or fixed == n:
            return dict(zip(names, self.session.run(names, feeds)))
        parts = []
        for start in range(0, n, fixed):
            chunk = {k: v[start:start + fixed] for k, v in feeds.items()}
            short = fixed - len(chunk[self.input_name])
            if short:  # images of zeros, targets -1 (predicted)
                chunk = {k: np.concatenate([v, np.full((short,) + v.shape[1:], 0 if k == self.input_name else -1,
                                                       v.dtype)])
                         for k, v in chunk.items()}
            parts.append([o[:fixed - short] for o in self.session.run(names, chunk)])
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}

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
        """``target`` as the feed for n images: one class or one per image, -1 = predicted
        (int64[n]); for an explainer of K classes per image, K classes for every image or
        an n x K array, -1 = the k-th most probable (int64[n, K])."""
        if not self.takes_target:
            raise LrpGraphError("this explainer was built with --no-target-input and explains the "
                                "predicted class only; rebuild without that flag to choose targets")
        t = np.asarray(target, dtype=np.int64)
        if self.k:
            t = np.broadcast_to(t, (n, self.k)) if t.shape in ((self.k,), (1, self.k)) else t
            if t.shape != (n, self.k):
                raise LrpGraphError(f"targets of shape {t.shape} for {n} images: this explainer explains "
                                    f"{self.k} classes per image; give {self.k} classes (-1 = the k-th most "
                                    f"probable), for all images or {n} x {self.k}")
            t = np.ascontiguousarray(t)
        else:
            t = t.reshape(-1)
            if t.size == 1 and n > 1:
                t = np.repeat(t, n)
            if t.size != n:
                raise LrpGraphError(f"{t.size} targets for {n} images")
        if self.num_classes and (t >= self.num_classes).any():
            raise LrpGraphError(f"target {int(t.max())} is out of range: the model has "
                                f"{self.num_classes} classes (0..{self.num_classes - 1}; -1 = predicted)")
        return t

    # -- images in, Result out -------------------------------------------------------------
    def explain(self, images, target=None, hq: bool = False, names=None, top_k: int | None = None,
                contrast: bool = False, targets=None) -> Result:
        """Explain images (paths, PIL images, H x W x C arrays) or one preprocessed
        N x C x H x W float batch. For an explainer built with ``targets=K``: K maps per
        image (``top_k`` keeps the first of them; ``contrast``: each map minus the mean of
        the others, to tell apart classes that look alike; ``targets``: another name for
        ``target``)."""
        if targets is not None:
            if target is not None:
                raise LrpGraphError("give target or targets, not both")
            target = targets
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return self.make_result(self.run(images, target, hq, top_k=top_k),
                                    names or [f"{i}" for i in range(len(images))], [], [], contrast)
        if not isinstance(images, (list, tuple)):
            images = [images]
        prepared = [prepare(im, self.preprocess) for im in images]
        x = np.stack([p[0] for p in prepared])
        names = names or [os.path.splitext(os.path.basename(im))[0] if isinstance(im, (str, os.PathLike))
                          else f"image{i}" for i, im in enumerate(images)]
        sources = [os.fspath(im) if isinstance(im, (str, os.PathLike)) else None for im in images]
        return self.make_result(self.run(x, target, hq, top_k=top_k), names,
                                [p[1] for p in prepared], sources, contrast)

    def make_result(self, out, names, crops, sources, contrast: bool = False):
        probs = out["probabilities"]
        classes = probs.argmax(1)
        targets = out["target_used"]
        valid = np.clip(targets, 0, probs.shape[1] - 1)
        heat, heat_hq = out["relevance_map"], out.get("relevance_map_hq")
        sums = heat.reshape(heat.shape[:targets.ndim] + (-1,)).sum(-1)
        if contrast:
            heat = contrast_maps(heat)
            heat_hq = None if heat_hq is None else _quantize(heat, self.config.get("hq_levels") or 8)
        return Result(
            names=list(names), heatmaps=heat, classes=classes,
            probabilities=probs[np.arange(len(probs)), classes], targets=targets,
            target_probabilities=np.take_along_axis(probs, valid.reshape(len(probs), -1), 1).reshape(targets.shape),
            relevance_sums=sums, heatmaps_hq=heat_hq, crops=crops, class_names=self.class_names,
            sources=sources, method=self.config.get("method"), region=self.preprocess.region(),
            contrast=contrast,
        )

    @property
    def identity(self) -> str:
        """The SHA-256 of the explainer's bytes: which explainer made a folder's maps."""
        if self._digest is None:
            self._digest = _sha256(self._source)
        return self._digest

    def settings(self, target=None, hq=False, style=None, top_k=None, contrast=False) -> dict:
        """What outputs made by this explainer with these options depend on (results.py)."""
        settings = run_settings(self.identity, self.preprocess, target, hq, style or self.style())
        if top_k is not None or contrast:  # absent otherwise: folders of earlier runs still match
            settings.update(top_k=top_k, contrast=bool(contrast))
        return settings

    def style(self, cmap=None, alpha=None, colorbar=False) -> Style:
        """How this explainer's maps are drawn by default (heatmaps.py), with overrides."""
        return Style.for_method(self.config.get("method"), cmap, alpha, colorbar)


def require_contrast(k: int) -> None:
    """Contrastive maps need at least 2 maps per image (``k`` of them)."""
    if k < 2:
        raise LrpGraphError("contrastive maps need at least 2 classes per image (build with --targets K, K >= 2)")


def contrast_maps(maps: np.ndarray) -> np.ndarray:
    """N x K x H x W: each map minus the mean of the other K-1 maps of its image."""
    k = maps.shape[1] if maps.ndim == 4 else 1  # N x H x W: one map per image
    require_contrast(k)
    others = (maps.sum(1, keepdims=True) - maps) / (k - 1)
    return maps - others


def _quantize(maps: np.ndarray, levels: int) -> np.ndarray:
    """Heat Quantization of N x H x W maps, or of each of N x K x H x W."""
    flat = maps.reshape((-1,) + maps.shape[-2:])
    return heat_quantize(flat, levels).reshape(maps.shape)


def _sha256(model) -> str:
    """Of serialized bytes, or of a file read in blocks."""
    digest = hashlib.sha256()
    if isinstance(model, bytes):
        digest.update(model)
        return digest.hexdigest()
    with open(model, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_batches(items, explainer, batch_size, batches: queue.Queue) -> None:
    """Decode and crop the images into batches (and failures) for the queue, then "end"."""
    batch = []
    for path, name in items:
        try:
            x, crop = prepare(path, explainer.preprocess, explainer.max_pixels)
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


# A contact sheet shows at most this many images (one row each).
SHEET_ROWS = 48


def _write_results(to_write: queue.Queue, output, style, summary, bar, failure: list, sheet) -> None:
    """Save each explained batch and count it, in order, until None arrives. After an
    error, what was queued is drained without writing; the error is left in ``failure``.
    ``sheet``, when a list, collects the contact sheet's rows."""
    while (item := to_write.get()) is not None:
        kind, payload = item
        if failure:
            continue
        try:
            if kind == "failed":
                summary.failed.append(payload)
                bar.update(1)
            else:
                payload.save(output, style=style)
                if sheet is not None and len(sheet) < SHEET_ROWS:
                    sheet += payload.sheet_rows(style)[:SHEET_ROWS - len(sheet)]
                summary.explained += len(payload)
                bar.update(len(payload))
        except BaseException as exc:  # re-raised by the caller's thread
            failure.append(exc)


@dataclass(frozen=True)
class Ask:
    """What each batch is asked: the target(s), HQ, and for K classes per image top_k and
    contrast (Explainer.explain)."""

    target: object = None
    hq: bool = False
    top_k: int | None = None
    contrast: bool = False

    def result(self, explainer, x, names, crops, sources) -> Result:
        out = explainer.run(x, self.target, self.hq, top_k=self.top_k)
        return explainer.make_result(out, names, crops, sources, self.contrast)


def explain_paths(explainer: Explainer, paths, output, target=None, hq=False, batch_size=8,
                  overwrite=False, progress=None, style: Style | None = None, sheet=False,
                  top_k: int | None = None, contrast: bool = False):
    """Explain every image under ``paths`` into ``output``; bad files are reported and
    skipped; images already done with the same settings are skipped unless ``overwrite``
    (a folder made with other settings is refused). ``sheet``: also write sheet.png, a row
    per image explained (photo, map, overlay; or the photo and its K overlays). ``top_k``,
    ``contrast``: as in Explainer.explain. Returns a RunSummary.

    Images are read one batch ahead and written one batch behind, each on a thread of its
    own, so that on a GPU the CPU's decoding and PNG encoding (what bounded the H100 run in
    docs/BENCHMARKS.md) overlap the explainer instead of adding to it."""
    require_pictures("explaining into a folder")
    style = style or explainer.style()
    ask = Ask(target, hq, explainer.check_top_k(top_k), contrast)
    if contrast:  # the error, before the folder is made
        require_contrast(ask.top_k or explainer.k or 1)
    found = find_images(paths, skip=output)  # nothing found: an error before the folder is made
    with holding(output):
        settings = explainer.settings(target, hq, style, top_k=ask.top_k, contrast=contrast)
        items, summary = pending_images(found, output, overwrite, settings)
        rows = [] if sheet else None
        _run(explainer, items, output, ask, batch_size, style, summary, _progress(len(items), progress), rows)
        if overwrite:
            compact_results(output)
        if rows:
            contact_sheet(rows, os.path.join(output, "sheet.png"))
    return summary


def _run(explainer, items, output, ask: Ask, batch_size, style, summary, bar, rows) -> None:
    """Read, explain and write ``items``: the reader and the writer on threads of their own."""
    batches, to_write, failure = queue.Queue(maxsize=2), queue.Queue(maxsize=2), []
    reader = threading.Thread(target=_read_batches, args=(items, explainer, batch_size, batches),
                              daemon=True)
    writer = threading.Thread(target=_write_results, args=(to_write, output, style, summary, bar, failure, rows))
    reader.start()
    writer.start()
    try:
        while not failure:
            kind, payload = batches.get()
            if kind == "end":
                break
            if kind == "batch":
                x = np.stack([b[2] for b in payload])
                payload = ask.result(explainer, x, [b[1] for b in payload], [b[3] for b in payload],
                                     [b[0] for b in payload])
            to_write.put((kind, payload))
    finally:
        to_write.put(None)  # the batches already queued are written (each file atomically)
        writer.join()
        bar.close()
    if failure:
        raise failure[0]
    reader.join()


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
