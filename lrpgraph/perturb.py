"""The insertion/deletion curves of every map of one photo, each distinct perturbed image
predicted once, in large batches.

Every image a curve needs is "the photo where a mask keeps it, a substrate elsewhere":
insertion keeps the mask's pixels on black (RISE: on a blurred copy), deletion keeps the
others on black. Tied maps make many steps' masks equal (a constant map under the paper's
protocol needs two distinct images for its 202 points), and maps of one photo share masks
(the last steps, HQ's ties). A :class:`CurvePlan` collects the masks of all the curves
asked of it, keeps one copy of each distinct (mask, substrate), predicts those in batches,
and hands each curve its probabilities. ``requested`` counts the images the curves would
have cost one by one: the forward floor eval's speed is measured against.
"""

from __future__ import annotations

import numpy as np

from .metrics import PROTOCOLS, Curves, blur, exact_masks, paper_masks, paper_steps


def protocol_masks(attribution: np.ndarray, protocol: str, seeds=(0, 1, 2), step: int = 500) -> list:
    """The mask stacks (n, H, W) a protocol averages its curves over: one (paper, rise) or
    one per seed (tie-robust)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: choose one of {PROTOCOLS}")
    if protocol == "paper":
        return [paper_masks(attribution, step)]
    if protocol == "tie-robust":
        ks = paper_steps(attribution.size, step)
        return [exact_masks(attribution, ks, np.random.default_rng(s)) for s in seeds]
    ks = np.arange(0, attribution.size + 1, attribution.shape[1])
    return [exact_masks(attribution, ks, np.random.default_rng(seeds[0]))]


class CurvePlan:
    def __init__(self, image01: np.ndarray):
        self.image = image01
        self.substrates = {"black": np.zeros_like(image01)}
        self._index: dict = {}
        self._packed: list = []  # (substrate, packed mask) per distinct image
        self._curves: list = []  # (label, [(insertion indices, deletion indices)] per mask stack)
        self.requested = 0
        self.probabilities = None

    def _image(self, kept: np.ndarray, substrate: str) -> int:
        key = (substrate, np.packbits(kept).tobytes())
        if key not in self._index:
            self._index[key] = len(self._packed)
            self._packed.append(key)
        return self._index[key]

    def add(self, attribution, label: int, protocol: str, seeds=(0, 1, 2), step: int = 500) -> int:
        """Ask for one map's curves; returns the handle :meth:`curves` takes."""
        if attribution.shape != self.image.shape[:2]:
            raise ValueError(f"attribution {attribution.shape} does not match the image {self.image.shape[:2]}")
        into = "black"
        if protocol == "rise":
            self.substrates.setdefault("blur", blur(self.image))
            into = "blur"
        stacks = []
        for masks in protocol_masks(attribution, protocol, seeds, step):
            ins = [self._image(m, into) for m in masks]
            dele = [self._image(~m, "black") for m in masks]
            stacks.append((np.array(ins), np.array(dele)))
            self.requested += 2 * len(masks)
        self._curves.append((label, stacks))
        return len(self._curves) - 1

    @property
    def distinct(self) -> int:
        return len(self._packed)

    def run(self, predict, batch: int = 64) -> None:
        """``predict(images (n, H, W, 3) in [0, 1]) -> probabilities (n, classes)``, called
        on every distinct image once, ``batch`` at a time."""
        h, w = self.image.shape[:2]
        out = []
        for start in range(0, len(self._packed), batch):
            chunk = self._packed[start:start + batch]
            kept = np.unpackbits(np.frombuffer(b"".join(k for _, k in chunk), np.uint8).reshape(len(chunk), -1),
                                 axis=1, count=h * w).reshape(len(chunk), h, w, 1).astype(bool)
            substrate = np.stack([self.substrates[s] for s, _ in chunk])
            out.append(predict(np.where(kept, self.image[None], substrate)))
        self.probabilities = np.concatenate(out) if out else np.zeros((0, 0))

    def curves(self, handle: int) -> Curves:
        label, stacks = self._curves[handle]
        p = self.probabilities[:, label]
        return Curves(np.mean([p[ins] for ins, _ in stacks], axis=0), np.mean([p[d] for _, d in stacks], axis=0))


def perturbation_curves(predict, image01: np.ndarray, attribution: np.ndarray, label: int,
                        protocol: str = "paper", seeds=(0, 1, 2), step: int = 500) -> Curves:
    """``predict(batch of H x W x 3 images in [0, 1]) -> probabilities (n, classes)``;
    ``label`` is the ground truth (paper, tie-robust) — RISE uses the predicted class. One
    map's curves; perturb.CurvePlan scores many maps of a photo at once."""
    if protocol == "rise":
        label = int(np.argmax(predict(image01[None])[0]))
    plan = CurvePlan(image01)
    handle = plan.add(attribution, label, protocol, seeds, step)
    plan.run(predict)
    return plan.curves(handle)
