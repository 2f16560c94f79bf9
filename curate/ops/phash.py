"""Batched 64-bit perceptual hashes (pHash, dHash) with the ``imagehash`` definitions.

Same definitions as ``imagehash`` 4.3 (the reference implementation imagededup
and most dedup tools follow):

* **pHash** (Zauner 2010; hackerfactor "Looks like it"): luma, Lanczos resize to
  32x32, 2-D DCT-II (``scipy.fftpack.dct`` along rows then columns), the top-left
  8x8 block *including* the DC term, bit = coefficient > median of the 64.
* **dHash** (hackerfactor "Kind of like that"): luma, Lanczos resize to 9x8
  (w x h), bit = pixel > its left neighbour.

Bits are read row-major, first bit most significant, so ``int(str(imagehash.phash(img)), 16)``
equals our uint64 value.

The resize reproduces Pillow's fixed-point Lanczos resampler bit for bit
(``curate.ops.lanczos``: banded taps over blocks of image lanes for small images, one image at a
time in Pillow's int32 arithmetic for large ones and for dHash, compiled with numba, with the DCT
fused in; Pillow 13 picks the cheaper pass order per geometry, probed once). The RGB->L conversion is Pillow's integer formula. The median and the bit order
are imagehash's; where our DCT's summation order could flip a bit (two middle coefficients within
1e-9 relative), the image is redone with imagehash's own fftpack calls.
"""

from __future__ import annotations

import io as _io
from functools import lru_cache

import numpy as np
import scipy.fftpack
from PIL import Image

from curate.ops import lanczos

# images per compiled block; None picks by image size (read at call time, so tests can pin it)
LANES: int | None = None


def _lanes(h: int, w: int) -> int:
    """Block size: 32 images up to 32x32 px, 8 above (measured at 28..512 px: larger blocks spill
    the cache, smaller ones leave SIMD lanes idle)."""
    if LANES:
        return LANES
    return 32 if h * w <= 32 * 32 else 8


# images of at least this many pixels are resized one at a time (lanczos.resize_large_kernel);
# small outputs (dHash's 9x8) always are
LARGE_MIN = 64 * 64


def _large(h: int, w: int, out_h: int, out_w: int, order: str) -> bool:
    """Whether the one-image-at-a-time kernels apply: both passes, a known Pillow pass order, and an image large enough (or an output small enough) that they are faster (measured at 28 to
    512 px: below ~64x64 px the lane kernels win for pHash's 32x32; for dHash's 9x8 the one-image
    kernels win at every size)."""
    return (order in ("hv", "vh") and h != out_h and w != out_w
            and (h * w >= LARGE_MIN or out_h * out_w < 32 * 32))


def _geometry_int(h: int, w: int, out_h: int, out_w: int):
    hs, hk = lanczos.band_int(w, out_w)
    vs, vk = lanczos.band_int(h, out_h)
    return hs, hk, vs, vk


def _geometry(h: int, w: int, out_h: int, out_w: int):
    hs, hw = lanczos.band(w, out_w)
    vs, vw = lanczos.band(h, out_h)
    return hs, hw, vs, vw


def _pass_order(h: int, w: int, out_h: int, out_w: int) -> str:
    """Which pass Pillow runs first for this geometry ("hv" or "vh"), found once by probing Pillow."""
    return _probe_order(h, w, out_h, out_w)


@lru_cache(maxsize=1024)
def _probe_order(h: int, w: int, out_h: int, out_w: int) -> str:
    if h == out_h or w == out_w:
        return "hv"  # a single pass: order is irrelevant
    rng = np.random.default_rng(h * 100003 + w)
    probe = rng.integers(0, 256, (1, h, w), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(probe[0]).resize((out_w, out_h), Image.Resampling.LANCZOS))
    for order in ("hv", "vh"):
        if np.array_equal(_resize(probe, out_h, out_w, order)[0], ref):
            return order
    return "pil"  # unknown Pillow behaviour: fall back to Pillow itself, per image


def _pil_resize(gray: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(g).resize((out_w, out_h), Image.Resampling.LANCZOS))
                     for g in gray]).astype(np.float64)


def _resize(gray: np.ndarray, out_h: int, out_w: int, order: str | None = None) -> np.ndarray:
    """Exact Pillow Lanczos resize of (N, H, W) uint8 -> float64 (N, out_h, out_w)."""
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    n, h, w = gray.shape
    order = order or _pass_order(h, w, out_h, out_w)
    if order == "pil":
        return _pil_resize(gray, out_h, out_w)
    out = np.empty((n, out_h, out_w), np.float64)
    if _large(h, w, out_h, out_w, order):
        lanczos.resize_large_kernel(gray, order == "hv", *_geometry_int(h, w, out_h, out_w), out)
        return out
    lanczos.resize_kernel(gray, order == "hv", *_geometry(h, w, out_h, out_w), _lanes(h, w), out)
    return out


