"""Decode any image file to RGB uint8 and fit it to a square, the way `prepare` needs.

Grayscale, palette, RGBA/LA (composited on white), CMYK and 16-bit inputs all become
(H, W, 3) uint8. EXIF orientation is applied, so phone photos stand upright.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

ResizeMode = Literal["squash", "crop", "pad"]


def decode(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 from an image file; raises on unreadable or truncated files."""
    with Image.open(path) as im:
        im.load()  # decode now: a truncated file fails here, not later
        im = ImageOps.exif_transpose(im)
        return to_rgb(im)


def to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F":  # floats: stretch the image's own range
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        elif im.mode.startswith("I;16") or a.max() > 255:
            a = a / 257.0  # 16-bit range onto 8-bit
        g = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def fit(img: np.ndarray, size: int | None, mode: ResizeMode = "squash") -> np.ndarray:
    """Resize (H, W, 3) uint8 to (size, size, 3): stretch, centre-crop or pad to square."""
    h, w = img.shape[:2]
    if size is None or (h == size and w == size):
        return img
    im = Image.fromarray(img)
    if mode == "crop" and h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        im = im.crop((left, top, left + s, top + s))
    elif mode == "pad" and h != w:
        s = max(h, w)
        canvas = Image.new("RGB", (s, s), (0, 0, 0))
        canvas.paste(im, ((s - w) // 2, (s - h) // 2))
        im = canvas
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR))
