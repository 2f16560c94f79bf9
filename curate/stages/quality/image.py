"""Photometric checks, vectorised over stacks of equal-shape images (cleanvision 0.3.7 definitions).

cleanvision (cleanlab, ``issue_managers/image_property.py``) computes one PIL image at a time;
here the same statistics are numpy reductions over a ``(B, H, W[, 3])`` stack:

* perceived brightness per pixel ``sqrt(0.241 R^2 + 0.691 G^2 + 0.068 B^2) / 255`` (gray: ``v / 255``);
  **dark** score = its 99th percentile (flag < 0.32), **light** score = 1 - its 5th percentile (flag < 0.05);
* **low_information** score = ``min(0.1 * entropy, 1)`` with PIL's ``Image.entropy`` (log2 entropy of the
  256-bin histogram, 768 bins for RGB) (flag < 0.3);
* **blurry**: resize so the longer side is <= 64 (PIL bicubic), luma, PIL ``FIND_EDGES``;
  ``b = 1 - exp(-0.01 * std(edges))``, ``s = 1 - exp(-0.01 * std(histogram of luma))``,
  score = ``min(b + (s if s > 0.18 else 0), 1)`` (flag < 0.29);
* **grayscale**: one channel, or RGB whose three channels are equal (score 0, else 1; flag < 0.5).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BLUR_MAX_SIDE = 64  # cleanvision MAX_RESOLUTION_FOR_BLURRY_DETECTION


def luma(stack: np.ndarray) -> np.ndarray:
    """PIL's RGB -> L integer formula on a (B, H, W, 3) uint8 stack; gray stacks pass through."""
    if stack.ndim == 3:
        return stack
    s = stack.astype(np.uint32)
    return ((s[..., 0] * 19595 + s[..., 1] * 38470 + s[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def brightness_percentiles(stack: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(5th, 99th) percentile of perceived brightness of every image (numpy linear interpolation)."""
    b = stack.shape[0]
    p5, p99 = np.empty(b), np.empty(b)
    for a in range(0, b, chunk):
        x = stack[a: a + chunk].astype(np.float64)
        if x.ndim == 4:
            x = np.sqrt(0.241 * x[..., 0] ** 2 + 0.691 * x[..., 1] ** 2 + 0.068 * x[..., 2] ** 2) / 255
        else:
            x = x / 255.0
        q = np.percentile(x.reshape(len(x), -1), [5, 99], axis=1)
        p5[a: a + chunk], p99[a: a + chunk] = q[0], q[1]
    return p5, p99


def percentiles_from_hist(hist: np.ndarray, qs: tuple[float, ...]) -> list[np.ndarray]:
    """numpy's linear-interpolation percentiles of gray images, read off (B, 256) histograms."""
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1]
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        v_lo = (cum <= lo[:, None]).sum(axis=1)
        v_hi = (cum <= hi[:, None]).sum(axis=1)
        out.append((v_lo + (v_hi - v_lo) * (pos - lo)) / 255.0)
    return out


def histograms(stack: np.ndarray) -> np.ndarray:
    """(B, 256 * channels) per-image histograms, channels concatenated as PIL's ``histogram()``."""
    b = stack.shape[0]
    c = 1 if stack.ndim == 3 else stack.shape[-1]
    off = (256 * np.arange(c, dtype=np.int32) + (256 * c) * np.arange(b, dtype=np.int32)[:, None, None])
    v = stack.reshape(b, -1, c) + off  # int32: the uint8 values promote once
    return np.bincount(v.ravel(), minlength=b * 256 * c).reshape(b, 256 * c)


def entropy(hist: np.ndarray) -> np.ndarray:
    """PIL ``Image.entropy``: -sum p log2 p over the histogram bins."""
    p = hist / hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.0 - np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0.0).sum(axis=1)  # no -0.0


def _blur_input(stack: np.ndarray) -> np.ndarray:
    """Luma after cleanvision's resize to at most 64 px on the longer side (PIL bicubic, like cleanvision)."""
    h, w = stack.shape[1:3]
    ratio = max(h, w) / BLUR_MAX_SIDE
    if ratio <= 1:
        return luma(stack)
    size = (max(int(w // ratio), 1), max(int(h // ratio), 1))
    return np.stack([np.asarray(Image.fromarray(img).resize(size).convert("L")) for img in stack])


def find_edges(gray: np.ndarray) -> np.ndarray:
    """PIL ``ImageFilter.FIND_EDGES`` (3x3, 8 at the centre, -1 around, clipped; border pixels copied)."""
    out = gray.copy()
    if gray.shape[1] < 3 or gray.shape[2] < 3:
        return out
    g = gray.astype(np.int32)
    box = sum(g[:, 1 + dy: g.shape[1] - 1 + dy, 1 + dx: g.shape[2] - 1 + dx]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    out[:, 1:-1, 1:-1] = np.clip(9 * g[:, 1:-1, 1:-1] - box, 0, 255)
    return out


def blurriness(stack: np.ndarray, luma_hist: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(std of FIND_EDGES response, std of the 256-bin luma histogram) per image.

    ``luma_hist`` (histograms of ``luma(stack)``) is reused when no resize is needed."""
    gray = _blur_input(stack)
    edges = find_edges(gray).reshape(len(gray), -1).astype(np.float32)
    resized = gray.shape[1:] != stack.shape[1:3]
    hist = luma_hist if luma_hist is not None and not resized else histograms(gray)
    return edges.std(axis=1, dtype=np.float64), hist.std(axis=1)


def blurry_score(edge_std: np.ndarray, hist_std: np.ndarray, color_threshold: float = 0.18,
                 normalizing_factor: float = 0.01) -> np.ndarray:
    b = 1 - np.exp(-edge_std * normalizing_factor)
    s = 1 - np.exp(-hist_std * normalizing_factor)
    return np.minimum(b + np.where(s > color_threshold, s, 0.0), 1.0)


def is_grayscale(stack: np.ndarray) -> np.ndarray:
    if stack.ndim == 3:
        return np.ones(stack.shape[0], bool)
    flat = stack.reshape(stack.shape[0], -1, 3)
    return ((flat[..., 0] == flat[..., 1]) & (flat[..., 1] == flat[..., 2])).all(axis=1)
