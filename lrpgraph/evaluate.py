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
from . import stats
from .errors import LrpGraphError
from .heatmaps import heat_quantize
from .metrics import centre_blob, constant_map, random_map
from .perturb import CurvePlan
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
    batch_size: int = 64

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
# Whose probability the curves follow: the ground-truth ``label`` (the paper's protocol), or
# the ``predicted`` class, the one every map explains (RISE always uses that).
SCORED = ("label", "predicted")


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
                 pre: Preprocess | None = None, ig_steps=None, provider="cpu", channels="sum", scored="label",
                 hq_methods=None, smooth=(), positive=False):
        from .driver import build_explainer
        from .explain import Explainer
        from .load import load_model

        check_methods(methods)
        if scored not in SCORED:
            raise LrpGraphError(f"scored class {scored!r}: choose one of {', '.join(SCORED)}")
        self.scored = scored
        # None: every method's map also Heat-Quantized (where hq has True); else only these
        self.hq_methods = None if hq_methods is None else set(hq_methods)
        self.smooth, self.positive = tuple(float(x) for x in smooth), bool(positive)
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
        self.forwards = {"requested": 0, "distinct": 0}

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

    def variants(self, method, a):
        """(row suffix, map) of each map scored for ``method``: the map itself, Heat-Quantized
        (``hq``, ``hq_methods``), Gaussian-smoothed by each ``smooth`` sigma (pixels) and its
        positive part (``positive``); the last two for the methods, not the sanity rows."""
        out = []
        for use_hq in self.hq:
            if not use_hq:
                out.append(("", a))
            elif self.hq_methods is None or method in self.hq_methods:
                out.append((" +HQ", heat_quantize(a[None])[0]))
        if method in METHOD_NAMES:
            from scipy.ndimage import gaussian_filter

            out += [(f" +blur{sigma:g}", gaussian_filter(np.asarray(a, np.float64), sigma, mode="nearest"))
                    for sigma in self.smooth]
            if self.positive:
                out.append((" +pos", np.maximum(a, 0)))
        return out

    def label(self, method) -> str:
        """The method's row name: ``ig (channel 0)`` where its map is the first channel's."""
        ex = self.explainers.get(method)
        return f"{method} (channel 0)" if ex is not None and "relevance" in ex.outputs else method

    def load(self, path) -> np.ndarray:
        """The photo as the model sees it, H x W x 3 in [0, 1]."""
        return np.asarray(crop(load_rgb(path), self.pre), dtype=np.float32) / 255.0

    def score(self, path, label, index, image=None) -> list:
        """One record per (method, HQ or not, protocol), curves included. Every curve of
        the photo is asked of one CurvePlan, so each distinct perturbed image runs once."""
        cropped = self.load(path) if image is None else image
        p = self.predict(cropped[None])[0]
        plan, asked = CurvePlan(cropped), []
        for m in self.methods:
            for suffix, attribution in self.variants(m, self.attribution(m, cropped, index)):
                for protocol in self.protocols:
                    cls = int(p.argmax()) if protocol == "rise" or self.scored == "predicted" else label
                    asked.append((m, suffix, protocol, plan.add(attribution, cls, protocol, self.seeds)))
        plan.run(self.predict, self.predict.batch_size)
        self.forwards["requested"] += plan.requested
        self.forwards["distinct"] += plan.distinct
        records = []
        for m, suffix, protocol, handle in asked:
            c = plan.curves(handle)
            records.append({"file": path, "label": int(label), "predicted": int(p.argmax()),
                            "p_label": float(p[label]), "method": f"{self.label(m)}{suffix}",
                            "protocol": protocol, **c.scores,
                            "curves": (np.round(c.insertion, 6).tolist(), np.round(c.deletion, 6).tolist())})
        return records

    def forward_seconds(self, batch=None, rounds=3) -> float:
        """The model's forward time per image at its eval batch size: the floor's unit."""
        import time

        batch = batch or self.predict.batch_size
        x = np.random.default_rng(0).random((batch, self.pre.size, self.pre.size, 3), dtype=np.float32)
        self.predict(x)  # warm up
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            self.predict(x)
            times.append(time.perf_counter() - t)
        return float(np.median(times)) / batch


