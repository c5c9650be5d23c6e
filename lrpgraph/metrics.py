"""Insertion, Deletion and ID score (SPEC.md section 3).

Protocols:

- ``paper`` (the authors' code): 500-pixel steps, ``n = ceil(H*W/500)`` points; at point i
  ``k = min(500*(i+1), H*W-1)`` and every pixel whose attribution is ``>=`` the k-th largest
  (0-based) moves, so tied pixels move together; black substrate (0 in [0, 1] pixel space);
  probability of the ground-truth class.
- ``tie-robust``: the same steps, but exactly ``k`` pixels move at step k, ties broken at
  random with a fixed seed; the mean over several seeds. A map made of ties gains nothing.
- ``rise`` (Petsiuk et al. 2018): steps of one image row (224 pixels) from 0 to all pixels;
  insertion into a blurred copy, deletion to black; probability of the predicted class.

AUC = ``(sum(p) - p[0]/2 - p[-1]/2) / (n - 1)``; ID = insertion - deletion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROTOCOLS = ("paper", "tie-robust", "rise")


def auc(p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64)
    return float((p.sum() - p[0] / 2 - p[-1] / 2) / (len(p) - 1))


def paper_steps(total: int, step: int = 500) -> np.ndarray:
    """The paper's k per point: ``min(step*(i+1), total-1)`` for ``ceil(total/step)`` points."""
    return np.minimum(step * (np.arange(math.ceil(total / step)) + 1), total - 1)


def paper_masks(attribution: np.ndarray, step: int = 500) -> np.ndarray:
    """Boolean masks (n, H, W): the pixels inserted (or deleted) at each point."""
    flat = attribution.ravel()
    ks = paper_steps(flat.size, step)
    thresholds = np.sort(flat)[::-1][ks]
    return (flat[None, :] >= thresholds[:, None]).reshape((len(ks),) + attribution.shape)


def exact_masks(attribution: np.ndarray, ks, rng: np.random.Generator) -> np.ndarray:
    """Exactly k pixels per mask, the k largest; ties broken by a random key."""
    flat = attribution.ravel()
    order = np.lexsort((rng.random(flat.size), -flat))  # last key sorts first
    rank = np.empty(flat.size, dtype=np.int64)
    rank[order] = np.arange(flat.size)
    ks = np.asarray(ks)
    return (rank[None, :] < ks[:, None]).reshape((len(ks),) + attribution.shape)


def blur(image01: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """Gaussian blur (H, W, 3), RISE's insertion substrate (kernel 11, sigma 5)."""
    radius = 5
    x = np.arange(-radius, radius + 1)
    k = np.exp(-x ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    padded = np.pad(image01, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k[i] * padded[i:i + image01.shape[0], :, :] for i in range(len(k)))
    return sum(k[i] * rows[:, i:i + image01.shape[1], :] for i in range(len(k)))


@dataclass
class Curves:
    insertion: np.ndarray  # probability per point (mean over seeds for tie-robust)
    deletion: np.ndarray

    @property
    def scores(self) -> dict:
        ins, dele = auc(self.insertion), auc(self.deletion)
        return {"insertion": ins, "deletion": dele, "id": ins - dele}


# -- sanity maps: what any method must beat -------------------------------------------------

def constant_map(shape) -> np.ndarray:
    return np.ones(shape, np.float32)


def random_map(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def centre_blob(shape, sigma_fraction: float = 0.25) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[:h, :w]
    s = sigma_fraction * min(h, w)
    return np.exp(-((y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2) / (2 * s * s)).astype(np.float32)
