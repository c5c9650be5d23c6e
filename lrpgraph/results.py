"""What explaining writes: a Result per batch (arrays, and the files per image), and the
bookkeeping of an output folder (results.jsonl, what is done, what is still to do).

Every file is written atomically; a results.jsonl line is appended, and made durable, only
after the image's files are in place, so a line always means "done".
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_path, sweep_temp_files
from .errors import LrpGraphError
from .heatmaps import Style, colourise, overlay, save_npy, save_png, save_with_colorbar

RESULTS = "results.jsonl"
# What the outputs in a folder were made with: a rerun with other settings must not take
# them as done.
MANIFEST = "run.json"
LOCK = ".lrpgraph.lock"


@dataclass
class Result:
    """One batch's answers. With several targets per image (an explainer built with
    ``--targets K``) ``heatmaps`` is N x K x H x W and ``targets``, ``target_probabilities``
    and ``relevance_sums`` are N x K; each image then has K maps, ``name.k1_285.png`` ..."""

    names: list
    heatmaps: np.ndarray  # N x H x W relevance_map (N x K x H x W)
    classes: np.ndarray  # predicted class per image
    probabilities: np.ndarray  # probability of the predicted class
    targets: np.ndarray  # the class each heatmap explains
    target_probabilities: np.ndarray
    relevance_sums: np.ndarray
    heatmaps_hq: np.ndarray | None = None
    crops: list = field(default_factory=list)  # the RGB pictures the heatmaps lie on
    class_names: list | None = None
    sources: list = field(default_factory=list)
    method: str | None = None  # what made the maps: it picks their default colours
    region: str = ""  # which part of each photo the map covers
    contrast: bool = False  # each of the K maps minus the mean of the other K-1

    def __len__(self):
        return len(self.names)

    @property
    def multi(self) -> bool:
        return self.heatmaps.ndim == 4

    def maps(self, i: int) -> list:
        """(file suffix, map, target, its probability, relevance sum) of each map of image i."""
        if not self.multi:
            return [("", self.heat(i), int(self.targets[i]), float(self.target_probabilities[i]),
                     float(self.relevance_sums[i]))]
        return [(f".k{k + 1}_{int(t)}", self.heat(i)[k], int(t), float(self.target_probabilities[i][k]),
                 float(self.relevance_sums[i][k])) for k, t in enumerate(self.targets[i])]

    def _target_record(self, target, probability, total) -> dict:
        rec = {"target": target, "target_probability": probability, "relevance_sum": total}
        if self.class_names and 0 <= target < len(self.class_names):
            rec["target_name"] = self.class_names[target]
        return rec

    def record(self, i: int) -> dict:
        rec = {"name": self.names[i], "file": self.sources[i] if self.sources else None,
               "class": int(self.classes[i]), "probability": float(self.probabilities[i]), "region": self.region}
        if self.class_names:
            rec["class_name"] = self.class_names[rec["class"]]
        if not self.multi:
            _, _, target, probability, total = self.maps(i)[0]
            return {**rec, **self._target_record(target, probability, total)}
        rec["contrast"] = self.contrast
        rec["targets"] = [{"rank": k + 1, **self._target_record(target, probability, total),
                           "map": self.names[i] + suffix + ".png", "npy": self.names[i] + suffix + ".npy"}
                          for k, (suffix, _, target, probability, total) in enumerate(self.maps(i))]
        return rec

    def style(self, style: Style | None = None) -> Style:
        return style or Style.for_method(self.method)

    def save(self, folder, style: Style | None = None) -> None:
        """Per image ``name.npy``, ``name.png`` (colour-mapped, with a colour bar if the
        style says so) and ``name_overlay.png``, each written atomically, then one line per
        image appended to results.jsonl."""
        self.save_files(folder, style)
        append_results(folder, [json.dumps(self.record(i)) + "\n" for i in range(len(self))])

    def save_files(self, folder, style: Style | None = None) -> None:
        """The per-image files of ``save``, without results.jsonl (Ray workers write these;
        the driver merges the jsonl). Images are written in parallel: PNG encoding, not the
        explainer, bounds throughput on a GPU, and zlib releases the GIL."""
        os.makedirs(folder, exist_ok=True)
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(self.names)))) as pool:
            # list(): re-raise the first failure here rather than lose it in the pool
            list(pool.map(lambda i: self._save_one(folder, i, self.style(style)), range(len(self.names))))

    def heat(self, i):
        return self.heatmaps_hq[i] if self.heatmaps_hq is not None else self.heatmaps[i]

    def title(self, target, probability) -> str:
        if self.class_names and 0 <= target < len(self.class_names):
            return f"{self.class_names[target]} ({probability:.2f})"
        return f"class {target} ({probability:.2f})"

    def _save_one(self, folder, i, style):
        os.makedirs(os.path.dirname(os.path.join(folder, self.names[i])), exist_ok=True)
        for suffix, heat, target, probability, _ in self.maps(i):
            base = os.path.join(folder, self.names[i] + suffix)
            save_npy(heat, base + ".npy")
            colour = colourise(heat, style)
            if style.colorbar:
                save_with_colorbar(heat, style, base + ".png", f"{self.names[i]}: {self.title(target, probability)}")
            else:
                save_png(colour, base + ".png")
            if self.crops:
                save_png(overlay(self.crops[i], heat, colour, style.alpha), base + "_overlay.png")

    def sheet_rows(self, style: Style | None = None) -> list:
        """Per image that has its photo, the panels of its contact-sheet row, (picture,
        label) each: the photo, then map and overlay (or, for K targets, K overlays)."""
        style = self.style(style)
        rows = []
        for i, photo in enumerate(self.crops):
            panels = [(photo, self.names[i])]
            for k, (_, heat, target, probability, _) in enumerate(self.maps(i)):
                colour = colourise(heat, style)
                blend = overlay(photo, heat, colour, style.alpha)
                if self.multi:
                    panels.append((blend, f"{k + 1}: {self.title(target, probability)}"))
                else:
                    panels[0] = (photo, f"{self.names[i]}: {self.title(target, probability)}")
                    panels += [(colour, "relevance"), (blend, "overlay")]
            rows.append(panels)
        return rows


@dataclass
class RunSummary:
    explained: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # (path, reason)


def append_results(folder, lines) -> None:
    """Add lines to ``folder``/results.jsonl and make them durable before going on."""
    with open(os.path.join(folder, RESULTS), "a", encoding="utf-8") as fh:
        fh.writelines(lines)
        fh.flush()
        os.fsync(fh.fileno())


def _records(folder):
    """(name, line) of every whole results.jsonl line; a line cut short by a crash is
    skipped."""
    path = os.path.join(folder, RESULTS)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                yield json.loads(line)["name"], line
            except (ValueError, KeyError, TypeError):
                continue


def done_names(folder) -> set:
    """Images already explained in ``folder``: a results.jsonl line and all their maps."""
    done = set()
    for name, line in _records(folder):
        targets = json.loads(line).get("targets")
        maps = [t.get("npy", "") for t in targets] if isinstance(targets, list) else [name + ".npy"]
        if all(os.path.exists(os.path.join(folder, m)) for m in maps):
            done.add(name)
    return done


def compact_results(folder) -> None:
    """Keep the last line per image (a re-run with --overwrite appends new ones)."""
    if not os.path.exists(os.path.join(folder, RESULTS)):
        return
    latest = {name: line if line.endswith("\n") else line + "\n" for name, line in _records(folder)}
    with atomic_path(os.path.join(folder, RESULTS)) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.writelines(latest.values())


@contextmanager
def holding(output):
    """Hold ``output`` for one run: a second run into it at once is refused (an flock on
    ``output/.lrpgraph.lock``, released when the run ends, also when it is killed), and the
    temporary files a killed run left behind are swept."""
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, LOCK), "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LrpGraphError(f"another lrpgraph run is writing into {output}; wait for it to "
                                "finish, or give another -o") from None
        sweep_temp_files(output)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def claim_folder(output, settings: dict, overwrite: bool) -> None:
    """Record ``settings`` (what the explainer, target, HQ, colours are) in ``output``.
    A folder whose outputs were made with other settings is refused, unless ``overwrite``:
    then its record of what is done is cleared, so that every image is redone."""
    path = os.path.join(output, MANIFEST)
    recorded = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            recorded = json.load(fh)
    elif os.path.exists(os.path.join(output, RESULTS)):
        recorded = {"settings": "unknown (no run.json: an earlier lrpgraph)"}
    if recorded is not None and recorded != settings:
        if not overwrite:
            changed = [f"{k}: {recorded.get(k)!r} -> {settings.get(k)!r}"
                       for k in sorted(set(recorded) | set(settings)) if recorded.get(k) != settings.get(k)]
            raise LrpGraphError(f"{output} holds heatmaps made with other settings ({'; '.join(changed)}); "
                                "give another -o, or --overwrite to redo every image with these")
        with atomic_path(os.path.join(output, RESULTS)) as tmp:
            open(tmp, "w").close()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(settings, fh, indent=1, sort_keys=True)


def run_settings(identity: str, preprocess, target, hq: bool, style) -> dict:
    """What a folder's outputs depend on, as JSON values (so a record read back compares
    equal): the explainer's bytes, the preprocessing, the target, HQ and the pictures."""
    settings = {"explainer_sha256": identity, "preprocess": json.loads(preprocess.to_json()),
                "target": None if target is None else np.asarray(target).tolist(), "hq": bool(hq),
                "pictures": style.to_dict()}
    return json.loads(json.dumps(settings))


def pending_images(items, output, overwrite, settings=None):
    """Of ``items`` (find_images' answer), the images still to explain into ``output``, and
    a summary that counts those already done (all of them are redone with ``overwrite``).
    With ``settings`` the folder is claimed for them first (:func:`claim_folder`)."""
    os.makedirs(output, exist_ok=True)
    if settings is not None:
        claim_folder(output, settings, overwrite)
    summary = RunSummary()
    if not overwrite:
        done = done_names(output)
        summary.skipped = sum(1 for _, n in items if n in done)
        items = [(p, n) for p, n in items if n not in done]
    return items, summary