class PartialRun:
    """``per_image.partial.jsonl`` in the output folder: the settings on its first line,
    then one line per scored image (all its records), flushed as each image finishes, so
    that a run killed at any point resumes after its last complete image (a torn last line
    is dropped). Another run's file, with other settings, is refused."""

    def __init__(self, output, settings: dict):
        self.path = os.path.join(output, "per_image.partial.jsonl")
        self.settings, self.done = settings, {}
        if os.path.exists(self.path):
            self._read()
        else:
            os.makedirs(output, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"settings": settings}) + "\n")

    def _read(self):
        with open(self.path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        try:
            found = json.loads(lines[0])["settings"]
        except (ValueError, KeyError):
            found = None
        if found != self.settings:
            raise LrpGraphError(f"{self.path}: an unfinished eval with other settings (methods, protocols, "
                                "HQ, seeds, model or images); finish it with the same command, or delete "
                                "the file or choose another -o to start afresh")
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the line being written when the run stopped
            self.done[entry["file"]] = entry["records"]

    def add(self, path, records):
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"file": path, "records": records}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done[path] = records


def _settings(model_path, items, methods, protocols, hq, seeds, pre, ig_steps, channels, scored,
              hq_methods=None, smooth=(), positive=False) -> dict:
    from .explain import _sha256

    return {"model": _sha256(model_path), "methods": list(methods), "protocols": list(protocols),
            "hq": list(hq), "seeds": list(seeds), "preprocess": (pre or Preprocess()).to_json(),
            "ig_steps": ig_steps, "channels": channels, "scored": scored,
            **({"hq_methods": sorted(hq_methods)} if hq_methods is not None else {}),
            **({"smooth": [float(x) for x in smooth]} if smooth else {}), **({"positive": True} if positive else {}),
            "images": _sha256("\n".join(f"{p},{l}" for p, l in items).encode())}


def _score_locally(scorer, todo, partial, progress, total):
    """Score ``todo`` in order, the next photo decoding on a thread while one is scored."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(scorer.load, todo[0][1]) if todo else None
        for i, (n, path, label) in enumerate(todo):
            image = upcoming.result()
            if i + 1 < len(todo):
                upcoming = pool.submit(scorer.load, todo[i + 1][1])
            partial.add(path, scorer.score(path, label, n, image=image))
            if progress:
                progress(len(partial.done), total)


def evaluate(model_path, items, methods, output, protocols=("paper", "tie-robust"), hq=(False, True),
             seeds=(0, 1, 2), pre: Preprocess | None = None, progress=None, ig_steps=None,
             ray_address=None, workers=None, provider="cpu", channels="sum", scored="label",
             hq_methods=None, smooth=(), positive=False) -> dict:
    """Score every image, then write per_image.jsonl, table.{md,csv,json}, comparisons,
    timing.json and the curves. Images already in the output's per_image.partial.jsonl
    (an interrupted run with the same settings) are not scored again. With
    ``ray_address`` ("" for a local instance) the images are spread over Ray actors.
    ``channels``: CHANNEL_REDUCTIONS (``first`` reproduces the authors' tables; its rows are
    named ``method (channel 0)``). ``hq_methods``: the methods whose maps are also scored
    Heat-Quantized (None: all of them, where ``hq`` has True); ``smooth``: Gaussian sigmas
    (pixels) and ``positive``: more rows, the methods' maps smoothed / clipped at 0."""
    import time

    check_methods(methods)
    make_scorer = functools.partial(Scorer, model_path, methods, protocols, hq, seeds, pre, ig_steps, provider,
                                    channels, scored, hq_methods=hq_methods, smooth=smooth, positive=positive)
    partial = PartialRun(output, _settings(model_path, items, methods, protocols, hq, seeds, pre, ig_steps,
                                           channels, scored, hq_methods, smooth, positive))
    todo = [(n, path, label) for n, (path, label) in enumerate(items) if path not in partial.done]
    t0, timing = time.perf_counter(), {"images": len(todo), "resumed_with": len(items) - len(todo)}
    if ray_address is not None and todo:
        from .ray import score_on_ray

        for path, records in score_on_ray(make_scorer, [(p, l) for _, p, l in todo], ray_address, workers).items():
            partial.add(path, records)
    elif todo:
        scorer = make_scorer()
        _score_locally(scorer, todo, partial, progress, len(items))
        timing.update(scorer.forwards, forward_s_per_image=scorer.forward_seconds())
    timing["wall_s"] = time.perf_counter() - t0
    records = [r for path, _ in items for r in partial.done[path]]
    table = _write_outputs(records, output, len(items), timing)
    os.remove(partial.path)
    return table


