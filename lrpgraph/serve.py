"""``lrpgraph serve``: a local static server for the page in ``web/`` that explains photos
in the browser with onnxruntime-web. Nothing leaves the machine: the page fetches the
explainer and the runtime from this server and runs them on the user's own CPU (wasm) or
GPU (WebGPU).

Routes: ``/`` the page, ``/explainer.onnx`` the model, ``/explainer.json`` what the page
needs from the model's metadata (preprocessing, classes, colour map, whether it takes a
target), ``/ort/`` onnxruntime-web's ``dist`` folder. Every response carries the
cross-origin isolation headers (COOP/COEP) that threaded wasm needs (SharedArrayBuffer).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import urllib.parse
from pathlib import Path

import onnx

from .errors import LrpGraphError

WEB = Path(__file__).resolve().parent / "web"
_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
          ".json": "application/json", ".onnx": "application/octet-stream", ".html": "text/html",
          ".css": "text/css"}


def find_ort_web(given: str | None = None) -> Path:
    """onnxruntime-web's ``dist`` folder: ``given``, $LRPGRAPH_ORT_WEB, or node_modules in
    the working directory or in the repository this package runs from."""
    candidates = [given] if given else [
        os.environ.get("LRPGRAPH_ORT_WEB"), Path.cwd() / "node_modules" / "onnxruntime-web" / "dist",
        Path(__file__).resolve().parents[1] / "node_modules" / "onnxruntime-web" / "dist"]
    for c in candidates:
        if c and (Path(c) / "ort.webgpu.min.mjs").is_file():
            return Path(c)
    if given:
        raise LrpGraphError(f"--ort-web {given}: no onnxruntime-web dist folder there (ort.webgpu.min.mjs "
                            "missing); point it at node_modules/onnxruntime-web/dist")
    raise LrpGraphError("onnxruntime-web not found: run `npm ci` in the lrpgraph repository (package.json "
                        "pins it) or `npm install onnxruntime-web@1.30.0` here, or pass --ort-web DIST_FOLDER")


def page_config(model_path: str) -> dict:
    """What the page reads from the explainer: its metadata, its inputs, the colour map."""
    from .explain import Explainer
    from .heatmaps import Style

    if any(t.data_location == onnx.TensorProto.EXTERNAL
           for t in onnx.load(model_path, load_external_data=False).graph.initializer):
        raise LrpGraphError(f"{model_path}: its weights are in a separate .data file, which the page cannot load "
                            "(onnxruntime-web needs one file; such models are over 2 GB, too large for a browser)")
    ex = Explainer(model_path, provider="cpu")
    if ex.k:
        raise LrpGraphError(f"{model_path}: built with --targets {ex.k}; the page explains one class at a time: "
                            "build the explainer without --targets")
    if isinstance(ex.input_shape[0], int) and ex.input_shape[0] != 1:
        raise LrpGraphError(f"{model_path}: its batch is fixed at {ex.input_shape[0]}; the page explains one photo "
                            "at a time: export the model with a dynamic batch (or batch 1) and rebuild")
    style = Style.for_method(ex.config.get("method"))
    composite = ex.session.get_modelmeta().custom_metadata_map.get("lrpgraph.composite")
    from matplotlib import colormaps

    lut = (colormaps[style.cmap](range(256))[:, :3] * 255).round().astype(int).tolist()
    return {"preprocess": ex.preprocess.__dict__ | {"mean": list(ex.preprocess.mean), "std": list(ex.preprocess.std)},
            "input": ex.input_name, "input_shape": [d if isinstance(d, int) else None for d in ex.input_shape],
            "takes_target": ex.takes_target, "softmax_head": ex.softmax_head, "method": ex.config.get("method"), "composite": composite,
            "classes": ex.class_names or [f"class {i}" for i in range(ex.num_classes or 0)],
            "colormap": {"name": style.cmap, "diverging": style.diverging, "lut": lut, "alpha": style.alpha},
            "model": os.path.basename(model_path), "model_bytes": os.path.getsize(model_path)}


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, model=None, config=None, ort_dir=None, **kw):
        self.model, self.config_bytes, self.ort_dir = model, config, ort_dir
        super().__init__(*args, directory=str(WEB), **kw)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def guess_type(self, path):
        return _TYPES.get(Path(str(path)).suffix, None) or super().guess_type(path)

    def translate_path(self, path):
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean == "/explainer.onnx":
            return self.model
        if clean.startswith("/ort/"):
            name = Path(urllib.parse.unquote(clean[5:])).name  # one flat folder: no way out of it
            return str(self.ort_dir / name) if name not in ("", ".", "..") else str(self.ort_dir / "missing")
        return super().translate_path(path)

    def do_GET(self):
        if self.path.split("?", 1)[0] == "/explainer.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.config_bytes)))
            self.end_headers()
            self.wfile.write(self.config_bytes)
            return
        super().do_GET()

    def log_message(self, fmt, *args):  # one quiet line per request is noise for a page of 5 files
        pass


def make_server(model_path: str, host: str = "127.0.0.1", port: int = 8000, ort_web: str | None = None):
    """The server (not yet serving): ``server.serve_forever()``; port 0 picks a free one."""
    if not os.path.isfile(model_path):
        raise LrpGraphError(f"{model_path}: no such file; build one with: lrpgraph build MODEL.onnx")
    ort_dir = find_ort_web(ort_web)
    config = json.dumps(page_config(model_path)).encode()
    handler = functools.partial(_Handler, model=os.path.abspath(model_path), config=config, ort_dir=ort_dir)
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise LrpGraphError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
