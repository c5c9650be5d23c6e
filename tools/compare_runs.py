"""Pool the per-image records of several `lrpgraph eval` runs on the same photos and print
the table (mean ID with its 95 % bootstrap interval) and the paired comparisons against
chosen baselines, as eval writes them (lrpgraph/stats.py). A search run in stages (raw
composites, then post-processing of the best) is compared as one table this way.

    python tools/compare_runs.py results/tune/per_image.jsonl results/tune2/per_image.jsonl \
        --baselines gradcam,lrp-paper [--methods a,b] [--protocol tie-robust] \
        [--groups animals:0-397,objects:398-999]

--groups repeats the table and the comparisons for each named range of ground-truth class
indices (ImageNet's classes 0-397 are animals, 398-999 artefacts, scenes and food).

A row present in several runs must score the same on each photo (the runs are
deterministic); a mismatch is an error, as a mix of settings would be.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lrpgraph.evaluate import _comparison_lines, _table_lines, summarise  # noqa: E402
from lrpgraph.stats import paired_comparisons  # noqa: E402


def records(lines):
    """The records of a per_image.jsonl, or of the per_image.partial.jsonl of a run still going
    (a settings line, then one line of records per photo)."""
    for line in lines:
        entry = json.loads(line)
        if "settings" in entry:
            continue
        yield from entry.get("records", [entry])


def pooled(paths) -> dict:
    """(method, protocol) -> records, one per photo, over every file in ``paths``."""
    seen = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for r in records(fh):
                key = (r["method"], r["protocol"], r["file"])
                if key in seen and abs(seen[key]["id"] - r["id"]) > 1e-9:
                    raise SystemExit(f"{path}: {key} scores {r['id']} here and {seen[key]['id']} before")
                seen[key] = r
    rows = {}
    for (method, protocol, _), r in seen.items():
        rows.setdefault((method, protocol), []).append(r)
    return rows


def class_groups(spec: str) -> list:
    """'name:lo-hi,...' -> [(name, lo, hi)], inclusive ranges of class indices."""
    groups = []
    for part in spec.split(","):
        try:
            name, span = part.split(":")
            lo, hi = (int(v) for v in span.split("-"))
        except ValueError:
            raise SystemExit(f"--groups: {part!r} is not NAME:LO-HI (e.g. animals:0-397)") from None
        groups.append((name, lo, hi))
    return groups


def report(rows: dict, baselines: tuple, protocols, title: str) -> None:
    table = summarise(rows)
    comparisons = paired_comparisons(rows, baselines=baselines)
    images = len({r["file"] for records in rows.values() for r in records})
    print(f"## {title}: {images} photos\n")
    for protocol in protocols or sorted({p for _, p in rows}):
        print("\n".join(_table_lines(table, protocol) + _comparison_lines(comparisons, protocol)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="per_image.jsonl files")
    ap.add_argument("--baselines", default="gradcam,lrp-paper")
    ap.add_argument("--methods", help="only these rows (comma-separated)")
    ap.add_argument("--protocol", action="append", help="only this protocol (repeatable)")
    ap.add_argument("--groups", help="also per group of ground-truth classes: NAME:LO-HI,...")
    args = ap.parse_args(argv)
    groups = class_groups(args.groups) if args.groups else []
    rows = pooled(args.runs)
    if args.methods:
        keep = set(args.methods.split(",")) | set(args.baselines.split(","))
        rows = {k: v for k, v in rows.items() if k[0] in keep}
    baselines = tuple(args.baselines.split(","))
    report(rows, baselines, args.protocol, f"all, {len(args.runs)} run(s)")
    for name, lo, hi in groups:
        part = {k: [r for r in v if lo <= r["label"] <= hi] for k, v in rows.items()}
        report({k: v for k, v in part.items() if v}, baselines, args.protocol, f"{name} (classes {lo}-{hi})")


if __name__ == "__main__":
    main()
