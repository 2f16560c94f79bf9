"""``dedup.phash`` step 2b, spectral candidates: pairs a perceptual hash misses under shifts,
wrap-around shifts, crops and small rotations, proposed for the strict geometric check.

A 64-bit pHash moves by 10-30 bits when a 28-px image is shifted by 3 px or rotated by 4 degrees,
so no Hamming threshold finds those copies without flooding the verifier. Copy-detection systems
retrieve loosely and verify strictly (Douze et al., "The 2021 Image Similarity Dataset and
Challenge", 2021; Pizzi et al., CVPR 2022). The retrieval here needs no weights:

* the magnitude of the 2-D Fourier transform does not change under a circular shift (the shift
  theorem behind phase correlation, Kuglin & Hines 1975), changes little under a small translation
  or crop (a crop of 10 % is a 1.1x zoom: low frequencies move by < 1 bin) and rotates with the
  image (5 degrees move a low frequency by < 0.6 bin). Two low-frequency magnitude descriptors of
  the gray 32x32 thumbnail (standardised, log-magnitude): one Hann-windowed (translations, crops,
  rotations) and one unwindowed (exact for wrap-around shifts), see :func:`descriptors`;
* candidates: each row's ``k`` nearest neighbours by cosine in each descriptor (FAISS), kept only
  when clearly closer than the row's own neighbourhood: ``(1 - cos) <= ratio * (1 - mean cos of
  its neighbours ranked 6-20)``, a ratio test in the manner of Lowe (IJCV 2004) that adapts to
  dense regions (look-alike garments) and sparse ones without a global threshold.

Every candidate still has to pass :mod:`curate.ops.geometry` (a mild warp, a noise-level residual),
so this step only decides how many pairs are checked; ``benchmarks/dedup_quality.py`` measures
recall per edit and the number of checks.
"""

from __future__ import annotations

import cv2
import numpy as np

SIDE = 32  # thumbnail side of the descriptors
K_WINDOWED = 6  # frequencies |ky|, kx <= K of the windowed descriptor (84 values)
K_RAW = 4  # ... of the unwindowed one (40 values)
NEIGHBOURS = 20  # neighbours searched per row (the ratio test's reference ranks 6-20)


def _block_mask(k: int) -> np.ndarray:
    """Half-plane of frequencies ky in [-k, k], kx in [0, k] without DC and the mirrored kx=0 half."""
    m = np.ones((2 * k + 1, k + 1), bool)
    m[0, 0] = False
    m[k + 1:, 0] = False
    return m.ravel()


_ROWS = {k: np.r_[0:k + 1, -k:0] for k in (K_WINDOWED, K_RAW)}
_MASKS = {k: _block_mask(k) for k in (K_WINDOWED, K_RAW)}
WIDTHS = (int(_MASKS[K_WINDOWED].sum()), int(_MASKS[K_RAW].sum()))
DIM = sum(WIDTHS)


def _gray(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)
    interp = cv2.INTER_AREA if min(a.shape[:2]) >= SIDE else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(a), (SIDE, SIDE), interpolation=interp).astype(np.float32)


def descriptors(arrays: list[np.ndarray]) -> np.ndarray:
    """(n, DIM) float16 log-magnitude spectra of decoded uint8 images (HxW or HxWx3), any sizes."""
    if not arrays:
        return np.zeros((0, DIM), np.float16)
    g = np.stack([_gray(a) for a in arrays])
    g -= g.mean(axis=(1, 2), keepdims=True)
    g /= g.std(axis=(1, 2), keepdims=True) + 1e-3
    win = np.hanning(SIDE).astype(np.float32)
    out = []
    for x, k in ((g * np.outer(win, win), K_WINDOWED), (g, K_RAW)):
        f = np.abs(np.fft.rfft2(x))[:, _ROWS[k], :k + 1].reshape(len(g), -1)[:, _MASKS[k]]
        out.append(np.log1p(f))
    return np.concatenate(out, axis=1).astype(np.float16)


def _normalised(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x -= x.mean(axis=0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    return np.ascontiguousarray(x, np.float32)


def candidate_pairs(desc: np.ndarray, k: int, ratio: float, knn,
                    groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) proposed by either descriptor block (see the module docstring).

    ``knn(x, k)`` returns (scores, ids) of the ``k`` nearest rows of every row of ``x`` (itself
    included), e.g. :func:`curate.ops.faiss_knn.knn`. Scores are recomputed in float64 from the
    vectors and neighbours ordered by (score, id), so the gate does not depend on the index's
    arithmetic. ``groups``: only pairs within one group.
    """
    n = desc.shape[0]
    z = np.zeros(0, np.int64)
    if n < 3 or k < 1:
        return z, z
    parts = []
    lo = 0
    for w in WIDTHS:
        x = _normalised(desc[:, lo:lo + w])
        lo += w
        _, ids = knn(x, min(NEIGHBOURS + 1, n))
        ids = np.where(ids < 0, np.arange(n)[:, None], ids)
        s = np.einsum("nd,nkd->nk", x.astype(np.float64), x[ids].astype(np.float64))
        s[ids == np.arange(n)[:, None]] = -np.inf  # itself
        order = np.lexsort((ids, -s), axis=1)
        s, ids = np.take_along_axis(s, order, 1), np.take_along_axis(ids, order, 1)
        s, ids = s[:, :-1], ids[:, :-1]  # drop itself (sorted last)
        ref = s[:, 5:NEIGHBOURS]
        ref = np.where(np.isfinite(ref), ref, np.nan)
        mu = np.nanmean(ref, axis=1) if ref.shape[1] else np.full(n, np.nan)
        top = min(k, s.shape[1])
        d = 1.0 - s[:, :top]
        ok = np.isfinite(mu)[:, None] & (d <= ratio * (1.0 - mu)[:, None])
        i = np.repeat(np.arange(n), top).reshape(n, top)[ok]
        j = ids[:, :top][ok]
        parts.append(np.stack([np.minimum(i, j), np.maximum(i, j)], 1))
    p = np.unique(np.concatenate(parts), axis=0) if parts else np.zeros((0, 2), np.int64)
    p = p[p[:, 0] != p[:, 1]]
    if groups is not None and p.size:
        p = p[groups[p[:, 0]] == groups[p[:, 1]]]
    return p[:, 0].astype(np.int64), p[:, 1].astype(np.int64)
