"""``dedup.phash`` step 4, verify: the thumbnail check of a candidate pair (mean absolute difference
of brightness-normalised 16x16 thumbnails), screened on 4x4 block means so millions of pairs fit."""

from __future__ import annotations

import numpy as np

VERIFY_BLOCK = 65536  # pairs per thumbnail comparison step (bounds memory: ~130 MiB)


def thumb_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference of brightness-normalised thumbnails (rows of 256 uint8)."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    return np.abs(a - b).mean(axis=1)


def pair_diff(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, bound: float | None = None) -> np.ndarray:
    """:func:`thumb_diff` of rows ``thumbs[i]`` vs ``thumbs[j]``, in blocks (millions of pairs fit).

    With ``bound``, pairs are first screened on 4x4 block means: their mean absolute difference is
    a lower bound of the full one (averaging is a contraction), so a pair above ``bound`` there is
    above it in full and gets that lower bound (> ``bound``) instead of the exact value.
    """
    t = thumbs.reshape(-1, 256).astype(np.float32)
    t -= t.mean(axis=1, keepdims=True)
    coarse = t.reshape(-1, 4, 4, 4, 4).mean(axis=(2, 4)).reshape(-1, 16)
    out = np.empty(i.size, np.float32)
    for lo in range(0, i.size, VERIFY_BLOCK):
        a, b = i[lo:lo + VERIFY_BLOCK], j[lo:lo + VERIFY_BLOCK]
        d = np.abs(coarse[a] - coarse[b]).mean(axis=1)
        if bound is not None:
            close = np.flatnonzero(d <= bound)
            d[close] = np.abs(t[a[close]] - t[b[close]]).mean(axis=1)
        else:
            d = np.abs(t[a] - t[b]).mean(axis=1)
        out[lo:lo + VERIFY_BLOCK] = d
    return out
