"""``lrpgraph eval``: insertion / deletion / ID score of explanation methods on a labelled
image set, under the paper's protocol and the tie-robust one (SPEC.md section 3), with the
sanity rows (constant, uniform-random, centred blob) in every table.

Methods are explainer graphs built by the same machinery as ``lrpgraph build``; the
perturbed images run through the original model on ORT in batches. No PyTorch.
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass

import numpy as np

from .atomic import atomic_path
from .config import VARIANTS, Preprocess, preset
from .errors import LrpGraphError
from .metrics import centre_blob, constant_map, perturbation_curves, random_map

# Method name -> the Config changes of its explainer graph.
GRAPH_METHODS = {
    "lrp-paper": {},
    "lrp-winner": {"maxpool": "winner"},
    **{f"lrp-{v}": dict(VARIANTS[v]) for v in VARIANTS},
    "lrp-epsilon": {"method": "lrp-epsilon", "start": "logit"},
    "gradient": {"method": "gradient"},
    "gradxinput": {"method": "gradxinput"},
    "guided-bp": {"method": "guided-bp"},
    "ig": {"method": "ig"},
    "gradcam": {"method": "gradcam"},
}
SANITY = ("constant", "random", "blob")
PLANNED = ("scorecam",)


# -- data -----------------------------------------------------------------------------------

def read_dataset(data, labels=None, listing=None, per_class=None, seed=42, limit=None):
    """[(path, label)] from an ImageFolder tree, a flat folder + labels file (one
    ``label`` per line in sorted file order, or ``name label`` lines), or a ``path,label``
    list. Class folders named by integers use those indices; other names take their index
    in sorted order (torchvision's ImageFolder convention)."""
    items = []
    if listing:
        base = os.path.dirname(os.path.abspath(listing))
        with open(listing, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    path, label = line.rsplit(",", 1)
                    items.append((os.path.join(base, path.strip()), int(label)))
                except ValueError:
                    raise LrpGraphError(f"{listing}:{n}: expected 'path,label' with an integer label") from None
    elif data and labels:
        files = sorted(f for f in os.listdir(data) if not f.startswith("."))
        with open(labels, encoding="utf-8") as fh:
            rows = [r.split() for r in fh.read().splitlines() if r.strip()]
        if all(len(r) == 1 for r in rows):
            if len(rows) != len(files):
                raise LrpGraphError(f"{labels}: {len(rows)} labels for {len(files)} files in {data}")
            items = [(os.path.join(data, f), int(r[0])) for f, r in zip(files, rows)]
        else:
            items = [(os.path.join(data, r[0]), int(r[1])) for r in rows]
    elif data:
        classes = sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d)))
        if not classes:
            raise LrpGraphError(f"{data}: no class folders; give --labels FILE for a flat folder")
        numeric = all(c.isdigit() for c in classes)
        for i, c in enumerate(classes):
            label = int(c) if numeric else i
            for f in sorted(os.listdir(os.path.join(data, c))):
                if not f.startswith("."):
                    items.append((os.path.join(data, c, f), label))
    else:
        raise LrpGraphError("give --data DIR (ImageFolder, or with --labels) or --list FILE")
    if per_class:
        rng = random.Random(seed)
        by_class = {}
        for path, label in items:
            by_class.setdefault(label, []).append((path, label))
        items = [x for label in sorted(by_class) for x in rng.sample(by_class[label], min(per_class, len(by_class[label])))]
    return items[:limit] if limit else items


# -- running --------------------------------------------------------------------------------

