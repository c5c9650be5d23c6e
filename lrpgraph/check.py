"""``lrpgraph check``: run an explainer and show, per rule, the relevance entering and
leaving it, the relative conservation error and what was absorbed.

Takes an explainer built with ``--conservation``, or a plain model (then it builds one in
memory with the given rules). Inputs: images (preprocessed as the explainer's metadata
says) or seeded random N(0, 1) tensors of the model's input shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx

from .config import Config
from .errors import LrpGraphError


@dataclass
class LayerCheck:
    node: str
    op: str
    r_out: float  # mean over images of the relevance arriving at the node's output
    r_in: float  # ... and leaving it towards its inputs
    error: float  # max over images of |in - out| / out
    expected_loss: str | None  # why the rule loses relevance by design (its ``absorbs``), if it does


@dataclass
class CheckReport:
    layers: list
    start: np.ndarray
    total: np.ndarray  # relevance reaching the image, per image
    nonfinite: list = field(default_factory=list)  # outputs holding NaN or Inf
    tolerance: float = 1e-3

    @property
    def failures(self):
        return [l for l in self.layers if l.error > self.tolerance and not l.expected_loss]

    @property
    def ok(self):
        return not self.failures and not self.nonfinite


def _explainer(model: onnx.ModelProto, config: Config):
    meta = {p.key: p.value for p in model.metadata_props}
    if "lrpgraph.config" not in meta:
        from .driver import build_explainer

        model, _ = build_explainer(model, config.replace(conservation=True))
        return model
    if not json.loads(meta["lrpgraph.config"]).get("conservation"):
        raise LrpGraphError("this explainer was built without --conservation, so it has no "
                            "per-layer sums; rebuild it with lrpgraph build MODEL.onnx "
                            "--conservation, or give check the original model")
    return model


def _inputs(ex, images, random, seed):
    """The images, preprocessed as the explainer says, or seeded N(0, 1) inputs."""
    if images:
        from .preprocess import prepare

        return np.stack([prepare(im, ex.preprocess)[0] for im in images])
    shape = [d if isinstance(d, int) else random for d in ex.input_shape]
    shape[0] = random
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check(model_path, images=(), random=4, tolerance=1e-3, config: Config = Config(),
          provider="cpu", seed=0) -> CheckReport:
    from .explain import Explainer
    from .load import load_model

    model = _explainer(load_model(model_path), config)
    ex = Explainer(model, provider=provider)  # in memory: no file written
    if "relsum/input" not in ex.outputs:
        raise LrpGraphError(f"{model_path}: a {ex.config.get('method')} explainer: its map is a weighted feature "
                            "map, not relevance carried to the pixels, so there is no conservation to check; "
                            "check the model with an LRP method (--method lrp)")
    out = ex.run(_inputs(ex, images, random, seed), names=ex.outputs)
    ops = {n.name: n.op_type for n in model.graph.node}
    layers = []
    for key in ex.outputs:
        if not (key.startswith("relsum/") and key.endswith("/out")) or key == "relsum/start":
            continue
        node = key[len("relsum/"):-len("/out")]
        r_out, r_in = out[key].astype(np.float64), out[key[:-3] + "in"].astype(np.float64)
        err = np.abs(r_in - r_out) / np.maximum(np.abs(r_out), 1e-30)
        # the build recorded which rules absorb relevance by design (rules/base.py)
        layers.append(LayerCheck(node, ops.get(node, "?"), float(r_out.mean()), float(r_in.mean()),
                                 float(err.max()), ex.absorbs.get(node)))
    nonfinite = [k for k, v in out.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    return CheckReport(layers, out["relsum/start"], out["relsum/input"], nonfinite, tolerance)


def print_report(report: CheckReport, file=None) -> None:
    import sys

    file = file or sys.stdout
    width = max([len(l.node) for l in report.layers] + [4])
    print(f"{'node':<{width}}  {'op':<18} {'R out':>12} {'R in':>12} {'rel err':>9}  note", file=file)
    for l in report.layers:
        note = f"expected: {l.expected_loss}" if l.expected_loss and l.error > report.tolerance else \
            ("ABOVE TOLERANCE" if l.error > report.tolerance else "")
        if l.r_in < l.r_out and l.error > report.tolerance:
            why = "" if l.expected_loss else ": zero denominators"
            note += f" (absorbed {l.r_out - l.r_in:.3g}{why})"
        print(f"{l.node:<{width}}  {l.op:<18} {l.r_out:12.5g} {l.r_in:12.5g} {l.error:9.2e}  {note}", file=file)
    start, total = report.start.astype(np.float64), report.total.astype(np.float64)
    e2e = np.abs(total - start) / np.maximum(np.abs(start), 1e-30)
    print(f"start relevance {start.mean():.5g}, reaching the image {total.mean():.5g} "
          f"(end to end: max {e2e.max():.2e} relative over {len(start)} inputs)", file=file)
    if report.nonfinite:
        print(f"NaN or Inf in: {', '.join(report.nonfinite)}", file=file)
    verdict = "ok" if report.ok else f"{len(report.failures)} rule(s) above tolerance {report.tolerance:g}"
    print(f"check: {verdict}", file=file)