def resize_lanczos(gray: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize a batch (N, H, W) of uint8 gray images like ``PIL.Image.resize((out_w, out_h), LANCZOS)``.

    Returns float64 (N, out_h, out_w) holding exactly the uint8 values PIL produces.
    """
    return _resize(np.asarray(gray), out_h, out_w)


def to_luma(arr: np.ndarray) -> np.ndarray:
    """(..., H, W) uint8 stays; (..., H, W, 3) RGB -> Pillow's ``convert('L')`` (ITU-R 601-2, fixed point)."""
    if arr.ndim >= 3 and arr.shape[-1] == 3:
        a = arr.astype(np.uint32)
        return ((a[..., 0] * 19595 + a[..., 1] * 38470 + a[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    return arr


def bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    """(N, 64) booleans, row-major, first bit most significant -> uint64 (N,)."""
    packed = np.packbits(np.asarray(bits, dtype=bool).reshape(-1, 64), axis=1, bitorder="big")
    return packed.view(">u8").reshape(-1).astype(np.uint64)


def to_hex(h: int | np.integer) -> str:
    """The 16-character hex string imagehash prints for a 64-bit hash."""
    return f"{int(h):016x}"


def from_hex(s: str) -> np.uint64:
    """Parse an imagehash hex string (``str(imagehash.phash(img))``) into our uint64."""
    return np.uint64(int(s, 16))


def _phash_exact(px: np.ndarray) -> np.ndarray:
    """imagehash's own computation on (N, 32, 32) resized pixels: fftpack DCT, median."""
    d = scipy.fftpack.dct(scipy.fftpack.dct(px.astype(np.float64), axis=1), axis=2)
    low = d[:, :8, :8].reshape(len(px), 64)
    return low > np.median(low, axis=1)[:, None]


def _phash(gray: np.ndarray, thumbs: np.ndarray | None = None) -> np.ndarray:
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    n, h, w = gray.shape
    order = _pass_order(h, w, 32, 32)
    if order == "pil":
        px = _pil_resize(gray, 32, 32)
        if thumbs is not None:
            thumbs[:] = np.round(px.reshape(n, 16, 2, 16, 2).mean(axis=(2, 4))).astype(np.uint8)
        return bits_to_uint64(_phash_exact(px))
    hashes = np.empty(n, np.uint64)
    ambiguous = np.empty(n, np.bool_)
    want = thumbs is not None
    out_thumbs = thumbs if want else np.empty((0, 16, 16), np.uint8)
    if _large(h, w, 32, 32, order):
        lanczos.phash_large_kernel(gray, order == "hv", *_geometry_int(h, w, 32, 32), lanczos.dct_taps(),
                                   lanczos.sorting_network(64), _lanes(h, w), hashes, ambiguous, out_thumbs, want)
    else:
        lanczos.phash_kernel(gray, order == "hv", *_geometry(h, w, 32, 32), lanczos.dct_taps(),
                             lanczos.sorting_network(64), _lanes(h, w), hashes, ambiguous, out_thumbs, want)
    # our DCT sums in another order than fftpack (~1e-12 relative): where the two middle
    # coefficients are that close a bit is a coin flip between them, so redo those images with
    # imagehash's own code
    amb = np.flatnonzero(ambiguous)
    if amb.size:
        hashes[amb] = bits_to_uint64(_phash_exact(_resize(gray[amb], 32, 32, order)))
    return hashes


def phash_batch(images: np.ndarray) -> np.ndarray:
    """pHash of a batch of same-shaped uint8 images (N, H, W) or (N, H, W, 3) -> uint64 (N,)."""
    return _phash(to_luma(np.asarray(images)))


def dhash_batch(images: np.ndarray) -> np.ndarray:
    """dHash (horizontal gradient, 9x8) of a batch of same-shaped uint8 images -> uint64 (N,)."""
    px = _resize(to_luma(np.asarray(images)), 8, 9)  # (N, 8, 9)
    return bits_to_uint64((px[:, :, 1:] > px[:, :, :-1]).reshape(len(px), 64))


def phash_thumbnails(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pHash plus the 16x16 uint8 thumbnail of each image (2x2 means of pHash's 32x32 input)."""
    gray = to_luma(np.asarray(images))
    thumbs = np.empty((len(gray), 16, 16), np.uint8)
    return _phash(gray, thumbs), thumbs


def hash_arrays(arrays: list[np.ndarray], thumbnails: bool = False):
    """(phash, dhash[, thumbnails]) of decoded images of any shapes: batched per shape, in input order."""
    n = len(arrays)
    ph = np.zeros(n, np.uint64)
    dh = np.zeros(n, np.uint64)
    th = np.zeros((n, 16, 16), np.uint8)
    by_shape: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(a.shape, []).append(i)
    for idx in by_shape.values():
        gray = to_luma(np.stack([arrays[i] for i in idx]))
        ph[idx], th[idx] = phash_thumbnails(gray)
        dh[idx] = dhash_batch(gray)
    return (ph, dh, th) if thumbnails else (ph, dh)


def decode(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes to uint8 (H, W) or (H, W, 3) (palette / alpha images converted by PIL)."""
    with Image.open(_io.BytesIO(data)) as img:
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB" if img.mode in ("P", "PA", "RGBA", "LA", "CMYK", "YCbCr") else "L")
        return np.asarray(img)
