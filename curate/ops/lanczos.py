"""Pillow-exact Lanczos resampling of image batches, compiled with numba, plus the fused pHash kernel.

Pillow's ``Resample.c`` (the resampler behind ``imagehash`` and most dedup tools) runs a
horizontal and a vertical pass; each output is ``clip8((2^21 + sum(pixel * k)) >> 22)`` with
``k`` the Lanczos-3 weights normalised and rounded to 22-bit fixed point. Here the same integer
weights are scaled by 2^-22 (a power of two), so every product and partial sum is exact in
float64 and ``floor(0.5 + sum)`` clipped to 0..255 equals Pillow's result bit for bit.

Speed comes from three things a dense matrix product lacks:

* **banded taps**: an output reads only the 6-7 inputs its filter support covers (more when
  downscaling), not the whole row;
* **image lanes**: a block of images (lanes) is laid out (rows, cols, lanes) so every inner loop
  runs over contiguous lanes and compiles to SIMD; rounding, clipping and the pHash DCT are fused
  into the same pass instead of separate array sweeps;
* **cache-sized strips**: the horizontal pass takes a few rows at a time (<= 512 KiB), so a
  block of 512x512 CT slices does not stream 17 MB buffers through memory.

Indices are ``uintp`` so numba emits no negative-index wraparound checks (those block
vectorisation).

Images from ~64x64 px up (CT and MR slices: 256-512 px) and every dHash take a second family of
kernels (:func:`resize_large_kernel`, :func:`phash_large_kernel`): one image at a time, in
Pillow's int32 arithmetic, as row-blocked dot products read straight from the uint8 image. A
block of 512 px lanes would not fit in cache, and filling it costs more than the filtering.
"""

from __future__ import annotations

from functools import lru_cache

import numba as nb
import numpy as np
from numba import uintp as U

PRECISION_BITS = 22  # Pillow Resample.c: 32 - 8 - 2
_ONE = float(1 << PRECISION_BITS)
_TOP = 255.5  # clamp bound in [255, 256): trunc(min(max(s, 0), _TOP)) == clip8(floor(s))


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


GROUP = 3  # taps summed per sweep over the lanes (register accumulation; measured best of 1..4)


