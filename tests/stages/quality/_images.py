"""Tiny images with known quality answers, made from scikit-image's shipped photos."""

from __future__ import annotations

import numpy as np
import skimage.data
import skimage.exposure
import skimage.filters
import skimage.transform
from PIL import Image


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR))


def planted() -> dict[str, np.ndarray]:
    """name -> image; the name says which check (if any) must flag it."""
    rgb = _resize(skimage.data.astronaut(), 64, 64)
    cat = _resize(skimage.data.chelsea(), 64, 64)
    gray = _resize(skimage.data.camera(), 64, 64)
    blank = np.zeros((64, 64), np.uint8)
    blank[30:33, 30:33] = 200  # 9 of 4096 pixels: under 1 % content
    # cleanvision's "blurry" needs weak edges *and* a flat histogram: a heavily blurred, equalised photo
    smooth = skimage.filters.gaussian(skimage.data.astronaut(), sigma=32, channel_axis=-1)
    blurred = (skimage.exposure.equalize_hist(smooth) * 255).astype(np.uint8)
    return {
        "clean_rgb": rgb,
        "clean_cat": cat,
        "dark": (rgb * 0.1).astype(np.uint8),
        "light": (255 - (255 - rgb.astype(np.float64)) * 0.02).astype(np.uint8),
        "blurry": blurred,
        "gray": gray,
        "near_blank": blank,
        "padding": np.full((64, 64), 0, np.uint8),
        "strip": rgb[:16].copy(),  # 16 x 64: min(w/h, h/w) = 0.25
    }