def _write_outputs(records, output, n_images, timing) -> list:
    rows, curves = {}, {}
    with atomic_path(os.path.join(output, "per_image.jsonl")) as tmp, open(tmp, "w", encoding="utf-8") as log:
        for rec in records:
            key = (rec["method"], rec["protocol"])
            rows.setdefault(key, []).append(rec)
            curves.setdefault(key, []).append(rec["curves"])
            log.write(json.dumps({k: v for k, v in rec.items() if k != "curves"}) + "\n")
    if "requested" in timing and timing["images"]:
        floor = timing["requested"] * timing["forward_s_per_image"]
        timing.update(floor_s=floor, wall_over_floor=timing["wall_s"] / floor)
    with atomic_path(os.path.join(output, "timing.json")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(timing, fh, indent=1)
    table = summarise(rows)
    comparisons = stats.paired_comparisons(rows)
    write_tables(table, comparisons, output, n_images)
    _save_curves(curves, output)
    plot_curves(curves, output)
    return table


def _save_curves(curves, output) -> None:
    """curves.npz: per row ``METHOD|PROTOCOL``, images x (insertion, deletion) x points."""
    arrays = {f"{m}|{p}": np.array(c, dtype=np.float32) for (m, p), c in curves.items()}
    with atomic_path(os.path.join(output, "curves.npz")) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def summarise(rows: dict) -> list:
    """Per (method, protocol): mean, std and the 95 % bootstrap interval of the mean, per
    score."""
    table = []
    for (method, protocol), scores in rows.items():
        entry = {"method": method, "protocol": protocol, "images": len(scores)}
        for k in ("insertion", "deletion", "id"):
            v = np.array([s[k] for s in scores])
            lo, hi = stats.bootstrap_ci(v)
            entry.update({k: float(v.mean()), f"{k}_std": float(v.std()), f"{k}_lo": lo, f"{k}_hi": hi})
        table.append(entry)
    return table


def _table_lines(table, protocol) -> list:
    lines = [f"### protocol: {protocol}", "",
             "| method | images | insertion ↑ [95 % CI] | deletion ↓ [95 % CI] | ID ↑ [95 % CI] |",
             "|---|---|---|---|---|"]
    for r in sorted((r for r in table if r["protocol"] == protocol), key=lambda r: -r["id"]):
        cells = [f"{r[k]:.3f} [{r[k + '_lo']:.3f}, {r[k + '_hi']:.3f}]" for k in ("insertion", "deletion", "id")]
        lines.append(f"| {r['method']} | {r['images']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _comparison_lines(comparisons, protocol) -> list:
    mine = [c for c in comparisons if c["protocol"] == protocol]
    if not mine:
        return []
    lines = [f"#### paired ID differences ({protocol}): method − baseline, same images", "",
             "| method | baseline | images | mean Δ ID [95 % paired-bootstrap CI] | Wilcoxon p | method better on |",
             "|---|---|---|---|---|---|"]
    for c in mine:
        lines.append(f"| {c['method']} | {c['baseline']} | {c['images']} | {c['mean']:+.3f} "
                     f"[{c['lo']:+.3f}, {c['hi']:+.3f}] | {c['p']:.2g} | {c['wins']}/{c['images']} |")
    return lines + [""]


def write_tables(table, comparisons, output, n_images):
    protocols = sorted({r["protocol"] for r in table})
    lines = [f"{n_images} images. Mean [95 % bootstrap CI of the mean, {stats.RESAMPLES} resamples]. "
             "Sanity rows: constant, random, blob.", ""]
    for protocol in protocols:
        lines += _table_lines(table, protocol) + _comparison_lines(comparisons, protocol)
    text = "\n".join(lines)
    with atomic_path(os.path.join(output, "table.md")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    for name, rows in (("table", table), ("comparisons", comparisons)):
        with atomic_path(os.path.join(output, f"{name}.json")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    with atomic_path(os.path.join(output, "table.csv")) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    print(text)


def plot_curves(curves_acc, output):
    """Per (method, protocol): the mean insertion and deletion curves over the images, each
    in a band of the mean's 95 % normal interval (1.96 standard errors) at every step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for (method, protocol), curves in curves_acc.items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for which, name in ((0, "insertion"), (1, "deletion")):
            values = np.array([c[which] for c in curves], dtype=np.float64)
            mean = values.mean(0)
            half = 1.96 * values.std(0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0 * mean
            t = np.linspace(0, 1, len(mean))
            ax.plot(t, mean, label=name)
            ax.fill_between(t, mean - half, mean + half, alpha=0.25)
        ax.set_xlabel("fraction of the steps")
        ax.set_ylabel("probability of the label")
        ax.set_title(f"{method} ({protocol}, {len(curves)} images)")
        ax.legend()
        fig.tight_layout()
        name = f"curves_{method.replace(' ', '').replace('+', '_')}_{protocol}.png"
        with atomic_path(os.path.join(output, name)) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
