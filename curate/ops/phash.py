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

The resize reproduces Pillow's fixed-point Lanczos resampler exactly
(``Resample.c``: support 3, coefficients normalised then rounded to 22-bit fixed
point, horizontal pass then vertical pass, each rounded and clipped to 8 bits),
as two dense float64 matrix products per batch: products and sums of these
integers are exact in float64, so the result is bit-identical to PIL's while
running as BLAS calls over a whole batch. The RGB->L conversion is Pillow's
integer formula. The DCT and median are the same numpy/scipy calls imagehash
makes, on a batch axis.
"""

from __future__ import annotations

import io as _io
from functools import lru_cache

import numpy as np
import scipy.fftpack
import torch
from PIL import Image

PRECISION_BITS = 22  # Pillow Resample.c: 32 - 8 - 2
_ONE = float(1 << PRECISION_BITS)
# pixels per batch chunk: bounds the float64 working set (~8 bytes x this x 2)
CHUNK_PIXELS = 1 << 17  # cache-sized chunks: measured fastest (2^15..2^21 tried)


def _lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's truncated sinc: sinc(x) * sinc(x / 3) on [-3, 3)."""
    out = np.zeros_like(x)
    inside = (x >= -3.0) & (x < 3.0)
    xi = x[inside]
    with np.errstate(invalid="ignore", divide="ignore"):
        s1 = np.where(xi == 0.0, 1.0, np.sin(np.pi * xi) / (np.pi * xi))
        s3 = np.where(xi == 0.0, 1.0, np.sin(np.pi * xi / 3.0) / (np.pi * xi / 3.0))
    out[inside] = s1 * s3
    return out


