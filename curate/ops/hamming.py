"""Exact all-pairs Hamming search over 64-bit hashes: every pair with distance <= t.

Multi-index hashing (Norouzi, Punjani & Fleet, "Fast Search in Hamming Space with
Multi-Index Hashing", CVPR 2012) used as a self-join. The 64 bits are split into
``m`` bands with radii ``r_i`` such that ``sum(r_i + 1) >= t + 1``; by the
pigeonhole principle any pair within distance ``t`` differs in at most ``r_i``
bits on at least one band ``i``. Per band, hashes are bucketed by their band
value (a dense table of ``2^width`` buckets); for every flip mask ``e`` with
``popcount(e) <= r_i`` the buckets ``K`` and ``K ^ e`` are joined, and every
candidate pair is verified on all 64 bits with ``np.bitwise_count``. Nothing is
approximate: the result equals brute force (tested).

Each pair is reported exactly once: inside a band by the unique mask
``key_a ^ key_b`` (joined only from the bucket whose key lacks the mask's top
bit), across bands by keeping it only in the first band where it qualifies.
The work therefore splits into independent tasks (band x range of masks) whose
union is the answer, whatever the split - the stage fans them out as Dask tasks
with ``ctx.map``. A cost model picks the band layout, or blocked brute force
when that is cheaper (small inputs, large ``t``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from curate.ops.unionfind import components as _components

BITS = 64
MAX_BAND_BITS = 24  # dense bucket table of 2^24 int32 = 64 MiB
BRUTE_BLOCK_ELEMS = 1 << 23  # block x n distance matrix elements per step
BATCH_CANDIDATES = 1 << 21  # candidate pairs (expanded) verified per numpy step: bounds memory


@dataclass(frozen=True)
class Band:
    offset: int  # lowest bit of the band
    width: int
    radius: int

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1


def _ball(width: int, radius: int) -> int:
    return sum(math.comb(width, i) for i in range(radius + 1))


def _cost_bands(n: int, bands: list[Band]) -> float:
    pairs = n * (n - 1) / 2
    cost = 0.0
    for b in bands:
        ball = _ball(b.width, b.radius)
        occupied = min(n, 2**b.width)
        table = 2.0**b.width / 8 if b.radius else n / 8
        # probes + verified candidates + tables + fixed costs (sort, one numpy round per mask), in ~ns
        cost += 3.0 * occupied * ball / 2 + 10.0 * pairs * ball / 2**b.width + table + 30.0 * n + 2e5 + 2e4 * ball
    return cost


def _layout(m: int, t: int) -> list[Band] | None:
    extra = (t + 1) - m  # sum(r_i) = t + 1 - m
    if extra < 0:
        return None
    widths = [BITS // m + (1 if i >= m - BITS % m else 0) for i in range(m)]  # larger bands last
    radii = [extra // m + (1 if i < extra % m else 0) for i in range(m)]  # larger radii on smaller bands
    if any(w > MAX_BAND_BITS and r > 0 for w, r in zip(widths, radii)):
        return None  # probing needs a dense 2^width table; exact-match bands are sorted instead
    bands, off = [], 0
    for w, r in zip(widths, radii):
        bands.append(Band(off, w, r))
        off += w
    return bands


def plan(n: int, t: int) -> list[Band] | None:
    """Band layout for ``n`` distinct hashes at radius ``t``; ``None`` means brute force is cheaper."""
    if t <= 0 or n < 2:
        return None
    best, best_cost = None, 3.0 * n * (n - 1) / 2  # brute force: xor + popcount + compare per pair
    for m in range(2, min(t + 1, 16) + 1):
        bands = _layout(m, t)
        if bands is None:
            continue
        c = _cost_bands(n, bands)
        if c < best_cost:
            best, best_cost = bands, c
    return best


def brute_force_pairs(values: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with ``popcount(values[i] ^ values[j]) <= t`` (blocked O(n^2), the reference)."""
    v = np.asarray(values, dtype=np.uint64)
    n = v.size
    out_i, out_j, out_d = [], [], []
    block = max(1, BRUTE_BLOCK_ELEMS // max(n, 1))
    for i0 in range(0, n, block):
        rows = v[i0:i0 + block]
        d = np.bitwise_count(rows[:, None] ^ v[None, i0:])
        ii, jj = np.nonzero(d <= t)
        keep = jj > ii  # columns start at i0: j > i within the block
        ii, jj = ii[keep], jj[keep]
        out_i.append(ii + i0)
        out_j.append(jj + i0)
        out_d.append(d[ii, jj])
    return _finish(out_i, out_j, out_d)


def _finish(out_i: list, out_j: list, out_d: list, sort: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    i = np.concatenate(out_i).astype(np.int64, copy=False)
    j = np.concatenate(out_j).astype(np.int64, copy=False)
    d = np.concatenate(out_d).astype(np.int64, copy=False)
    if sort and i.size:
        order = np.argsort(i * (int(j.max()) + 1) + j, kind="stable")  # by (i, j); one key sorts fast
        i, j, d = i[order], j[order], d[order]
    return i, j, d


def band_masks(band: Band) -> np.ndarray:
    """Every flip mask of the band with popcount <= radius, sorted by (top bit, value); 0 first."""
    masks = [0]
    for r in range(1, band.radius + 1):
        for combo in itertools.combinations(range(band.width), r):
            masks.append(sum(1 << b for b in combo))
    masks = np.array(sorted(masks, key=lambda e: (e.bit_length(), e)), dtype=np.int64)
    return masks


# ----------------------------------------------------------------------------- one band
class _BandIndex:
    """Hashes bucketed by one band's value: values sorted by band key, buckets, dense lookup tables."""

    def __init__(self, values: np.ndarray, band: Band):
        key = ((values >> np.uint64(band.offset)) & np.uint64(band.mask)).astype(np.int64)
        self.order = np.argsort(key, kind="stable").astype(np.int64)
        self.sorted_values = values[self.order]
        skey = key[self.order]
        keys, self.kstart, self.kcount = np.unique(skey, return_index=True, return_counts=True)
        self.keys = keys.astype(np.int32 if band.width < 31 else np.int64)
        self.kvalue = self.sorted_values[self.kstart]  # value of each bucket's first item
        self.ksingle = self.kcount == 1
        self._without_bit: dict[int, tuple[np.ndarray, ...]] = {}
        if band.radius > 0:  # dense tables for probing K ^ e
            size = 1 << band.width
            self.occupied = np.zeros(size, np.uint8)  # 0 empty, 1 one item, 2 several: cache-resident
            self.occupied[self.keys] = np.where(self.ksingle, 1, 2)
            self.value = np.zeros(size, np.uint64)
            self.value[self.keys] = self.kvalue
            self.start = np.zeros(size, np.int32)
            self.count = np.zeros(size, np.int32)
            self.start[self.keys] = self.kstart
            self.count[self.keys] = self.kcount

    def keys_without(self, bit: int) -> tuple[np.ndarray, ...]:
        """Occupied buckets whose key has ``bit`` = 0: (keys, first values, single?, starts, counts)."""
        got = self._without_bit.get(bit)
        if got is None:
            hit = np.flatnonzero((self.keys >> bit) & 1 == 0)
            got = self._without_bit[bit] = (self.keys[hit], self.kvalue[hit], self.ksingle[hit],
                                            self.kstart[hit], self.kcount[hit])
        return got


_CACHE: dict[tuple[str, Band], _BandIndex] = {}


def _index(values: np.ndarray, band: Band, token: str) -> _BandIndex:
    key = (token, band)
    idx = _CACHE.get(key)
    if idx is None:
        if len(_CACHE) >= 1:  # one dense index (up to ~280 MiB at 24-bit bands) per process
            _CACHE.clear()
        idx = _CACHE[key] = _BandIndex(values, band)
    return idx


def _expand(s1: np.ndarray, c1: np.ndarray, s2: np.ndarray, c2: np.ndarray,
            upper_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sorted-position pairs of bucket pairs (start1, count1) x (start2, count2)."""
    single = (c1 == 1) & (c2 == 1)
    if single.all():  # the common case for well-spread hashes
        return s1.astype(np.int64), s2.astype(np.int64)
    multi = ~single
    s1m, c1m, s2m, c2m = (x[multi].astype(np.int64) for x in (s1, c1, s2, c2))
    sizes = c1m * c2m
    total = int(sizes.sum())
    bp = np.repeat(np.arange(sizes.size), sizes)
    local = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    cc = c2m[bp]
    li, lj = local // cc, local % cc
    if upper_only:
        keep = li < lj
        bp, li, lj = bp[keep], li[keep], lj[keep]
    a = np.concatenate([s1[single].astype(np.int64), s1m[bp] + li])
    b = np.concatenate([s2[single].astype(np.int64), s2m[bp] + lj])
    return a, b


def _verify(idx: _BandIndex, a: np.ndarray, b: np.ndarray, t: int, earlier: list[Band]):
    """Keep sorted-position pairs within distance t not owned by an earlier band; return row ids."""
    sv = idx.sorted_values
    x = sv[a] ^ sv[b]
    d = np.bitwise_count(x)
    ok = d <= t
    hit = np.flatnonzero(ok)
    a, b, d, x = a[hit], b[hit], d[hit], x[hit]
    if earlier and hit.size:
        keep = np.ones(hit.size, bool)
        for band in earlier:  # already reported by an earlier band
            keep &= np.bitwise_count((x >> np.uint64(band.offset)) & np.uint64(band.mask)) > band.radius
        a, b, d = a[keep], b[keep], d[keep]
    a, b = idx.order[a], idx.order[b]
    return np.minimum(a, b), np.maximum(a, b), d


def band_task(args: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs found by band ``bands[k]`` for masks ``masks``; a picklable unit of work for ``ctx.map``."""
    values, bands, k, masks, t, token = args
    band = bands[k]
    earlier = list(bands[:k])
    idx = _index(values, band, token)
    out_i, out_j, out_d = [], [], []
    pend: list[tuple[np.ndarray, ...]] = []
    pending = 0

    def emit(a, b):
        i, j, d = _verify(idx, a, b, t, earlier)
        out_i.append(i), out_j.append(j), out_d.append(d)

    def flush():
        nonlocal pending
        if pend:
            parts = [np.concatenate([p[q] for p in pend]) for q in range(4)]
            pend.clear()
            pending = 0
            emit(*_expand(*parts, upper_only=False))

    for e in np.asarray(masks, dtype=np.int64).tolist():
        if e == 0:  # pairs inside one bucket
            multi = idx.kcount > 1
            if multi.any():
                s, c = idx.kstart[multi], idx.kcount[multi]
                emit(*_expand(s, c, s, c, upper_only=True))
            continue
        ks, kv, ksingle, s1, c1 = idx.keys_without(e.bit_length() - 1)
        tgt = ks ^ e
        occ = np.take(idx.occupied, tgt)
        hit = np.flatnonzero(occ.view(bool))  # bool view: numpy's fast nonzero path
        if hit.size == 0:
            continue
        kt = np.take(tgt, hit)
        single = (np.take(occ, hit) == 1) & np.take(ksingle, hit)
        # one item on each side (nearly always): verify straight from the bucket values
        hs = hit[single]
        kts = kt[single]
        x = np.take(kv, hs) ^ np.take(idx.value, kts)
        ok = np.flatnonzero(np.bitwise_count(x) <= t)
        if ok.size:
            emit(np.take(s1, hs[ok]).astype(np.int64), np.take(idx.start, kts[ok]).astype(np.int64))
        if hs.size != hit.size:  # several items in a bucket: expand them
            many = ~single
            hm, ktm = hit[many], kt[many]
            part = (s1[hm], c1[hm], idx.start[ktm], idx.count[ktm])
            pend.append(part)
            pending += int((part[1].astype(np.int64) * part[3]).sum())  # candidates once expanded
            if pending >= BATCH_CANDIDATES:
                flush()
    flush()
    return _finish(out_i, out_j, out_d, sort=False)  # pairs() sorts the union once


def tasks(values: np.ndarray, t: int, bands: list[Band], splits: int = 1) -> list[tuple]:
    """Independent work items (one band, a slice of its masks) for :func:`band_task`."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    token = hashlib.blake2b(values.tobytes(), digest_size=8).hexdigest()
    items = []
    for k, band in enumerate(bands):
        masks = band_masks(band)
        for chunk in np.array_split(masks, max(1, min(splits, masks.size))):
            if chunk.size:
                items.append((values, tuple(bands), k, chunk, t, token))
    return items


def pairs(values: np.ndarray, t: int, mapper: Callable[[Callable, list], list] | None = None,
          splits: int = 1, bands: list[Band] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of ``values`` with Hamming distance ``<= t``: arrays ``(i, j, d)`` sorted.

    ``values`` should be distinct (duplicates are found too, but cost quadratic
    time per bucket; :func:`components` collapses them first). ``mapper(fn, items)``
    runs the tasks (default: in this process); ``splits`` cuts each band's masks
    into that many tasks. The answer does not depend on either.
    """
    values = np.ascontiguousarray(values, dtype=np.uint64)
    if values.size < 2 or t < 0:
        return _finish([], [], [])
    if t >= BITS:
        i, j = np.triu_indices(values.size, 1)
        return i.astype(np.int64), j.astype(np.int64), np.bitwise_count(values[i] ^ values[j]).astype(np.int64)
    bands = bands if bands is not None else plan(values.size, t)
    if bands is None:
        return brute_force_pairs(values, t)
    items = tasks(values, t, bands, splits)
    results = mapper(band_task, items) if mapper is not None else [band_task(x) for x in items]
    return _finish([r[0] for r in results], [r[1] for r in results], [r[2] for r in results])


def unique_pairs(hashes: np.ndarray, t: int, groups: np.ndarray | None = None,
                 mapper: Callable[[Callable, list], list] | None = None, splits: int = 1):
    """Collapse rows to distinct (group, hash) nodes and find node pairs within distance ``t``.

    Returns ``(node, first, i, j, d)``: the node id of every row, the first row of every node,
    and node pairs ``i < j`` (same group) with their distances. Identical hashes cost nothing extra.
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = h.size
    empty = np.zeros(0, np.int64)
    if n == 0:
        return empty, empty, empty, empty, empty
    g = np.zeros(n, np.int64) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    order = np.lexsort((np.arange(n), h, g))  # by group, hash, index
    gs, hs = g[order], h[order]
    new = np.ones(n, bool)
    new[1:] = (gs[1:] != gs[:-1]) | (hs[1:] != hs[:-1])
    node = np.empty(n, np.int64)
    node[order] = np.cumsum(new) - 1
    first = order[new]
    ug, uh = gs[new], hs[new]
    bounds = np.flatnonzero(np.r_[True, ug[1:] != ug[:-1], True])
    out_i, out_j, out_d = [], [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - lo < 2:
            continue
        i, j, d = pairs(uh[lo:hi], t, mapper=mapper, splits=splits)
        out_i.append(i + lo), out_j.append(j + lo), out_d.append(d)
    i, j, d = _finish(out_i, out_j, out_d)
    return node, first, i, j, d


def components(hashes: np.ndarray, t: int, groups: np.ndarray | None = None,
               mapper: Callable[[Callable, list], list] | None = None, splits: int = 1) -> np.ndarray:
    """Connected components of "Hamming distance <= t" (within the same group, if ``groups`` given).

    Returns labels (the smallest member index of each row's component).
    """
    node, first, i, j, _ = unique_pairs(hashes, t, groups, mapper, splits)
    n = node.size
    if n == 0:
        return np.zeros(0, np.int64)
    src = np.concatenate([np.arange(n), first[i]])
    dst = np.concatenate([first[node], first[j]])
    return _components(n, src, dst)
