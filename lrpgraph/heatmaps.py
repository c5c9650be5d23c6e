"""Heatmaps as pictures and as post-processed maps: Heat Quantization (NumPy, for maps the
explainer did not quantize itself), colour maps, overlays on the photo, PNG files.

Needs numpy; matplotlib (colour maps) and Pillow (PNG) where pictures are written.
"""

from __future__ import annotations

import numpy as np

from .atomic import atomic_path


def heat_quantize(alpha: np.ndarray, levels: int = 8) -> np.ndarray:
    """SPEC.md Heat Quantization per image (N x H x W): edges linspace(min, max, L); values
    in [e_i, e_i+1) become e_i; the maximum keeps its value."""
    out = np.empty_like(alpha)
    for i, a in enumerate(alpha):
        edges = np.linspace(a.min(), a.max(), levels).astype(a.dtype)
        idx = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, levels - 1)
        out[i] = np.where(a == a.max(), a.max(), edges[idx])
    return out


def colourise(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """H x W x 3 uint8. Non-negative maps span [0, max]; signed maps are centred at 0 so
    that negative evidence reads as such."""
    from matplotlib import colormaps

    scale = float(np.abs(heat).max()) or 1.0
    if heat.min() >= 0:
        v = heat / scale
    else:
        v = 0.5 + 0.5 * heat / scale
        cmap = "seismic" if cmap == "jet" else cmap
    return (colormaps[cmap](np.clip(v, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def overlay(photo: np.ndarray, heat: np.ndarray, colour: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The colour map blended onto the photo, weighted by |relevance| so that the photo
    shows where nothing is relevant."""
    weight = alpha * np.sqrt(np.abs(heat) / (np.abs(heat).max() or 1.0))[..., None]
    return ((1 - weight) * photo + weight * colour).round().astype(np.uint8)


def save_png(array: np.ndarray, path: str) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_npy(array: np.ndarray, path: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
