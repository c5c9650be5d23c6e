"""Statistics for eval's tables: bootstrap intervals of a mean, and paired comparisons of
two methods on the same images (the mean difference, its paired-bootstrap interval, and
scipy's Wilcoxon signed-rank test)."""

from __future__ import annotations

import numpy as np

RESAMPLES = 10000
BASELINES = ("gradcam", "lrp-paper")


def bootstrap_ci(values, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded: tables reproduce)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), float(v.mean())
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def paired(a, b) -> dict:
    """``a - b`` over the same images: mean, paired-bootstrap 95 % interval, Wilcoxon p
    (1 where every difference is 0), how many images ``a`` wins."""
    from scipy.stats import wilcoxon

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    lo, hi = bootstrap_ci(d)
    p = 1.0 if not np.any(d) else float(wilcoxon(d).pvalue)
    return {"images": int(d.size), "mean": float(d.mean()), "lo": lo, "hi": hi, "p": p, "wins": int((d > 0).sum())}


def paired_comparisons(rows: dict, baselines=BASELINES) -> list:
    """Every row against each baseline present, per protocol, on the images both have,
    by ID score. ``rows``: (method, protocol) -> records with ``file`` and ``id``."""
    out = []
    for (method, protocol), records in sorted(rows.items()):
        mine = {r["file"]: r["id"] for r in records}
        for base in baselines:
            theirs = {r["file"]: r["id"] for r in rows.get((base, protocol), [])}
            shared = [f for f in mine if f in theirs]
            if method == base or len(shared) < 2:
                continue
            out.append({"method": method, "baseline": base, "protocol": protocol,
                        **paired([mine[f] for f in shared], [theirs[f] for f in shared])})
    return out
