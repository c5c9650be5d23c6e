"""Explain datasets on a Ray cluster with Ray Data: one ONNX Runtime session per actor,
one GPU per actor on GPU nodes, CPU actors otherwise.

    import ray, lrpgraph.ray
    ds = ray.data.from_items([{"path": p} for p in paths])      # or any dataset with "path"
    out = lrpgraph.ray.explain_dataset(ds, "resnet50.lrp.onnx")  # columns: path, class, probability, target, heatmap

``lrpgraph explain MODEL inputs -o DIR --ray [ADDRESS]`` runs the same actors, which write
each image's files into DIR (a path every node can reach); the driver merges results.jsonl
and skips images already done, as the local command does. Needs ``pip install lrpgraph[ray]``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .errors import LrpGraphError


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise LrpGraphError("--ray needs Ray Data: pip install 'lrpgraph[ray]'") from None
    return ray


class _ExplainActor:
    """Holds one Explainer (one ORT session) for the actor's lifetime."""

    def __init__(self, model, provider="auto", output=None, hq=False, target=None, style=None,
                 preprocess=None):
        from .explain import Explainer

        self.explainer = Explainer(model, provider=provider, preprocess=preprocess)
        self.output, self.hq, self.target = output, hq, target
        self.style = style or self.explainer.style()

    @staticmethod
    def _die_once_for_tests():
        # Kills this worker in the middle of its first batch, once per marker file, so that
        # tests can check that Ray's actor restart and task retry lose no image.
        marker = os.environ.get("LRPGRAPH_TEST_KILL_WORKER_ONCE")
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)

    def __call__(self, batch: dict) -> dict:
        from .preprocess import prepare

        self._die_once_for_tests()
        paths = [str(p) for p in batch["path"]]
        names = [str(n) for n in batch["name"]] if "name" in batch else \
            [os.path.splitext(os.path.basename(p))[0] for p in paths]
        rows = {"path": [], "name": [], "error": [], "record": [], "heatmap": []}

        def add(path, name, error="", record="", heatmap=np.zeros((0, 0), np.float32)):
            for key, value in zip(rows, (path, name, error, record, heatmap)):
                rows[key].append(value)

        good, inputs, crops = [], [], []
        for path, name in zip(paths, names):
            try:
                x, crop = prepare(path, self.explainer.preprocess, self.explainer.max_pixels)
            except Exception as exc:
                add(path, name, error=str(exc))
                continue
            good.append((path, name))
            inputs.append(x)
            crops.append(crop)
        if good:
            out = self.explainer.run(np.stack(inputs), self.target, self.hq)
            result = self.explainer.make_result(out, [n for _, n in good], crops, [p for p, _ in good])
            if self.output:
                result.save_files(self.output, self.style)
            heat = result.heatmaps_hq if result.heatmaps_hq is not None else result.heatmaps
            for i, (path, name) in enumerate(good):
                add(path, name, record=json.dumps(result.record(i)), heatmap=heat[i])
        return {k: np.array(v, dtype=object) if k != "heatmap" else _stack(v) for k, v in rows.items()}


def _stack(maps):
    shapes = {m.shape for m in maps}
    if len(shapes) == 1:
        return np.stack(maps)
    return np.array(maps, dtype=object)


def _actor_args(model, provider, num_gpus, concurrency, output=None, hq=False, target=None, style=None,
                preprocess=None):
    ray = _ray()
    if num_gpus is None:
        num_gpus = 1 if provider in ("auto", "cuda") and ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return dict(
        fn_constructor_kwargs={"model": os.path.abspath(model), "provider": provider if num_gpus else "cpu",
                               "output": output, "hq": hq, "target": target, "style": style,
                               "preprocess": preprocess},
        concurrency=concurrency,
        num_gpus=num_gpus,
        # an actor that dies (node lost, OOM kill) is restarted and its batches retried
        max_restarts=3, max_task_retries=3,
    )


