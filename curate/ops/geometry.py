"""Verified geometric alignment of candidate near-duplicate pairs (OpenCV ECC).

Copy-detection systems find candidates loosely and decide strictly (e.g. Pizzi et al.,
"A Self-Supervised Descriptor for Image Copy Detection", CVPR 2022: retrieve, then verify).
Here the strict step is an intensity-based alignment of two normalised thumbnails:

1. both images become gray ``side x side`` float thumbnails (area resampling), so
   rescaling 0.5-2x and aspect-preserving resizes vanish;
2. phase correlation (``cv2.phaseCorrelate``, Kuglin & Hines 1975) gives the translation,
   including wrap-around shifts;
3. ECC (``cv2.findTransformECC``, Evangelidis & Psarakis, PAMI 2008) refines it to an affine
   warp, coarse-to-fine on a two-level pyramid;
4. the warp must be *mild* (rotation <= ``max_rotation``, each axis scale within
   ``scale_range``, shear and translation small) and the Pearson correlation of the two
   thumbnails over their overlap after alignment (brightness / contrast invariant) must reach
   ``min_corr`` on at least ``min_overlap`` of the frame.

Rotations, shifts (one-sided crops, np.roll), off-centre crops, rescaling, JPEG, noise and
brightness / contrast edits of one picture pass; two crops of one texture, star-field tiles,
adjacent CT / MR slices and another view of a scene do not (tests/ops/test_geometry.py).
Nothing is hand-written geometry: OpenCV estimates and applies every transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

cv2.setNumThreads(1)  # pairs are verified in parallel tasks; one thread each


@dataclass(frozen=True)
class VerifySpec:
    side: int = 64  # thumbnail side the alignment runs on
    min_corr: float = 0.95  # Pearson correlation after alignment
    min_overlap: float = 0.6  # share of the frame both thumbnails cover after alignment
    max_rotation: float = 6.0  # degrees
    scale_range: tuple[float, float] = (0.8, 1.25)  # per-axis scale of the warp (after normalisation)
    max_shear: float = 0.06
    max_shift: float = 0.15  # displacement of the centre, share of the side
    max_size_ratio: float = 2.2  # of the two images' shorter sides (rescaling 0.45-2.2x)
    max_aspect_ratio: float = 1.3  # of the two images' aspect ratios (one-sided crops change it)
    ecc_iters: int = 60


DEFAULT = VerifySpec()


def thumbnail(img: np.ndarray, side: int = DEFAULT.side) -> np.ndarray:
    """Gray float32 ``side x side`` thumbnail of a uint8 HxW or HxWx3 image (area resampling)."""
    a = np.asarray(img)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)
    h, w = a.shape
    interp = cv2.INTER_AREA if min(h, w) >= side else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(a), (side, side), interpolation=interp).astype(np.float32)


def _ecc(t: np.ndarray, x: np.ndarray, warp: np.ndarray, iters: int) -> tuple[np.ndarray, bool]:
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iters, 1e-5)
    try:
        _, warp = cv2.findTransformECC(t, x, warp.astype(np.float32), cv2.MOTION_AFFINE, crit, None, 3)
        return warp, True
    except cv2.error:  # not converged / degenerate (e.g. a flat image)
        return warp, False


def align(a: np.ndarray, b: np.ndarray, spec: VerifySpec = DEFAULT) -> tuple[np.ndarray, bool]:
    """Affine warp (2x3, float32) with ``b(W x) ~ a(x)`` for two thumbnails, and whether ECC converged."""
    side = a.shape[0]
    win = cv2.createHanningWindow((side, side), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(a, b, win)
    warp = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    half = side // 2
    a2 = cv2.resize(a, (half, half), interpolation=cv2.INTER_AREA)
    b2 = cv2.resize(b, (half, half), interpolation=cv2.INTER_AREA)
    w2 = warp.copy()
    w2[:, 2] /= 2
    w2, ok = _ecc(a2, b2, w2, spec.ecc_iters)
    if ok:
        warp = w2.copy()
        warp[:, 2] *= 2
    warp, ok = _ecc(a, b, warp, spec.ecc_iters)
    return warp, ok


def warp_params(warp: np.ndarray, side: int) -> tuple[float, float, float, float, float]:
    """(rotation deg, scale_x, scale_y, shear, centre shift in px) of an affine warp (QR decomposition)."""
    m = warp[:, :2].astype(np.float64)
    rot = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    sx = math.hypot(m[0, 0], m[1, 0])
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    sy = det / sx if sx else 0.0
    shear = (m[0, 0] * m[0, 1] + m[1, 0] * m[1, 1]) / (sx * sx) if sx else 0.0
    c = np.array([(side - 1) / 2, (side - 1) / 2])
    moved = m @ c + warp[:, 2] - c
    return rot, sx, sy, shear, float(np.hypot(*moved))


def aligned_corr(a: np.ndarray, b: np.ndarray, warp: np.ndarray) -> tuple[float, float]:
    """(Pearson correlation over the overlap, overlap share) of ``a`` and ``b`` warped onto it."""
    side = a.shape[0]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    wb = cv2.warpAffine(b, warp, (side, side), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(np.ones_like(b), warp, (side, side), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    inside = mask > 0.999
    share = float(inside.mean())
    if share == 0:
        return 0.0, 0.0
    x, y = a[inside].astype(np.float64), wb[inside].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    return (float(x @ y) / den if den > 0 else 0.0), share


def _shape_ok(sa: tuple[int, ...], sb: tuple[int, ...], spec: VerifySpec) -> bool:
    ra, rb = min(sa[:2]), min(sb[:2])
    aa, ab = sa[1] / sa[0], sb[1] / sb[0]
    return max(ra, rb) / max(min(ra, rb), 1) <= spec.max_size_ratio and \
        max(aa, ab) / min(aa, ab) <= spec.max_aspect_ratio


def verify_thumbs(a: np.ndarray, b: np.ndarray, spec: VerifySpec = DEFAULT) -> tuple[bool, float, str]:
    """Verify one pair of thumbnails: (ok, score in [0, 1], detail)."""
    if a.std() < 1e-3 or b.std() < 1e-3:  # a flat picture has no geometry to verify
        return False, 0.0, "flat image: no alignment"
    warp, conv = align(a, b, spec)
    rot, sx, sy, shear, shift = warp_params(warp, a.shape[0])
    corr, share = aligned_corr(a, b, warp)
    lo, hi = spec.scale_range
    mild = (abs(rot) <= spec.max_rotation and lo <= sx <= hi and lo <= sy <= hi
            and abs(shear) <= spec.max_shear and shift <= spec.max_shift * a.shape[0])
    ok = bool(conv and mild and share >= spec.min_overlap and corr >= spec.min_corr)
    px = a.shape[0]
    detail = (f"ecc affine rot {rot:.1f}° scale ({sx:.2f},{sy:.2f}) shift ({warp[0, 2]:.1f},{warp[1, 2]:.1f}) "
              f"of {px} px; corr {corr:.3f} over {share:.0%}" + ("" if conv else "; not converged"))
    return ok, float(min(max(corr, 0.0), 1.0)), detail


def verify_pairs(images: Sequence[np.ndarray], i: np.ndarray, j: np.ndarray,
                 spec: VerifySpec = DEFAULT) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Verify candidate pairs ``(images[i[k]], images[j[k]])`` by aligned correlation.

    ``images``: decoded uint8 arrays (HxW gray or HxWx3 RGB). Returns ``ok`` (bool: a mild warp
    aligns them and they correlate >= ``spec.min_corr``), ``score`` (float64 in [0, 1], the
    aligned correlation; 0 when not compared) and a short ``detail`` string per pair.
    """
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    thumbs: dict[int, np.ndarray] = {}
    ok = np.zeros(i.size, bool)
    score = np.zeros(i.size, np.float64)
    detail: list[str] = []
    for k, (a, b) in enumerate(zip(i.tolist(), j.tolist())):
        sa, sb = np.shape(images[a]), np.shape(images[b])
        if not _shape_ok(sa, sb, spec):
            detail.append(f"sizes {sa[1]}x{sa[0]} vs {sb[1]}x{sb[0]} too different")
            continue
        for r in (a, b):
            if r not in thumbs:
                thumbs[r] = thumbnail(images[r], spec.side)
        ok[k], score[k], d = verify_thumbs(thumbs[a], thumbs[b], spec)
        detail.append(d)
    return ok, score, detail
