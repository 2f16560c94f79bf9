"""SemDeDup core (Abbas et al. 2023, "SemDeDup: Data-efficient learning at web-scale
through semantic deduplication"), independent of the stage and of Dask.

1. spherical k-means on L2-normalised embeddings (``faiss.Kmeans(spherical=True)``);
2. inside each cluster, order items by cosine to the centroid - ``hard`` keeps
   the items farthest from the centroid first (the paper's default), ``easy``
   the nearest first, ``random`` a seeded order; ties break by sample id;
3. walk the order; an item whose cosine to an *earlier kept* item exceeds
   ``t = 1 - eps`` is removed, naming the most similar earlier kept item as
   its representative (earliest on ties). Unlike the paper's released code
   (which compares with any earlier item, kept or not), every removed item
   therefore has a kept representative within the threshold.

:func:`greedy_keep` is exact and blocked: memory ``O(block x cluster size)``,
never a full similarity matrix. Clusters are independent, so
:func:`run_chunk` processes a contiguous range of clusters read from a float32
file - one Dask task each.
"""

from __future__ import annotations

import hashlib

import faiss
import numpy as np

from curate import io

BLOCK = 1024


def greedy_keep(X: np.ndarray, t: float, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy SemDeDup over rows of ``X`` (already in keep-priority order).

    Returns ``keep`` (bool), ``rep`` (row of the representative, -1 if kept) and
    ``score`` (cosine to the representative, NaN if kept).
    """
    n = len(X)
    keep = np.zeros(n, bool)
    rep = np.full(n, -1, np.int64)
    score = np.full(n, np.nan, np.float32)
    kept = np.empty(n, np.int64)
    nk = 0
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        Xb = X[b0:b1]
        m = b1 - b0
        if nk:
            K = kept[:nk]
            S = Xb @ X[K].T
            a = S.argmax(axis=1)
            best = S[np.arange(m), a].astype(np.float32)
            arg = K[a]
        else:
            best = np.full(m, -np.inf, np.float32)
            arg = np.full(m, -1, np.int64)
        Sbb = Xb @ Xb.T
        for j in range(m):
            if best[j] > t:
                rep[b0 + j] = arg[j]
                score[b0 + j] = best[j]
                continue
            keep[b0 + j] = True
            kept[nk] = b0 + j
            nk += 1
            if j + 1 < m:
                s = Sbb[j, j + 1:]
                tail = best[j + 1:]
                upd = s > tail
                if upd.any():
                    tail[upd] = s[upd]
                    arg[j + 1:][upd] = b0 + j
    return keep, rep, score


def spherical_kmeans(X: np.ndarray, k: int, niter: int, seed: int,
                     max_points_per_centroid: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster rows of unit vectors; return (labels, cosine to own centroid, centroids)."""
    n, d = X.shape
    k = max(1, min(k, n))
    if k == 1:
        c = X.mean(axis=0, keepdims=True)
        c /= max(float(np.linalg.norm(c)), 1e-12)
    else:
        km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=True, verbose=False,
                          max_points_per_centroid=max_points_per_centroid)
        km.train(X)
        c = km.centroids
    index = faiss.IndexFlatIP(d)
    index.add(np.ascontiguousarray(c, dtype=np.float32))
    sims = np.empty(n, np.float32)
    labels = np.empty(n, np.int64)
    for i in range(0, n, 1 << 16):  # bounded memory for the search results
        D, L = index.search(X[i:i + (1 << 16)], 1)
        sims[i:i + len(D)], labels[i:i + len(D)] = D[:, 0], L[:, 0]
    return labels, sims, c


def id_hash(ids: list[str], seed: int) -> np.ndarray:
    """A uint64 per id from blake2b(seed|id): a seeded order that does not depend on partitioning."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}|{s}".encode(), digest_size=8).digest(), "little")
                     for s in ids], dtype=np.uint64)


def keep_order(labels: np.ndarray, sims: np.ndarray, ids: list[str], keep: str, seed: int) -> np.ndarray:
    """Permutation grouping items by cluster, each cluster in keep-priority order."""
    id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=object), kind="stable"), kind="stable")
    if keep == "hard":  # farthest from the centroid first
        primary = sims.astype(np.float64)
    elif keep == "easy":
        primary = -sims.astype(np.float64)
    else:
        primary = id_hash(ids, seed).astype(np.float64)
    return np.lexsort((id_rank, primary, labels))


def chunk_bounds(sizes: np.ndarray, target: int) -> list[tuple[int, int, list[int]]]:
    """Group consecutive clusters into chunks of about ``target`` items: [(start, end, cluster sizes)]."""
    out, start, cur = [], 0, []
    pos = 0
    for s in sizes.tolist():
        if cur and sum(cur) + s > target:
            out.append((start, pos, cur))
            start, cur = pos, []
        cur.append(s)
        pos += s
    if cur:
        out.append((start, pos, cur))
    return out


def write_rows(path: str, X: np.ndarray, perm: np.ndarray) -> None:
    """Write ``X[perm]`` as raw float32 rows, a slice at a time (no full permuted copy)."""
    def write(f):
        for i in range(0, len(perm), 1 << 15):
            f.write(np.ascontiguousarray(X[perm[i:i + (1 << 15)]], dtype=np.float32).tobytes())
    io._atomic_write(path, write)


def read_rows(path: str, d: int, start: int, end: int) -> np.ndarray:
    fs, p = io.fs_and_path(path)
    with fs.open(p, "rb") as f:
        f.seek(start * d * 4)
        buf = f.read((end - start) * d * 4)
    return np.frombuffer(buf, dtype=np.float32).reshape(end - start, d)


def run_chunk(job: tuple) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """One Dask task: greedy SemDeDup on every cluster of rows [start, end) of the work file.

    ``job = (path, d, start, end, cluster sizes, t, count_only)``; representatives
    are returned as global row numbers of the work file.
    """
    path, d, start, end, sizes, t, count_only = job
    X = read_rows(path, d, start, end)
    keep = np.zeros(end - start, bool)
    rep = np.full(end - start, -1, np.int64)
    score = np.full(end - start, np.nan, np.float32)
    off = 0
    for s in sizes:
        k, r, sc = greedy_keep(X[off:off + s], t)
        keep[off:off + s] = k
        rep[off:off + s] = np.where(r >= 0, r + start + off, -1)
        score[off:off + s] = sc
        off += s
    if count_only:
        return start, np.array([int(keep.sum())]), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return start, keep, rep, score
