"""``dedup.phash`` step 2, views: crop views (each side trimmed by a share) are hashed too, since
perceptual hashes are not crop invariant; row-vs-view pairs within ``t`` become verified edges."""

from __future__ import annotations

import numpy as np

from curate.ops import hamming, phash
from curate.stages.dedup.phash.verify import pair_diff, thumb_diff


def crop_view_hashes(arrays: list[np.ndarray], shares: list[float]):
    """pHash, dHash, thumbnail and validity (N, V[, 256]) of every image's crop views: ``share`` of
    the shorter side (at least 1 px) trimmed from each side; an image left under 8 px has no view."""
    n, nv = len(arrays), len(shares)
    vph, vdh = np.zeros((n, nv), np.uint64), np.zeros((n, nv), np.uint64)
    vth, vok = np.zeros((n, nv, 256), np.uint8), np.zeros((n, nv), bool)
    for k, share in enumerate(shares):
        views, at = [], []
        for r, a in enumerate(arrays):
            h, w = a.shape[:2]
            b = max(1, int(round(share * min(h, w))))
            if h - 2 * b >= 8 and w - 2 * b >= 8:
                views.append(np.ascontiguousarray(a[b:h - b, b:w - b]))
                at.append(r)
        if at:
            vph[at, k], vdh[at, k], t = phash.hash_arrays(views, thumbnails=True)
            vth[at, k] = t.reshape(len(at), 256)
            vok[at, k] = True
    return vph, vdh, vth, vok


MAX_PER_VALUE = 64  # rows of one hash value taking part in crop-view pairs (bounds k^2 blow-ups)


def crop_view_pairs(h: np.ndarray, hv: np.ndarray, vok: np.ndarray, t: int, groups: np.ndarray | None,
                    thumbs: np.ndarray | None, tv: np.ndarray, max_diff: float | None, mapper=None,
                    splits: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row pairs (i, j, d) where row i's hash is within ``t`` of a crop view of row j (``hv[j, k]``).

    Exact, like the main search: all pairs within ``t`` among the distinct values of both sets
    (:func:`hamming.pairs`), then expanded to (row, view) pairs of different rows in the same group,
    verified on the row's thumbnail vs the view's when ``max_diff`` is set. At most
    ``MAX_PER_VALUE`` rows (first by index) per hash value take part; the others are identical
    copies that the main search links anyway.
    """
    m = h.size
    vi, vk = np.nonzero(vok)
    empty = np.zeros(0, np.int64)
    if m == 0 or vi.size == 0:
        return empty, empty, empty
    vals, inv = np.unique(np.concatenate([h, hv[vi, vk]]), return_inverse=True)
    a_val, b_val = inv[:m], inv[m:]
    pi, pj, pd = hamming.pairs(vals, t, mapper=mapper, splits=splits)
    same = np.arange(vals.size)
    va = np.concatenate([pi, pj, same])  # value of the row side
    vb = np.concatenate([pj, pi, same])  # value of the view side
    vd = np.concatenate([pd, pd, np.zeros(vals.size, np.int64)])

    def buckets(v: np.ndarray):
        order = np.argsort(v, kind="stable")
        start = np.searchsorted(v[order], np.arange(vals.size))
        count = np.minimum(np.bincount(v, minlength=vals.size), MAX_PER_VALUE)
        return order, start, count

    ao, ast, ac = buckets(a_val)
    bo, bst, bc = buckets(b_val)
    sizes = ac[va] * bc[vb]
    live = np.flatnonzero(sizes)
    va, vb, vd, sizes = va[live], vb[live], vd[live], sizes[live]
    pair = np.repeat(np.arange(va.size), sizes)
    local = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    cb = bc[vb][pair]
    ri = ao[ast[va][pair] + local // cb]  # row (its own hash)
    e = bo[bst[vb][pair] + local % cb]  # view entry
    rj, d = vi[e], vd[pair]
    keep = ri != rj
    if groups is not None:
        keep &= groups[ri] == groups[rj]
    ri, rj, d, e = ri[keep], rj[keep], d[keep], e[keep]
    if thumbs is not None and max_diff is not None and ri.size:
        both = np.concatenate([thumbs.reshape(m, 256), tv[vi, vk].reshape(-1, 256)])
        ok = pair_diff(both, ri, m + e, bound=max_diff) <= max_diff
        ri, rj, d = ri[ok], rj[ok], d[ok]
    return ri.astype(np.int64), rj.astype(np.int64), d.astype(np.int64)


def view_distance(h: np.ndarray, hv: np.ndarray, vok: np.ndarray, rep: np.ndarray,
                  thumbs: np.ndarray | None, tv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the least Hamming distance between it and its representative through a crop view
    (its hash vs the rep's views, or its views vs the rep's hash), and the thumbnail difference of
    that match."""
    m = h.size
    best = np.full(m, 65, np.int64)
    diff = np.zeros(m)
    for k in range(hv.shape[1]):
        for mine, theirs, ok, ta, tb in ((h, hv[rep, k], vok[rep, k], None, (rep, k)),
                                         (hv[:, k], h[rep], vok[:, k], (slice(None), k), None)):
            d = np.where(ok, np.bitwise_count(mine ^ theirs), 65).astype(np.int64)
            better = d < best
            best = np.where(better, d, best)
            if thumbs is not None and better.any():
                a = thumbs.reshape(m, 256) if ta is None else tv[:, k]
                b = thumbs.reshape(m, 256)[rep] if tb is None else tv[rep, k]
                diff = np.where(better, thumb_diff(a, b), diff)
    return best, diff
