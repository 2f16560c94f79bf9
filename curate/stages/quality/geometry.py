"""Geometric checks (cleanvision 0.3.7 definitions).

* **odd_aspect_ratio** score = ``min(w / h, h / w)`` (flag < 0.35);
* **odd_size**: size = ``sqrt(w) * sqrt(h)``; fences ``q1 - 3 IQR`` and ``q3 + 3 IQR`` over *all*
  samples of the run; score = ``1 - clip(|size - mid| / (hi - lo), 0, 1)`` with ``mid`` the fences'
  centre, so a score < 0.5 is outside the fences. When every size is equal (``hi == lo``) cleanvision
  divides by ``mid`` and flags scores < 1, i.e. any size that differs.
"""

from __future__ import annotations

import numpy as np


def aspect_ratio(height: np.ndarray, width: np.ndarray) -> np.ndarray:
    h, w = height.astype(np.float64), width.astype(np.float64)
    return np.minimum(w / h, h / w)


def size(height: np.ndarray, width: np.ndarray) -> np.ndarray:
    return np.sqrt(width.astype(np.float64)) * np.sqrt(height.astype(np.float64))


def size_fences(sizes: np.ndarray, iqr_factor: float = 3.0) -> tuple[float, float]:
    if sizes.size == 0:
        return 0.0, 0.0
    q1, q3 = np.percentile(sizes, [25, 75])
    return float(q1 - iqr_factor * (q3 - q1)), float(q3 + iqr_factor * (q3 - q1))


def odd_size_score(sizes: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, float]:
    """(scores, threshold): cleanvision's normalised distance from the fences' centre."""
    mid, gap = (lo + hi) / 2, hi - lo
    norm, threshold = (gap, 0.5) if gap > 0 else (mid or 1.0, 1.0)
    return 1 - np.clip(np.abs(sizes - mid) / norm, 0, 1), threshold