@dataclass
class Prediction:
    session: object
    pre: Preprocess
    softmax_head: bool
    batch_size: int = 32

    def __call__(self, images01: np.ndarray) -> np.ndarray:
        x = (images01 - np.asarray(self.pre.mean)) / np.asarray(self.pre.std)
        x = x.astype(np.float32)
        if self.pre.layout != "NHWC":
            x = x.transpose(0, 3, 1, 2)
        name = self.session.get_inputs()[0].name
        out = np.concatenate([self.session.run(None, {name: np.ascontiguousarray(x[i:i + self.batch_size])})[0]
                              for i in range(0, len(x), self.batch_size)])
        if self.softmax_head:
            return out
        e = np.exp(out - out.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def _session(model_bytes_or_path, threads=None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes_or_path, opts, providers=["CPUExecutionProvider"])


def evaluate(model_path, items, methods, output, protocols=("paper", "tie-robust"), hq=(False, True),
             seeds=(0, 1, 2), pre: Preprocess | None = None, progress=None, ig_steps=32) -> dict:
    from .driver import build_explainer
    from .explain import heat_quantize
    from .load import load_model
    from .preprocess import crop, load_rgb

    unknown = [m for m in methods if m not in GRAPH_METHODS and m not in SANITY]
    if unknown:
        planned = [m for m in unknown if m in PLANNED]
        raise LrpGraphError(
            f"unknown method(s) {unknown}"
            + (f" ({planned}: planned, not built yet)" if planned else "")
            + f"; available: {sorted(GRAPH_METHODS) + list(SANITY)}")
    pre = pre or Preprocess()
    model = load_model(model_path)
    softmax_head = model.graph.node[-1].op_type == "Softmax"
    predict = Prediction(_session(model.SerializeToString()), pre, softmax_head)
    explainers = {m: _session(build_explainer(model, preset("paper", ig_steps=ig_steps, **GRAPH_METHODS[m]))[0]
                              .SerializeToString())
                  for m in methods if m in GRAPH_METHODS}
    rows = {}
    os.makedirs(output, exist_ok=True)
    per_image = os.path.join(output, "per_image.jsonl")
    curves_acc = {}
    with atomic_path(per_image) as tmp, open(tmp, "w", encoding="utf-8") as log:
        for n, (path, label) in enumerate(items):
            cropped = np.asarray(crop(load_rgb(path), pre), dtype=np.float64) / 255.0
            x = predict(cropped[None])  # also the prediction on the full image
            maps = {}
            for m in methods:
                if m in explainers:
                    inp = ((cropped - np.asarray(pre.mean)) / np.asarray(pre.std)).astype(np.float32)
                    inp = inp[None] if pre.layout == "NHWC" else inp.transpose(2, 0, 1)[None]
                    sess = explainers[m]  # explains the predicted class, as the authors' code does
                    maps[m] = sess.run(["relevance_map"], {sess.get_inputs()[0].name: inp})[0][0]
                elif m == "constant":
                    maps[m] = constant_map(cropped.shape[:2])
                elif m == "random":
                    maps[m] = random_map(cropped.shape[:2], seed=n)
                else:
                    maps[m] = centre_blob(cropped.shape[:2])
            for m, a in maps.items():
                for use_hq in hq:
                    attribution = heat_quantize(a[None])[0] if use_hq else a
                    key = f"{m}{' +HQ' if use_hq else ''}"
                    for protocol in protocols:
                        c = perturbation_curves(predict, cropped, attribution, label, protocol, seeds)
                        s = c.scores
                        rows.setdefault((key, protocol), []).append(s)
                        acc = curves_acc.setdefault((key, protocol), [])
                        acc.append((c.insertion, c.deletion))
                        log.write(json.dumps({"file": path, "label": label, "predicted": int(x[0].argmax()),
                                              "p_label": float(x[0][label]), "method": key,
                                              "protocol": protocol, **s}) + "\n")
            if progress:
                progress(n + 1, len(items))
    table = summarise(rows)
    write_tables(table, output, len(items))
    plot_curves(curves_acc, output)
    return table


def summarise(rows: dict) -> list:
    table = []
    for (method, protocol), scores in rows.items():
        entry = {"method": method, "protocol": protocol, "images": len(scores)}
        for k in ("insertion", "deletion", "id"):
            v = np.array([s[k] for s in scores])
            entry[k], entry[f"{k}_std"] = float(v.mean()), float(v.std())
        table.append(entry)
    return table


def write_tables(table, output, n_images):
    protocols = sorted({r["protocol"] for r in table})
    lines = [f"{n_images} images. Mean ± std over images. Sanity rows: constant, random, blob.", ""]
    for protocol in protocols:
        lines += [f"### protocol: {protocol}", "", "| method | insertion ↑ | deletion ↓ | ID ↑ |", "|---|---|---|---|"]
        for r in sorted((r for r in table if r["protocol"] == protocol), key=lambda r: -r["id"]):
            lines.append(f"| {r['method']} | {r['insertion']:.3f} ± {r['insertion_std']:.3f} | "
                         f"{r['deletion']:.3f} ± {r['deletion_std']:.3f} | {r['id']:.3f} ± {r['id_std']:.3f} |")
        lines.append("")
    text = "\n".join(lines)
    with atomic_path(os.path.join(output, "table.md")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    with atomic_path(os.path.join(output, "table.json")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(table, fh, indent=1)
    with atomic_path(os.path.join(output, "table.csv")) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    print(text)


def plot_curves(curves_acc, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for (method, protocol), curves in curves_acc.items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ins = np.mean([c[0] for c in curves], axis=0)
        dele = np.mean([c[1] for c in curves], axis=0)
        t = np.linspace(0, 1, len(ins))
        ax.plot(t, ins, label="insertion")
        ax.plot(t, dele, label="deletion")
        ax.set_xlabel("fraction of the steps")
        ax.set_ylabel("probability")
        ax.set_title(f"{method} ({protocol})")
        ax.legend()
        fig.tight_layout()
        name = f"curves_{method.replace(' ', '').replace('+', '_')}_{protocol}.png"
        with atomic_path(os.path.join(output, name)) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
