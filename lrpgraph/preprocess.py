"""Images to model inputs: what the explainer's metadata says the model expects.

ImageNet default: resize the short side to 256 (bilinear), centre-crop 224, scale to
[0, 1], subtract mean, divide by std, NCHW. Grayscale, palette, CMYK and RGBA images are
converted to RGB; 16-bit images are scaled to 8 bits; EXIF orientation is applied.
"""

from __future__ import annotations

import os
import stat
import warnings

import numpy as np

from .config import Preprocess
from .errors import LrpGraphError

# Smaller than this, a resize to 256 invents the whole picture: refuse rather than explain noise.
MIN_SIDE = 16
# Decompression bombs: larger images are refused by Pillow's own check too.
MAX_PIXELS = 200_000_000


class ImageError(LrpGraphError):
    """One image could not be used; the batch goes on without it."""


def load_rgb(source, max_pixels: int = MAX_PIXELS):
    """A PIL RGB image from a path, a PIL image, or an H x W [x C] uint8/uint16 array. A
    file that is no regular file (a named pipe, a device) is refused unopened; an image of
    more than ``max_pixels`` pixels is refused (Pillow only warns between 1x and 2x)."""
    from PIL import Image, ImageOps

    if isinstance(source, (str, os.PathLike)):
        _regular(source)
        try:
            Image.MAX_IMAGE_PIXELS = max_pixels
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(source) as im:
                    im.load()
                    image = ImageOps.exif_transpose(im)
                    image = image.copy() if image is im else image
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageError(f"{source}: more than {max_pixels} pixels; refused as a possible "
                             "decompression bomb (--max-pixels N to allow it)") from None
        except Exception as exc:
            raise ImageError(f"{source}: not a readable image ({type(exc).__name__}: {exc})") from None
    elif isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray) and source.ndim in (2, 3):
        image = Image.fromarray(_to_uint8(source))
    else:
        raise ImageError(f"cannot read an image from {type(source).__name__}")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray(_to_uint8(np.asarray(image)))
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if "A" in image.mode or image.mode == "P" \
            else image.convert("RGB")
    if min(image.size) < MIN_SIDE:
        raise ImageError(f"{_label(source)}: {image.size[0]}x{image.size[1]} pixels is too small "
                         f"to explain (at least {MIN_SIDE} on the short side)")
    return image


def _regular(path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path}: not a regular file (a named pipe, socket or device); skipped unopened")


def _label(source):
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "image"


def _to_uint8(array):
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype in (np.uint16, np.int32, np.uint32):
        if array.dtype == np.uint16 or array.max() > 255:  # 16-bit samples: 65535 -> 255
            return (np.clip(array.astype(np.float64), 0, 65535) / 257).round().astype(np.uint8)
        return np.clip(array, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("the image array holds NaN or Inf")
        return (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    raise ImageError(f"unsupported image array dtype {array.dtype}")


def crop(image, pre: Preprocess):
    """Resize the short side to ``pre.resize``, centre-crop ``pre.size`` (or, with
    ``fit="pad"``, fit the whole image into the square, padded with the mean colour, which
    normalises to 0): the picture the heatmap lies on."""
    from PIL import Image

    w, h = image.size
    if pre.fit == "pad":
        scale = pre.size / max(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        canvas = Image.new("RGB", (pre.size, pre.size), tuple(round(255 * m) for m in pre.mean))
        canvas.paste(image, ((pre.size - image.size[0]) // 2, (pre.size - image.size[1]) // 2))
        return canvas
    scale = pre.resize / min(w, h)
    image = image.resize((max(pre.size, round(w * scale)), max(pre.size, round(h * scale))),
                         Image.BILINEAR)
    w, h = image.size
    left, top = (w - pre.size) // 2, (h - pre.size) // 2
    return image.crop((left, top, left + pre.size, top + pre.size))


def normalise(images01: np.ndarray, pre: Preprocess) -> np.ndarray:
    """RGB in [0, 1], ``... x H x W x 3``, to the model's input: mean/std, float32, channels
    first unless the model is NHWC."""
    x = ((images01 - np.asarray(pre.mean)) / np.asarray(pre.std)).astype(np.float32)
    return x if pre.layout == "NHWC" else np.ascontiguousarray(np.moveaxis(x, -1, -3))


def to_input(cropped, pre: Preprocess) -> np.ndarray:
    """C x H x W (or H x W x C for NHWC models) float32, normalised."""
    return normalise(np.asarray(cropped, dtype=np.float32) / 255.0, pre)


def prepare(source, pre: Preprocess, max_pixels: int = MAX_PIXELS):
    """(model input, cropped RGB uint8 array) for one image."""
    cropped = crop(load_rgb(source, max_pixels), pre)
    return to_input(cropped, pre), np.asarray(cropped)


def find_images(paths, skip=None):
    """Expand files and folders (recursively) into [(path, name for outputs)]. Folder
    members are named by their path inside the folder so that a/cat.jpg and b/cat.jpg
    do not collide, and files of one stem (cat.jpg, cat.png) keep their extension in the
    name (cat.jpg, cat.png) so that neither overwrites the other. Every non-hidden file is
    tried: one that is no image is reported, not silently dropped. A folder ``skip`` (the
    output folder) is not walked. Nothing found is an error."""
    found = []
    skip = os.path.realpath(skip) if skip else None
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found += _walk(p, skip)
        elif os.path.exists(p):
            found.append((p, os.path.basename(p)))
        else:
            raise LrpGraphError(f"{p}: no such file or folder")
    if not found:
        raise LrpGraphError(f"no images found under {', '.join(map(os.fspath, paths))}")
    return _unique([os.path.splitext(name)[0] for _, name in found], found)


def _unique(stems, found):
    """Names without the extension where that is unique, with it where not, and a counter
    where even that repeats (one file given twice, or a/x.jpg given beside b/x.jpg)."""
    counts = {s: stems.count(s) for s in set(stems)}
    names = [name if counts[stem] > 1 else stem for stem, (_, name) in zip(stems, found)]
    seen, out = {}, []
    for (path, _), name in zip(found, names):
        seen[name] = seen.get(name, 0) + 1
        out.append((path, name if seen[name] == 1 else f"{name}_{seen[name]}"))
    return out


def _walk(folder, skip):
    """The non-hidden files under ``folder``, named by their path inside it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and os.path.realpath(os.path.join(root, d)) != skip]
        for f in sorted(f for f in files if not f.startswith(".")):
            full = os.path.join(root, f)
            found.append((full, os.path.relpath(full, folder)))
    return found
