"""``lrpgraph eval``: insertion / deletion / ID score of explanation methods on a labelled
image set, under the paper's protocol and the tie-robust one (SPEC.md section 3), with the
sanity rows (constant, uniform-random, centred blob) in every table.

Methods are explainer graphs built by the same machinery as ``lrpgraph build``; the
perturbed images run through the original model on ORT in batches. No PyTorch.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import random
from dataclasses import dataclass

import numpy as np

from .atomic import atomic_path
from .config import METHOD_NAMES, Preprocess, preset
from .errors import LrpGraphError
from .heatmaps import heat_quantize
from .metrics import centre_blob, constant_map, perturbation_curves, random_map
from .preprocess import crop, load_rgb, normalise
from .session import open_model, probabilities

# The maps every table has beside the methods (SPEC.md section 3).
SANITY = ("constant", "random", "blob")


# -- data -----------------------------------------------------------------------------------

def _label_index():
    """ImageNet synset (n01440764) -> class index, for labels given as synsets."""
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_synsets.txt")
    with open(path, encoding="utf-8") as fh:
        return {s: i for i, s in enumerate(fh.read().split())}


def _label(token, where):
    token = token.strip()
    if token.lstrip("-").isdigit():
        return int(token)
    index = _label_index().get(token)
    if index is None:
        raise LrpGraphError(f"{where}: label {token!r} is neither a class index nor an ImageNet synset")
    return index


def read_dataset(data, labels=None, listing=None, per_class=None, seed=42, limit=None):
    """[(path, label)] from an ImageFolder tree, a flat folder + labels file (one
    ``label`` per line in sorted file order, or ``name label`` lines), or a ``path,label``
    list. A label is a class index or an ImageNet synset (n01440764). Class folders named by
    integers or synsets use those classes; other names take their index in sorted order
    (torchvision's ImageFolder convention)."""
    items = []
    if listing:
        base = os.path.dirname(os.path.abspath(listing))
        with open(listing, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if "," not in line:
                    raise LrpGraphError(f"{listing}:{n}: expected 'path,label'")
                path, label = line.rsplit(",", 1)
                items.append((os.path.join(base, path.strip()), _label(label, f"{listing}:{n}")))
    elif data and labels:
        files = sorted(f for f in os.listdir(data) if not f.startswith("."))
        with open(labels, encoding="utf-8") as fh:
            rows = [r.split() for r in fh.read().splitlines() if r.strip()]
        if all(len(r) == 1 for r in rows):
            if len(rows) != len(files):
                raise LrpGraphError(f"{labels}: {len(rows)} labels for {len(files)} files in {data}")
            items = [(os.path.join(data, f), _label(r[0], labels)) for f, r in zip(files, rows)]
        else:
            items = [(os.path.join(data, r[0]), _label(r[1], labels)) for r in rows]
    elif data:
        classes = sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d)))
        if not classes:
            raise LrpGraphError(f"{data}: no class folders; give --labels FILE for a flat folder")
        synsets = _label_index()
        numeric = all(c.isdigit() for c in classes)
        named = all(c in synsets for c in classes)
        for i, c in enumerate(classes):
            label = int(c) if numeric else synsets[c] if named else i
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
        x = normalise(images01, self.pre)
        name = self.session.get_inputs()[0].name
        out = np.concatenate([self.session.run(None, {name: x[i:i + self.batch_size]})[0]
                              for i in range(0, len(x), self.batch_size)])
        return probabilities(out, self.softmax_head)


# How a map with a channel axis becomes one value per pixel: ``sum`` (ours), or ``first``:
# channel 0 alone, as the authors' metrics/patch_insdel.py ranks captum's 3 x H x W maps
# (it takes attention[0]).
CHANNEL_REDUCTIONS = ("sum", "first")


def _is_cam(method) -> bool:
    return METHOD_NAMES[method][0] in ("gradcam", "scorecam")


def check_methods(methods):
    unknown = [m for m in methods if m not in METHOD_NAMES and m not in SANITY]
    if unknown:
        raise LrpGraphError(f"unknown method(s) {unknown}; available: {list(METHOD_NAMES) + list(SANITY)}")