@lru_cache(maxsize=256)
def resample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix of Pillow's fixed-point Lanczos weights (integers)."""
    support_base = 3.0
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support_base * filterscale
    mat = np.zeros((out_size, in_size), np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        x = np.arange(xmax, dtype=np.float64)
        w = _lanczos((x + xmin - center + 0.5) * (1.0 / filterscale))
        ww = w.sum()
        if ww != 0.0:
            w = w / ww
        fixed = np.where(w < 0, np.trunc(-0.5 + w * _ONE), np.trunc(0.5 + w * _ONE))
        mat[xx, xmin:xmin + xmax] = fixed
    mat.setflags(write=False)
    return mat


@lru_cache(maxsize=256)
def _pass_weights(in_size: int, out_size: int) -> torch.Tensor:
    """float64 (in, out) Pillow weights pre-scaled by 2^-22 (a power of two: still exact)."""
    return torch.from_numpy(resample_matrix(in_size, out_size).T / _ONE)


def _exact_pass(x: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """Resample the rows of ``x`` (R, in_size) -> (R, out_size), rounded and clipped like Pillow.

    ``x`` holds integers 0..255 as float64; the weights are Pillow's 22-bit fixed-point integers
    times 2^-22, so every product and partial sum is exact in float64 and
    ``floor(sum + 0.5)`` equals Pillow's ``(sum + 2^21) >> 22`` bit for bit. One dense GEMM:
    skipping the zero weights with banded blocks was measured slower (28..512 px inputs).
    """
    v = x @ _pass_weights(in_size, out_size)
    v += 0.5
    return v.floor_().clamp_(0.0, 255.0)


def _exact_pass_left(x: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """Resample the columns of ``x`` (in_size, C) -> (out_size, C); see :func:`_exact_pass`."""
    v = _pass_weights(in_size, out_size).T @ x
    v += 0.5
    return v.floor_().clamp_(0.0, 255.0)


def resize_lanczos(gray: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize a batch (N, H, W) of uint8 gray images like ``PIL.Image.resize((out_w, out_h), LANCZOS)``.

    Returns float64 (N, out_h, out_w) holding exactly the uint8 values PIL produces.
    """
    return _resize(np.asarray(gray), out_h, out_w).permute(1, 0, 2).contiguous().numpy()


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
        if np.array_equal(_resize(probe, out_h, out_w, order)[:, 0, :].numpy(), ref):
            return order
    return "pil"  # unknown Pillow behaviour: fall back to Pillow itself, per image


def _resize(gray: np.ndarray, out_h: int, out_w: int, order: str | None = None) -> torch.Tensor:
    """Exact Pillow Lanczos resize of (N, H, W) uint8 -> float64 tensor laid out (out_h, N, out_w).

    The (rows, images, columns) layout makes both passes plain 2-D GEMMs with no transposes:
    the horizontal pass is ``(H*N, W) @ Wx``, the vertical one ``Wy @ (H, N*W)``.
    """
    n, h, w = gray.shape
    order = order or _pass_order(h, w, out_h, out_w)
    if order == "pil":
        out = np.stack([np.asarray(Image.fromarray(g).resize((out_w, out_h), Image.Resampling.LANCZOS))
                        for g in gray])
        return torch.from_numpy(out.transpose(1, 0, 2).astype(np.float64))
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(gray).transpose(1, 0, 2))).double()  # (H, N, W)
    for axis in order:
        hh, _, ww = x.shape
        if axis == "h" and w != out_w:
            x = _exact_pass(x.reshape(hh * n, ww), w, out_w).reshape(hh, n, out_w)
        elif axis == "v" and h != out_h:
            x = _exact_pass_left(x.reshape(hh, n * ww), h, out_h).reshape(out_h, n, ww)
    return x


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


@lru_cache(maxsize=1)
def _dct8() -> torch.Tensor:
    """The first 8 rows of scipy.fftpack's unnormalised DCT-II matrix for length 32."""
    k = np.arange(8)[:, None]
    n = np.arange(32)[None, :]
    return torch.from_numpy(2.0 * np.cos(np.pi * k * (2 * n + 1) / 64.0))


def _phash_exact(px: np.ndarray) -> np.ndarray:
    """imagehash's own computation on (N, 32, 32) resized pixels: fftpack DCT, median."""
    d = scipy.fftpack.dct(scipy.fftpack.dct(px.astype(np.float64), axis=1), axis=2)
    low = d[:, :8, :8].reshape(len(px), 64)
    return low > np.median(low, axis=1)[:, None]


def _phash_chunk(gray: np.ndarray, thumbs: list | None = None) -> np.ndarray:
    px = _resize(gray, 32, 32)  # (32 rows, N, 32 cols), exact uint8 values
    n = px.shape[1]
    if thumbs is not None:  # 16x16 thumbnail (2x2 means of the 32x32 pHash input) for pair verification
        t = px.reshape(16, 2, n, 16, 2).mean(dim=(1, 4))  # (16, N, 16)
        thumbs.append(torch.round(t).to(torch.uint8).permute(1, 0, 2).numpy())
    dm = _dct8()
    # top-left 8x8 of the 2-D DCT as two GEMMs, D8 @ P @ D8^T, on the (row, image, col) layout
    rows = dm @ px.reshape(32, n * 32)  # (8, N*32)
    low = (rows.reshape(8 * n, 32) @ dm.T).reshape(8, n, 8).permute(1, 0, 2).reshape(n, 64).numpy()
    part = np.sort(low, axis=1)
    med = (part[:, 31] + part[:, 32]) / 2.0  # numpy.median of 64 values, as imagehash
    bits = low > med[:, None]
    # GEMM and FFT round differently (~1e-12 relative): when the two middle coefficients are that
    # close, a bit is a coin flip between them, so redo those images with imagehash's own code
    scale = np.maximum(np.abs(low).max(axis=1), 1.0)
    amb = np.flatnonzero(part[:, 32] - part[:, 31] <= 2e-9 * scale)
    if amb.size:
        bits[amb] = _phash_exact(px[:, amb, :].permute(1, 0, 2).numpy())
    return bits_to_uint64(bits)


def _dhash_chunk(gray: np.ndarray) -> np.ndarray:
    px = _resize(gray, 8, 9)  # (8, N, 9)
    n = px.shape[1]
    return bits_to_uint64((px[:, :, 1:] > px[:, :, :-1]).permute(1, 0, 2).reshape(n, 64).numpy())


class _one_thread:
    """Run torch on one intra-op thread: the GEMMs here are small and cache-sized, extra threads
    only add synchronisation (measured 2-3x slower with 2 threads); parallelism comes from
    hashing partitions in separate Dask workers."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        if self.threads != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.threads != 1:
            torch.set_num_threads(self.threads)


def _chunked(fn, gray: np.ndarray, *args) -> np.ndarray:
    n, h, w = gray.shape
    step = max(1, CHUNK_PIXELS // max(1, h * w))
    with _one_thread():
        if n <= step:
            return fn(gray, *args)
        return np.concatenate([fn(gray[i:i + step], *args) for i in range(0, n, step)])


def phash_batch(images: np.ndarray) -> np.ndarray:
    """pHash of a batch of same-shaped uint8 images (N, H, W) or (N, H, W, 3) -> uint64 (N,)."""
    return _chunked(_phash_chunk, to_luma(np.asarray(images)))


def dhash_batch(images: np.ndarray) -> np.ndarray:
    """dHash (horizontal gradient, 9x8) of a batch of same-shaped uint8 images -> uint64 (N,)."""
    return _chunked(_dhash_chunk, to_luma(np.asarray(images)))


def phash_thumbnails(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pHash plus the 16x16 uint8 thumbnail of each image (2x2 means of pHash's 32x32 input)."""
    thumbs: list[np.ndarray] = []
    h = _chunked(_phash_chunk, to_luma(np.asarray(images)), thumbs)
    return h, np.concatenate(thumbs) if thumbs else np.zeros((0, 16, 16), np.uint8)


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