def _connect(address):
    """Ray, joined to the cluster at ``address`` ("" or None: a local instance), with Ray
    Data's progress bars and info logs off."""
    import logging

    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=False, include_dashboard=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def explain_dataset(ds, model, batch_size: int = 8, provider: str = "auto", num_gpus: int | None = None,
                    concurrency: int = 1, hq: bool = False, target=None):
    """Map a Ray Dataset with a ``path`` column to one with columns path, class,
    probability, target, heatmap (and error, empty where the image was explained)."""
    def unpack(row):
        rec = json.loads(row["record"]) if row["record"] else {}
        return {"path": row["path"], "class": rec.get("class", -1), "probability": rec.get("probability", np.nan),
                "target": rec.get("target", -1), "heatmap": row["heatmap"], "error": row["error"]}

    explained = ds.map_batches(_ExplainActor, batch_size=batch_size, batch_format="numpy",
                               **_actor_args(model, provider, num_gpus, concurrency, hq=hq, target=target))
    return explained.map(unpack)


class _ScoreActor:
    """Holds one scorer (evaluate.Scorer: the model and an explainer per method)."""

    def __init__(self, make_scorer):
        self.scorer = make_scorer()

    def __call__(self, batch: dict) -> dict:
        out = []
        for path, label, index in zip(batch["path"], batch["label"], batch["index"]):
            out += self.scorer.score(str(path), int(label), int(index))
        return {"record": np.array([json.dumps(r) for r in out], dtype=object)}


def score_on_ray(make_scorer, items, address, workers=None) -> dict:
    """``lrpgraph eval --ray``: images spread over actors that each hold the scorer
    ``make_scorer()`` returns; the records come back to the driver, which writes the tables.
    Returns {image path as given: its records}."""
    ray = _connect(address)
    workers = workers or int(ray.cluster_resources().get("CPU", 1))
    given = {os.path.abspath(p): p for p, _ in items}
    ds = ray.data.from_items([{"path": os.path.abspath(p), "label": int(l), "index": i}
                              for i, (p, l) in enumerate(items)])
    rows = ds.map_batches(_ScoreActor, batch_size=1, batch_format="numpy", concurrency=workers,
                          fn_constructor_kwargs={"make_scorer": make_scorer},
                          max_restarts=3, max_task_retries=3).take_all()
    records = [json.loads(r["record"]) for r in rows]
    # a retried image reports again: keep one record per (image, method, protocol)
    unique = {(r["file"], r["method"], r["protocol"]): r for r in records}
    by_image = {}
    for (path, _, _), record in sorted(unique.items()):
        record["file"] = given[path]
        by_image.setdefault(given[path], []).append(record)
    return by_image


def explain_paths_ray(model, paths, output, address=None, target=None, hq=False, batch_size=8,
                      overwrite=False, provider="auto", workers=None, style=None, preprocess=None):
    """The ``lrpgraph explain --ray`` command: returns a RunSummary like the local one, and
    claims the output folder for the same settings."""
    from .explain import Explainer
    from .preprocess import find_images
    from .results import holding, pending_images

    # the driver only reads the explainer's metadata and digest: no layout pass for it
    local = Explainer(model, provider="cpu", preprocess=preprocess, cpu_layout=False)
    style = style or local.style()
    settings = local.settings(target, hq, style)
    del local
    ray = _connect(address)
    output = os.path.abspath(output)
    found = find_images(paths, skip=output)
    with holding(output):
        items, summary = pending_images(found, output, overwrite, settings)
        if items:
            _explain_on_ray(ray, items, summary, model, output, target, hq, batch_size, overwrite,
                            provider, workers, style, preprocess)
    return summary


def _explain_on_ray(ray, items, summary, model, output, target, hq, batch_size, overwrite, provider,
                    workers, style, preprocess) -> None:
    """The actors write each image's files; the driver merges results.jsonl."""
    from .results import append_results, compact_results

    workers = workers or max(1, int(ray.cluster_resources().get("GPU", 0)) or int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_items([{"path": os.path.abspath(p), "name": n} for p, n in items])
    rows = ds.map_batches(_ExplainActor, batch_size=batch_size, batch_format="numpy",
                          **_actor_args(model, provider, None, workers, output, hq, target, style, preprocess)
                          ).select_columns(["path", "name", "error", "record"]).take_all()
    seen, lines = set(), []
    for row in rows:
        if row["name"] in seen:  # a retried batch reports its images again
            continue
        seen.add(row["name"])
        if row["error"]:
            summary.failed.append((row["path"], row["error"]))
        else:
            lines.append(row["record"] + "\n")
            summary.explained += 1
    append_results(output, lines)
    if overwrite:
        compact_results(output)