@lru_cache(maxsize=256)
def band(in_size: int, out_size: int, group: int = GROUP) -> tuple[np.ndarray, np.ndarray]:
    """Banded form of :func:`resample_matrix`: window starts (out,) and weights (out, taps) x 2^-22.

    Every window has the same tap count (the widest support, zero-padded to a multiple of
    ``group``) so the kernels need no per-output lengths; zero weights add exactly nothing. Padded
    taps may index past the input row: the kernels' buffers carry slack for that, holding finite
    values only.
    """
    mat = resample_matrix(in_size, out_size)
    lo = np.array([np.flatnonzero(r).min() if r.any() else 0 for r in mat])
    hi = np.array([np.flatnonzero(r).max() + 1 if r.any() else 0 for r in mat])
    real = int(min(max(1, (hi - lo).max()), in_size))
    taps = -(-real // group) * group
    start = np.clip(lo, 0, in_size - real).astype(np.int64)
    weights = np.zeros((out_size, taps), np.float64)
    for o in range(out_size):
        weights[o, :real] = mat[o, start[o]:start[o] + real] / _ONE
    return start, weights


@lru_cache(maxsize=1)
def dct8() -> np.ndarray:
    """The first 8 rows of scipy.fftpack's unnormalised DCT-II matrix for length 32."""
    k = np.arange(8)[:, None]
    n = np.arange(32)[None, :]
    return np.ascontiguousarray(2.0 * np.cos(np.pi * k * (2 * n + 1) / 64.0))


@lru_cache(maxsize=1)
def dct_taps() -> np.ndarray:
    """:func:`dct8` zero-padded to whole tap groups, for :func:`phash_kernel`."""
    d = dct8()
    taps = -(-d.shape[1] // GROUP) * GROUP
    return np.ascontiguousarray(np.pad(d, ((0, 0), (0, taps - d.shape[1]))))


# ----------------------------------------------------------------------------- numba kernels
# Layout: a block of ``lanes`` images as a flat float64 buffer (rows, cols, lanes). A resampling
# pass always runs along the *first* axis, so its inner loops sweep whole rows of cols * lanes
# contiguous values; the horizontal pass gets there by loading strips of rows transposed, and
# ``_swap_into`` turns (a, b, lanes) into (b, a, lanes) by copying lane vectors.
_JIT = dict(nogil=True, cache=True, boundscheck=False, fastmath={"contract"}, error_model="numpy")


@nb.njit(**_JIT)
def _buffers(h, w, out_h, out_w, lanes):
    """Three work buffers, zeroed, with slack for padded taps reading past the last row."""
    size = (max(h, out_h, w, out_w) + 2 * GROUP) * (max(w, out_w, h, out_h) + 2 * GROUP) * lanes
    return np.zeros(size, np.float64), np.zeros(size, np.float64), np.zeros(size, np.float64)


@nb.njit(**_JIT)
def _load(gray, s0, nl, lanes, dst):
    """Images s0..s0+nl of (N, H, W) uint8 -> dst (H, W, lanes) float64; unused lanes 0."""
    _, h, w = gray.shape
    for r in range(h):
        for c in range(w):
            o = U((r * w + c) * lanes)
            for j in range(nl):
                dst[o + U(j)] = gray[s0 + j, r, c]
            for j in range(nl, lanes):
                dst[o + U(j)] = 0.0


@nb.njit(**_JIT)
def _clip(v):
    return float(np.int32(min(max(v, 0.0), _TOP)))


# dst[d : d+n] (+)= three taps: sum_t src[s + t*step : ... + n] * w_t. One function per role so
# each compiles to a plain SIMD loop: _open starts a sum (at ``init``: Pillow's rounding offset
# 0.5, or 0), _add continues it, _close_pillow ends it with Pillow's round-and-clip, _only_pillow
# is a whole three-tap sum.
@nb.njit(**_JIT)
def _open(src, dst, d, s, step, n, w0, w1, w2, init):
    a, b, c, d = U(s), U(s + step), U(s + 2 * step), U(d)
    for j in range(n):
        dst[d + U(j)] = init + src[a + U(j)] * w0 + src[b + U(j)] * w1 + src[c + U(j)] * w2


@nb.njit(**_JIT)
def _add(src, dst, d, s, step, n, w0, w1, w2):
    a, b, c, d = U(s), U(s + step), U(s + 2 * step), U(d)
    for j in range(n):
        dst[d + U(j)] += src[a + U(j)] * w0 + src[b + U(j)] * w1 + src[c + U(j)] * w2


@nb.njit(**_JIT)
def _close_pillow(src, dst, d, s, step, n, w0, w1, w2):
    a, b, c, d = U(s), U(s + step), U(s + 2 * step), U(d)
    for j in range(n):
        dst[d + U(j)] = _clip(dst[d + U(j)] + src[a + U(j)] * w0 + src[b + U(j)] * w1 + src[c + U(j)] * w2)


@nb.njit(**_JIT)
def _only_pillow(src, dst, d, s, step, n, w0, w1, w2):
    a, b, c, d = U(s), U(s + step), U(s + 2 * step), U(d)
    for j in range(n):
        dst[d + U(j)] = _clip(0.5 + src[a + U(j)] * w0 + src[b + U(j)] * w1 + src[c + U(j)] * w2)


@nb.njit(**_JIT)
def _pass(src, width, start, w, pillow, dst):
    """Filter along the first axis: dst[o] = sum_t w[o, t] * src[start[o] + t], rows of ``width``.

    With ``pillow`` the sums start at 0.5 and are rounded and clipped like Pillow's ``clip8``
    (one resampling pass); otherwise they are plain sums. (Writing the output pre-transposed in
    lane-sized pieces instead of a separate :func:`_swap_into` was measured 35% slower: short loops.)
    """
    groups = w.shape[1] // 3
    for o in range(start.shape[0]):
        d = o * width
        for g in range(groups):
            s = (start[o] + 3 * g) * width
            w0, w1, w2 = w[o, 3 * g], w[o, 3 * g + 1], w[o, 3 * g + 2]
            if pillow and groups == 1:
                _only_pillow(src, dst, d, s, width, width, w0, w1, w2)
            elif g == 0:
                _open(src, dst, d, s, width, width, w0, w1, w2, 0.5 if pillow else 0.0)
            elif pillow and g == groups - 1:
                _close_pillow(src, dst, d, s, width, width, w0, w1, w2)
            else:
                _add(src, dst, d, s, width, width, w0, w1, w2)


@nb.njit(**_JIT)
def _load_strip(gray, s0, nl, lanes, r0, r1, dst):
    """Rows r0..r1 of images s0..s0+nl, transposed: dst (W, r1 - r0, lanes) float64; unused lanes 0.

    Column by column: the strip's source lines stay in L1 while the writes run contiguously.
    """
    _, h, w = gray.shape
    rows = r1 - r0
    for c in range(w):
        for r in range(rows):
            o = U((c * rows + r) * lanes)
            for j in range(nl):
                dst[o + U(j)] = gray[s0 + j, r0 + r, c]
            for j in range(nl, lanes):
                dst[o + U(j)] = 0.0


@nb.njit(**_JIT)
def _swap_into(src, a, b, lanes, dst, row0):
    """src (a, b, lanes) -> rows row0..row0+b of dst (rows, a, lanes)."""
    for i in range(a):
        for k in range(b):
            s = U((i * b + k) * lanes)
            d = U(((row0 + k) * a + i) * lanes)
            for j in range(lanes):
                dst[d + U(j)] = src[s + U(j)]


STRIP = 1 << 16  # values per transposed strip (512 KiB of float64: stays in L2)


@nb.njit(**_JIT)
def _resize_block(gray, s0, nl, hfirst, hstart, hw, vstart, vw, lanes, a, b, c):
    """Resize images s0..s0+nl into one of the buffers, laid out (out_h, out_w, lanes); returns it.

    The horizontal pass runs over strips of rows (loaded transposed, filtered, put back in place),
    so large images keep their working set in cache.
    """
    _, h, w = gray.shape
    out_h = vstart.shape[0]
    out_w = hstart.shape[0]
    need_h = out_w != w
    need_v = out_h != h
    if need_h and (hfirst or not need_v):
        rows = max(1, min(h, STRIP // max(1, w * lanes)))
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            _load_strip(gray, s0, nl, lanes, r0, r1, a)  # (w, strip)
            _pass(a, (r1 - r0) * lanes, hstart, hw, True, b)  # (out_w, strip)
            _swap_into(b, out_w, r1 - r0, lanes, c, r0)  # rows r0..r1 of (h, out_w)
        if need_v:
            _pass(c, out_w * lanes, vstart, vw, True, a)  # (out_h, out_w)
            return a
        return c
    _load(gray, s0, nl, lanes, a)  # (h, w)
    if need_v:
        _pass(a, w * lanes, vstart, vw, True, b)  # (out_h, w)
        if not need_h:
            return b
        _swap_into(b, out_h, w, lanes, a, 0)  # (w, out_h)
        _pass(a, out_h * lanes, hstart, hw, True, b)  # (out_w, out_h)
        _swap_into(b, out_w, out_h, lanes, a, 0)  # (out_h, out_w)
    return a


@nb.njit(**_JIT)
def resize_kernel(gray, hfirst, hstart, hw, vstart, vw, lanes, out):
    """(N, H, W) uint8 -> out (N, out_h, out_w) float64 holding Pillow's uint8 Lanczos result."""
    n, h, w = gray.shape
    out_h = vstart.shape[0]
    out_w = hstart.shape[0]
    a, b, c = _buffers(h, w, out_h, out_w, lanes)
    for s0 in range(0, n, lanes):
        nl = min(lanes, n - s0)
        r = _resize_block(gray, s0, nl, hfirst, hstart, hw, vstart, vw, lanes, a, b, c)
        for j in range(nl):
            for y in range(out_h):
                for x in range(out_w):
                    out[s0 + j, y, x] = r[U((y * out_w + x) * lanes + j)]


# ------------------------------------------------------------- large images: one image at a time
# Above ~64 px (and for dHash's 9x8 at any size) a block of image lanes no longer pays: it spills
# the cache and filling it costs more than the filtering. Here each image is resized on its own,
# in the pass order Pillow picks (horizontal first for square and wide images; Pillow 13 runs the
# vertical pass first where that is cheaper, see :func:`_resize_one_vh`) and in Pillow's own
# int32 arithmetic (``ImagingResampleHorizontal_8bpc``: 2^21 + sum(pixel * k) >> 22, clipped):
# the horizontal pass is a dot product of ``ROWS`` rows at once with each output's contiguous
# window, read straight from the uint8 image (one weight load feeds ``ROWS`` multiplies; the tap
# loop vectorises as an integer reduction, exact in any order); its uint8-valued result is stored
# transposed so the vertical pass is the same dot product again, ``ROWS`` columns at once.
ROWS = 4  # rows (columns) filtered together (register accumulators)
ROW_GROUP = 16  # tap padding of the large-image bands (one AVX-512 vector of int32)
_HALF = 1 << (PRECISION_BITS - 1)
I32 = np.int32


@lru_cache(maxsize=256)
def band_int(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`band` as Pillow's int32 coefficients, taps padded to ``ROW_GROUP``."""
    start, w = band(in_size, out_size, ROW_GROUP)
    k = np.ascontiguousarray(np.round(w * _ONE).astype(np.int32))
    k.setflags(write=False)
    return start, k


@nb.njit(**_JIT)
def _clip8(a):
    return min(max(a >> PRECISION_BITS, 0), 255)


_INLINE = dict(_JIT, inline="always")


@nb.njit(**_INLINE)
def _dot4(src, b0, stride, kx, taps, hdst, o, ostride):
    """hdst[o + k * ostride] = clip8(2^21 + src[b0 + k * stride : +taps] . kx), k < ROWS = 4."""
    b1, b2, b3 = b0 + U(stride), b0 + U(2 * stride), b0 + U(3 * stride)
    a0 = a1 = a2 = a3 = I32(_HALF)
    for t in range(taps):
        wt = kx[U(t)]
        a0 = I32(a0 + I32(src[b0 + U(t)]) * wt)
        a1 = I32(a1 + I32(src[b1 + U(t)]) * wt)
        a2 = I32(a2 + I32(src[b2 + U(t)]) * wt)
        a3 = I32(a3 + I32(src[b3 + U(t)]) * wt)
    hdst[o] = _clip8(a0)
    hdst[o + U(ostride)] = _clip8(a1)
    hdst[o + U(2 * ostride)] = _clip8(a2)
    hdst[o + U(3 * ostride)] = _clip8(a3)


@nb.njit(**_INLINE)
def _dot1(src, b0, kx, taps):
    a0 = I32(_HALF)
    for t in range(taps):
        a0 = I32(a0 + I32(src[b0 + U(t)]) * kx[U(t)])
    return _clip8(a0)


@nb.njit(**_INLINE)
def _hpass(flat, h, w, hstart, hk, taps, ht, hs):
    """Horizontal pass of one image into ht (out_w, hs) int32, transposed."""
    out_w = hstart.shape[0]
    r0 = 0
    while r0 + ROWS <= h:
        for x in range(out_w):
            _dot4(flat, U(r0 * w + hstart[x]), w, hk[x], taps, ht, U(x * hs + r0), 1)
        r0 += ROWS
    for r in range(r0, h):
        for x in range(out_w):
            ht[U(x * hs + r)] = _dot1(flat, U(r * w + hstart[x]), hk[x], taps)


@nb.njit(**_INLINE)
def _vpass(ht, hs, vstart, vk, taps, out_w, pad, dst, lanes, j):
    """Vertical pass from ht (out_w, hs) -> dst[(y * out_w + x) * lanes + j] as float64."""
    for y in range(vstart.shape[0]):
        s = vstart[y]
        x0 = 0
        while x0 + ROWS <= out_w:
            _dot4(ht, U(x0 * hs + s), hs, vk[y], taps, pad, 0, 1)
            for k in range(ROWS):
                dst[U((y * out_w + x0 + k) * lanes + j)] = pad[k]
            x0 += ROWS
        for x in range(x0, out_w):
            dst[U((y * out_w + x) * lanes + j)] = _dot1(ht, U(x * hs + s), vk[y], taps)


@nb.njit(**_INLINE)
def _vfirst(flat, w, vstart, vk, taps, acc, vb, ws):
    """Vertical pass first (Pillow's order for tall images): rows of vb (out_h, ws) int32 =
    clip8 of whole input rows weighted and summed, vectorised along the row."""
    for y in range(vstart.shape[0]):
        s = vstart[y]
        for c in range(w):
            acc[U(c)] = I32(_HALF)
        for t in range(taps):
            wt = vk[y, U(t)]
            row = U((s + t) * w)
            for c in range(w):
                acc[U(c)] = I32(acc[U(c)] + I32(flat[row + U(c)]) * wt)
        o = U(y * ws)
        for c in range(w):
            vb[o + U(c)] = _clip8(acc[U(c)])


@nb.njit(**_INLINE)
def _hsecond(vb, ws, out_h, hstart, hk, taps, dst, lanes, j):
    """Horizontal pass over the vertical result vb (out_h, ws) -> dst[(y * out_w + x) * lanes + j]."""
    out_w = hstart.shape[0]
    y0 = 0
    while y0 + ROWS <= out_h:
        for x in range(out_w):
            _dot4(vb, U(y0 * ws + hstart[x]), ws, hk[x], taps, dst, U((y0 * out_w + x) * lanes + j), out_w * lanes)
        y0 += ROWS
    for y in range(y0, out_h):
        for x in range(out_w):
            dst[U((y * out_w + x) * lanes + j)] = _dot1(vb, U(y * ws + hstart[x]), hk[x], taps)


@nb.njit(**_JIT)
def _resize_one_vh(flat, h, w, hstart, hk, vstart, vk, acc, ht, dst, lanes, j):
    """:func:`_resize_one` in the other order (vertical pass first); ht holds (out_h, w + htaps)."""
    ws = w + hk.shape[1]
    _vfirst(flat, w, vstart, vk, vk.shape[1], acc, ht, ws)
    _hsecond(ht, ws, vstart.shape[0], hstart, hk, hk.shape[1], dst, lanes, j)


@nb.njit(**_JIT)
def _resize_any(hfirst, flat, h, w, hstart, hk, vstart, vk, pad, ht, dst, lanes, j):
    if hfirst:
        _resize_one(flat, h, w, hstart, hk, vstart, vk, pad, ht, dst, lanes, j)
    else:
        _resize_one_vh(flat, h, w, hstart, hk, vstart, vk, pad, ht, dst, lanes, j)


@nb.njit(**_JIT)
def _resize_one(flat, h, w, hstart, hk, vstart, vk, pad, ht, dst, lanes, j):
    """Pillow's two-pass Lanczos of one image (flat uint8 run of h * w with readable slack) ->
    dst[(y * out_w + x) * lanes + j] as float64.

    ht ((out_w * (h + vtaps),) int32, slack 0) holds the horizontal result transposed. The
    common tap counts are dispatched to copies with a constant trip count (about 1.4x faster:
    the tap loop then compiles without remainder handling).
    """
    out_w = hstart.shape[0]
    htaps = hk.shape[1]
    vtaps = vk.shape[1]
    hs = h + vtaps  # row stride of ht
    if htaps == 32:
        _hpass(flat, h, w, hstart, hk, 32, ht, hs)
    elif htaps == 48:
        _hpass(flat, h, w, hstart, hk, 48, ht, hs)
    elif htaps == 64:
        _hpass(flat, h, w, hstart, hk, 64, ht, hs)
    elif htaps == 96:
        _hpass(flat, h, w, hstart, hk, 96, ht, hs)
    elif htaps == 192:
        _hpass(flat, h, w, hstart, hk, 192, ht, hs)
    else:
        _hpass(flat, h, w, hstart, hk, htaps, ht, hs)
    if vtaps == 48:
        _vpass(ht, hs, vstart, vk, 48, out_w, pad, dst, lanes, j)
    elif vtaps == 96:
        _vpass(ht, hs, vstart, vk, 96, out_w, pad, dst, lanes, j)
    else:
        _vpass(ht, hs, vstart, vk, vtaps, out_w, pad, dst, lanes, j)


@nb.njit(**_JIT)
def _one_buffers(h, w, out_h, out_w, htaps, vtaps):
    """Padded copy of one image (slack for padded taps of either pass), an int32 accumulator row
    (4 outputs of the vertical pass, or a whole input row), the intermediate pass buffer."""
    flat = np.zeros(h * w + (vtaps + ROWS) * w + htaps, np.uint8)
    pad = np.zeros(max(ROWS, w), np.int32)
    ht = np.zeros(max(out_w * (h + vtaps), (out_h + ROWS) * (w + htaps)), np.int32)
    return flat, pad, ht


@nb.njit(**_JIT)
def _image(gray, whole, i, flat):
    """Image i as a flat uint8 run with readable slack after it: padded taps (zero weight) of the
    last rows read on into the next images where enough follow, else into a zero-padded copy."""
    size = gray.shape[1] * gray.shape[2]
    if (i + 1) * size + (flat.shape[0] - size) <= whole.shape[0]:
        return whole[i * size:]
    for p in range(size):
        flat[U(p)] = whole[U(i * size + p)]
    return flat


@nb.njit(**_JIT)
def resize_large_kernel(gray, hfirst, hstart, hk, vstart, vk, out):
    """(N, H, W) uint8 -> out (N, out_h, out_w) float64, one image at a time (:func:`_resize_one`;
    ``hfirst`` False: vertical pass first)."""
    n, h, w = gray.shape
    out_h = vstart.shape[0]
    out_w = hstart.shape[0]
    flat, pad, ht = _one_buffers(h, w, out_h, out_w, hk.shape[1], vk.shape[1])
    whole = gray.reshape(n * h * w)
    for i in range(n):
        src = _image(gray, whole, i, flat)
        _resize_any(hfirst, src, h, w, hstart, hk, vstart, vk, pad, ht, out[i].reshape(out_h * out_w), 1, 0)


@lru_cache(maxsize=8)
def sorting_network(n: int) -> np.ndarray:
    """Comparator pairs (i, j), i < j, of Batcher's odd-even merge sort for n = 2^k inputs (Knuth
    TAOCP 5.3.4): applying ``min -> i, max -> j`` in order sorts any input. 543 pairs for n = 64."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, np.int64).reshape(-1, 2)


@nb.njit(**_JIT)
def _median_bits(low, lanes, nl, network, srt, med, big, hashes, ambiguous, s0):
    """Per lane: median of the 64 coefficients low (8 m, 8 k, lanes) and the 64 bits, in imagehash's
    order (bit k*8+m, first most significant). The median is a sorting network run on all lanes at
    once (min/max over contiguous lanes vectorise); ambiguous marks lanes whose two middle values
    are within 1e-9 relative."""
    for i in range(64 * lanes):
        srt[U(i)] = low[U(i)]
    for p in range(network.shape[0]):
        a = U(network[p, 0] * lanes)
        b = U(network[p, 1] * lanes)
        for j in range(lanes):
            x = srt[a + U(j)]
            y = srt[b + U(j)]
            srt[a + U(j)] = min(x, y)
            srt[b + U(j)] = max(x, y)
    lo31, lo32, top = U(31 * lanes), U(32 * lanes), U(63 * lanes)
    for j in range(lanes):
        med[j] = (srt[lo31 + U(j)] + srt[lo32 + U(j)]) / 2.0  # numpy.median of 64, as imagehash
        big[j] = max(max(abs(srt[U(j)]), abs(srt[top + U(j)])), 1.0)
    for j in range(nl):
        ambiguous[s0 + j] = srt[lo32 + U(j)] - srt[lo31 + U(j)] <= 2e-9 * big[j]
        hv = np.uint64(0)
        for k in range(8):
            for m in range(8):
                hv = (hv << np.uint64(1)) | np.uint64(low[U((m * 8 + k) * lanes + j)] > med[j])
        hashes[s0 + j] = hv


@nb.njit(**_JIT)
def _hash_block(px, s0, nl, lanes, dct, network, work, hashes, ambiguous, thumbs, want_thumbs):
    """DCT, median bits and thumbnails of the 32x32 images in px (32, 32, lanes)."""
    rows, cols, low, srt, med, big, zero8 = work
    width = 32 * lanes
    _pass(px, width, zero8, dct, False, rows)  # D8 @ P: (8 k, 32 cols, lanes)
    _swap_into(rows, 8, 32, lanes, cols, 0)  # (32 cols, 8 k, lanes)
    _pass(cols, 8 * lanes, zero8, dct, False, low)
    _median_bits(low, lanes, nl, network, srt, med, big, hashes, ambiguous, s0)
    if want_thumbs:
        for y in range(16):
            for x2 in range(16):
                o0 = U(((2 * y) * 32 + 2 * x2) * lanes)
                o1 = U(((2 * y + 1) * 32 + 2 * x2) * lanes)
                for j in range(nl):
                    q = np.int32(px[o0 + U(j)] + px[o0 + U(lanes + j)] + px[o1 + U(j)] + px[o1 + U(lanes + j)])
                    t4 = q >> 2
                    rem = q & 3
                    if rem == 3 or (rem == 2 and (t4 & 1) == 1):
                        t4 += 1
                    thumbs[s0 + j, y, x2] = t4


@nb.njit(**_JIT)
def _hash_work(lanes):
    width = 32 * lanes
    return (np.zeros((8 + GROUP) * width, np.float64),
            np.zeros((32 + 2 * GROUP) * 8 * lanes, np.float64),
            np.zeros((8 + GROUP) * 8 * lanes, np.float64),  # D8 @ P @ D8^T: (8 m, 8 k, lanes)
            np.zeros(64 * lanes, np.float64), np.zeros(lanes, np.float64), np.zeros(lanes, np.float64),
            np.zeros(8, np.int64))


@nb.njit(**_JIT)
def phash_kernel(gray, hfirst, hstart, hw, vstart, vw, dct, network, lanes, hashes, ambiguous, thumbs,
                 want_thumbs):
    """Fused pHash: Pillow resize to 32x32, top-left 8x8 of the 2-D DCT-II, median bits.

    hashes (N,) uint64 get imagehash's bit order; ambiguous (N,) is set where the two middle
    coefficients are within 1e-9 relative (our summation order differs from fftpack's, so the
    caller redoes those with fftpack). With ``want_thumbs``: the 16x16 thumbnail (2x2 means of
    the 32x32 image, rounded half to even) -> thumbs (N, 16, 16) uint8.
    """
    n = gray.shape[0]
    a, b, c = _buffers(gray.shape[1], gray.shape[2], 32, 32, lanes)
    work = _hash_work(lanes)
    for s0 in range(0, n, lanes):
        nl = min(lanes, n - s0)
        px = _resize_block(gray, s0, nl, hfirst, hstart, hw, vstart, vw, lanes, a, b, c)
        _hash_block(px, s0, nl, lanes, dct, network, work, hashes, ambiguous, thumbs, want_thumbs)


@nb.njit(**_JIT)
def phash_large_kernel(gray, hfirst, hstart, hk, vstart, vk, dct, network, lanes, hashes, ambiguous, thumbs,
                       want_thumbs):
    """:func:`phash_kernel` for large images: each resized on its own (:func:`_resize_one`, int32
    bands from :func:`band_int`) into a block of lanes, then hashed."""
    n, h, w = gray.shape
    flat, pad, ht = _one_buffers(h, w, 32, 32, hk.shape[1], vk.shape[1])
    whole = gray.reshape(n * h * w)
    px = np.zeros((32 + 2 * GROUP) * 32 * lanes, np.float64)  # slack: the DCT's padded taps read it
    work = _hash_work(lanes)
    for s0 in range(0, n, lanes):
        nl = min(lanes, n - s0)
        for j in range(nl):
            src = _image(gray, whole, s0 + j, flat)
            _resize_any(hfirst, src, h, w, hstart, hk, vstart, vk, pad, ht, px, lanes, j)
        _hash_block(px, s0, nl, lanes, dct, network, work, hashes, ambiguous, thumbs, want_thumbs)
