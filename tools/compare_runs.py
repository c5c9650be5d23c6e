"""Pool the per-image records of several `lrpgraph eval` runs on the same photos and print
the table (mean ID with its 95 % bootstrap interval) and the paired comparisons against
chosen baselines, as eval writes them (lrpgraph/stats.py). A search run in stages (raw
composites, then post-processing of the best) is compared as one table this way.

    python tools/compare_runs.py results/tune/per_image.jsonl results/tune2/per_image.jsonl \
        --baselines gradcam,lrp-paper [--methods a,b] [--protocol tie-robust]

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


def pooled(paths) -> dict:
    """(method, protocol) -> records, one per photo, over every file in ``paths``."""
    seen = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                key = (r["method"], r["protocol"], r["file"])
                if key in seen and abs(seen[key]["id"] - r["id"]) > 1e-9:
                    raise SystemExit(f"{path}: {key} scores {r['id']} here and {seen[key]['id']} before")
                seen[key] = r
    rows = {}
    for (method, protocol, _), r in seen.items():
        rows.setdefault((method, protocol), []).append(r)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="per_image.jsonl files")
    ap.add_argument("--baselines", default="gradcam,lrp-paper")
    ap.add_argument("--methods", help="only these rows (comma-separated)")
    ap.add_argument("--protocol", action="append", help="only this protocol (repeatable)")
    args = ap.parse_args(argv)
    rows = pooled(args.runs)
    if args.methods:
        keep = set(args.methods.split(",")) | set(args.baselines.split(","))
        rows = {k: v for k, v in rows.items() if k[0] in keep}
    table = summarise(rows)
    comparisons = paired_comparisons(rows, baselines=tuple(args.baselines.split(",")))
    images = len({r["file"] for records in rows.values() for r in records})
    print(f"{images} photos, {len(args.runs)} run(s)\n")
    for protocol in args.protocol or sorted({p for _, p in rows}):
        print("\n".join(_table_lines(table, protocol) + _comparison_lines(comparisons, protocol)))


if __name__ == "__main__":
    main()
