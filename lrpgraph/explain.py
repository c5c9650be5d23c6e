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

import numpy as np
import onnx

from .config import Preprocess
from .errors import LrpGraphError
from .heatmaps import Style, contact_sheet, heat_quantize, require_pictures
from .preprocess import MAX_PIXELS, ImageError, find_images, prepare
from .results import Result, compact_results, holding, pending_images, run_settings
from .session import open_model, probabilities


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
        self.takes_target = "target" in {i.name for i in self.session.get_inputs()}
        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        self.num_classes = logits.shape[1] if isinstance(logits.shape[1], int) else None
        self.class_names = imagenet_class_names() if self.num_classes == 1000 else None

    # -- arrays in, arrays out -----------------------------------------------------------
    def run(self, x: np.ndarray, target=None, hq: bool = False, names=None) -> dict:
        """Run the explainer on a preprocessed batch; returns logits, probabilities,
        relevance_map (and relevance_map_hq with hq=True), or the outputs ``names``."""
        x = self.check_input(x)
        feeds = {self.input_name: x}
        if target is not None:
            feeds["target"] = self.check_target(target, len(x))
        if names is not None:
            return self._session_run(names, feeds)
        names = ["logits", "relevance_map", "target_used"]
        if hq and "relevance_map_hq" in self.outputs:
            names.append("relevance_map_hq")
        out = self._session_run(names, feeds)
        if hq and "relevance_map_hq" not in out:
            out["relevance_map_hq"] = heat_quantize(out["relevance_map"], self.config.get("hq_levels") or 8)
        out["probabilities"] = probabilities(out["logits"].astype(np.float64), self.softmax_head)
        return out

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
                chunk = {k: np.concatenate([v, np.full((short,) + v.shape[1:], -1 if k == "target" else 0, v.dtype)])
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
            sources=sources, method=self.config.get("method"), region=self.preprocess.region(),
        )

    @property
    def identity(self) -> str:
        """The SHA-256 of the explainer's bytes: which explainer made a folder's maps."""
        if self._digest is None:
            self._digest = _sha256(self._source)
        return self._digest

    def settings(self, target=None, hq=False, style=None) -> dict:
        """What outputs made by this explainer with these options depend on (results.py)."""
        return run_settings(self.identity, self.preprocess, target, hq, style or self.style())

    def style(self, cmap=None, alpha=None, colorbar=False) -> Style:
        """How this explainer's maps are drawn by default (heatmaps.py), with overrides."""
        return Style.for_method(self.config.get("method"), cmap, alpha, colorbar)


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


def explain_paths(explainer: Explainer, paths, output, target=None, hq=False, batch_size=8,
                  overwrite=False, progress=None, style: Style | None = None, sheet=False):
    """Explain every image under ``paths`` into ``output``; bad files are reported and
    skipped; images already done with the same settings are skipped unless ``overwrite``
    (a folder made with other settings is refused). ``sheet``: also write sheet.png, a row
    per image explained (photo, map, overlay). Returns a RunSummary.

    Images are read one batch ahead and written one batch behind, each on a thread of its
    own, so that on a GPU the CPU's decoding and PNG encoding (what bounded the H100 run in
    docs/BENCHMARKS.md) overlap the explainer instead of adding to it."""
    require_pictures("explaining into a folder")
    style = style or explainer.style()
    found = find_images(paths, skip=output)  # nothing found: an error before the folder is made
    with holding(output):
        items, summary = pending_images(found, output, overwrite, explainer.settings(target, hq, style))
        rows = [] if sheet else None
        _run(explainer, items, output, target, hq, batch_size, style, summary, _progress(len(items), progress), rows)
        if overwrite:
            compact_results(output)
        if rows:
            contact_sheet(rows, os.path.join(output, "sheet.png"))
    return summary


def _run(explainer, items, output, target, hq, batch_size, style, summary, bar, rows) -> None:
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