class Scorer:
    """Everything one image's scores need: the model and one explainer per method, each an
    ORT session. One per process (or per Ray actor)."""

    def __init__(self, model_path, methods, protocols=("paper", "tie-robust"), hq=(False,), seeds=(0, 1, 2),
                 pre: Preprocess | None = None, ig_steps=None, provider="cpu", channels="sum"):
        from .driver import build_explainer
        from .explain import Explainer
        from .load import load_model

        check_methods(methods)
        if channels not in CHANNEL_REDUCTIONS:
            raise LrpGraphError(f"channel reduction {channels!r}: choose one of {', '.join(CHANNEL_REDUCTIONS)}")
        self.methods, self.protocols, self.hq, self.seeds = list(methods), list(protocols), tuple(hq), tuple(seeds)
        self.pre, self.channels = pre or Preprocess(), channels
        model = load_model(model_path)
        if any(p.key == "lrpgraph.config" for p in model.metadata_props):
            raise LrpGraphError(f"{model_path} is an lrpgraph explainer; give eval the original "
                                "classifier (it builds every method's explainer itself)")
        self.explainers = {
            m: Explainer(build_explainer(model, preset("paper", method=m, ig_steps=ig_steps,
                                                       full_relevance=channels == "first" and not _is_cam(m)))[0],
                         provider)
            for m in methods if m in METHOD_NAMES}
        self.predict = Prediction(open_model(model, provider), self.pre, self._softmax_head(model))

    def _softmax_head(self, model) -> bool:
        """Whether the model ends in a softmax over its classes, as the build reads it."""
        if self.explainers:
            return next(iter(self.explainers.values())).softmax_head
        from .match import ends_in_probabilities

        return ends_in_probabilities(model)

    def attribution(self, method, cropped, index):
        if method in self.explainers:
            x = normalise(cropped[None], self.pre)
            ex = self.explainers[method]
            # explains the predicted class, as the authors' code does
            if "relevance" not in ex.outputs:
                return ex.run(x, names=["relevance_map"])["relevance_map"][0]
            relevance = ex.run(x, names=["relevance"])["relevance"][0]
            return relevance[0] if ex.preprocess.layout == "NCHW" else relevance[..., 0]
        if method == "constant":
            return constant_map(cropped.shape[:2])
        if method == "random":
            return random_map(cropped.shape[:2], seed=index)
        return centre_blob(cropped.shape[:2])

    def label(self, method) -> str:
        """The method's row name: ``ig (channel 0)`` where its map is the first channel's."""
        ex = self.explainers.get(method)
        return f"{method} (channel 0)" if ex is not None and "relevance" in ex.outputs else method

    def score(self, path, label, index) -> list:
        """One record per (method, HQ or not, protocol), curves included."""
        cropped = np.asarray(crop(load_rgb(path), self.pre), dtype=np.float64) / 255.0
        p = self.predict(cropped[None])[0]
        records = []
        for m in self.methods:
            a = self.attribution(m, cropped, index)
            for use_hq in self.hq:
                attribution = heat_quantize(a[None])[0] if use_hq else a
                for protocol in self.protocols:
                    c = perturbation_curves(self.predict, cropped, attribution, label, protocol, self.seeds)
                    records.append({"file": path, "label": int(label), "predicted": int(p.argmax()),
                                    "p_label": float(p[label]), "method": f"{self.label(m)}{' +HQ' if use_hq else ''}",
                                    "protocol": protocol, **c.scores,
                                    "curves": (c.insertion.tolist(), c.deletion.tolist())})
        return records


def evaluate(model_path, items, methods, output, protocols=("paper", "tie-robust"), hq=(False, True),
             seeds=(0, 1, 2), pre: Preprocess | None = None, progress=None, ig_steps=None,
             ray_address=None, workers=None, provider="cpu", channels="sum") -> dict:
    """Score every image, then write per_image.jsonl, table.{md,csv,json} and the curves.
    With ``ray_address`` ("" for a local instance) the images are spread over Ray actors.
    ``channels``: CHANNEL_REDUCTIONS (``first`` reproduces the authors' tables; its rows are
    named ``method (channel 0)``)."""
    check_methods(methods)
    make_scorer = functools.partial(Scorer, model_path, methods, protocols, hq, seeds, pre, ig_steps, provider,
                                    channels)
    if ray_address is not None:
        from .ray import score_on_ray

        records = score_on_ray(make_scorer, items, ray_address, workers)
    else:
        scorer = make_scorer()
        records = []
        for n, (path, label) in enumerate(items):
            records += scorer.score(path, label, n)
            if progress:
                progress(n + 1, len(items))
    os.makedirs(output, exist_ok=True)
    rows, curves = {}, {}
    with atomic_path(os.path.join(output, "per_image.jsonl")) as tmp, open(tmp, "w", encoding="utf-8") as log:
        for rec in records:
            key = (rec["method"], rec["protocol"])
            rows.setdefault(key, []).append(rec)
            curves.setdefault(key, []).append(rec["curves"])
            log.write(json.dumps({k: v for k, v in rec.items() if k != "curves"}) + "\n")
    table = summarise(rows)
    write_tables(table, output, len(items))
    plot_curves(curves, output)
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
