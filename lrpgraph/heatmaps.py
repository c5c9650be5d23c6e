"""Heatmaps as pictures and as post-processed maps: Heat Quantization (NumPy, for maps the
explainer did not quantize itself), colour maps, overlays on the photo, colour bars, contact
sheets, PNG/NPY files.

The LRP literature (zennit's ``imgify``, the authors' figures) shows signed relevance on a
diverging colour map centred at 0 with symmetric limits: that is the default for LRP and
the gradient methods; the CAMs (non-negative by construction) keep a sequential map.
Colours span a robust maximum (the 99.5th percentile of |relevance|), so a few extreme
pixels do not leave the rest of the map faint.

Needs numpy; matplotlib (colour maps) and Pillow (PNG) where pictures are written.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass

import numpy as np

from .atomic import atomic_path
from .errors import LrpGraphError

DIVERGING = "bwr"
SEQUENTIAL = "jet"
# methods whose maps are non-negative by construction: a sequential colour map
_CAMS = ("gradcam", "scorecam")


@dataclass(frozen=True)
class Style:
    """How heatmaps are drawn: the colour map, the overlay's strength, a colour bar."""

    cmap: str = DIVERGING
    alpha: float = 0.7  # overlay weight where relevance is at its (robust) maximum
    colorbar: bool = False

    @classmethod
    def for_method(cls, method: str | None, cmap: str | None = None, alpha: float | None = None,
                   colorbar: bool = False) -> "Style":
        default = SEQUENTIAL if method in _CAMS else DIVERGING
        return cls(cmap or default, 0.7 if alpha is None else alpha, colorbar)

    @property
    def diverging(self) -> bool:
        return self.cmap != SEQUENTIAL

    def to_dict(self) -> dict:
        return asdict(self)


def require_pictures(what: str) -> None:
    """One clear error, before anything is written, where Pillow or matplotlib is missing."""
    missing = [name for module, name in (("PIL.Image", "Pillow"), ("matplotlib.colors", "matplotlib"))
               if not _importable(module)]
    if missing:
        raise LrpGraphError(f"{what} needs {' and '.join(missing)}, which this Python lacks: "
                            "pip install -e '.[cpu]' (or '.[gpu]'), as the README says, "
                            f"or pip install {' '.join(missing)}")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def heat_quantize(alpha: np.ndarray, levels: int = 8) -> np.ndarray:
    """SPEC.md Heat Quantization per image (N x H x W): edges linspace(min, max, L); values
    in [e_i, e_i+1) become e_i; the maximum keeps its value."""
    out = np.empty_like(alpha)
    for i, a in enumerate(alpha):
        edges = np.linspace(a.min(), a.max(), levels).astype(a.dtype)
        idx = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, levels - 1)
        out[i] = np.where(a == a.max(), a.max(), edges[idx])
    return out


def robust_scale(heat: np.ndarray) -> float:
    """The 99.5th percentile of |heat|, or its maximum where that is 0 (sparse maps), or 1."""
    magnitude = np.abs(heat)
    scale = float(np.percentile(magnitude, 99.5))
    return scale if scale > 0 else (float(magnitude.max()) or 1.0)


def limits(heat: np.ndarray, style: Style) -> tuple[float, float]:
    """(vmin, vmax) of the colour map: symmetric about 0 for a diverging map or a signed
    map, [0, scale] otherwise."""
    scale = robust_scale(heat)
    return (-scale, scale) if style.diverging or heat.min() < 0 else (0.0, scale)


def colourise(heat: np.ndarray, style: Style = Style()) -> np.ndarray:
    """H x W x 3 uint8."""
    from matplotlib import colormaps

    lo, hi = limits(heat, style)
    v = np.clip((heat - lo) / (hi - lo), 0, 1)
    return (colormaps[style.cmap](v)[..., :3] * 255).round().astype(np.uint8)


def overlay(photo: np.ndarray, heat: np.ndarray, colour: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """The colour map blended onto the photo, ``alpha`` where |relevance| reaches the robust
    maximum and less where it is small, so that the photo shows where nothing is relevant."""
    weight = alpha * np.clip(np.abs(heat) / robust_scale(heat), 0, 1)[..., None]
    return ((1 - weight) * photo + weight * colour).round().astype(np.uint8)


def save_png(array: np.ndarray, path: str) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_npy(array: np.ndarray, path: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def save_with_colorbar(heat: np.ndarray, style: Style, path: str, title: str = "") -> None:
    """The colour-mapped heat with a colour bar that reads relevance, as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 3.8), dpi=100)
    ax = fig.add_subplot()
    lo, hi = limits(heat, style)
    shown = ax.imshow(heat, cmap=style.cmap, vmin=lo, vmax=hi)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="relevance")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def contact_sheet(rows, path: str) -> None:
    """One PNG, a row per image: its panels side by side (photo | map | overlay, or the
    photo and an overlay per target), each titled. ``rows``: lists of (picture, label)."""
    from matplotlib.figure import Figure

    columns = max(len(panels) for panels in rows)
    fig = Figure(figsize=(2.5 * columns, 2.6 * len(rows)), dpi=100)
    for r, panels in enumerate(rows):
        for c, (picture, label) in enumerate(panels):
            ax = fig.add_subplot(len(rows), columns, columns * r + c + 1)
            ax.imshow(picture)
            ax.set_axis_off()
            ax.set_title(label, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
