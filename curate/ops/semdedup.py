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


def write_locations(path: str, loc: np.ndarray) -> None:
    """(partition index, row) per work-file row as raw int64 pairs."""
    io._atomic_write(path, lambda f: f.write(np.ascontiguousarray(loc, np.int64).tobytes()))


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


def greedy_keep_verified(X: np.ndarray, t: float, verify, max_checks: int = 8, max_cands: int = 64):
    """:func:`greedy_keep` where a removal also needs ``verify(j, i) -> (ok, detail)`` to accept the pair.

    Walk the rows in order; row ``j`` is compared with its earlier *kept* rows of cosine > ``t``,
    most similar first, at most ``max_checks`` of them (of its ``max_cands`` most similar earlier
    rows); the first verified one becomes its representative. A row with candidates but no
    verified one is kept (principle 7: a weak embedding never removes distinct images).
    Returns (keep, rep, score, rejected partner row or -1, its cosine, detail per row, checks).
    """
    n = len(X)
    keep = np.ones(n, bool)
    rep = np.full(n, -1, np.int64)
    score = np.full(n, np.nan, np.float32)
    rej = np.full(n, -1, np.int64)
    rej_s = np.full(n, np.nan, np.float32)
    detail: list[str | None] = [None] * n
    checks = 0
    for b0 in range(0, n, BLOCK):
        b1 = min(n, b0 + BLOCK)
        S = X[b0:b1] @ X[:b1].T
        for jj in range(b1 - b0):
            j = b0 + jj
            s = S[jj, :j]
            cand = np.flatnonzero(s > t)
            if cand.size == 0:
                continue
            cand = cand[np.lexsort((cand, -s[cand]))][:max_cands]
            tried = 0
            for i in cand.tolist():
                if not keep[i]:
                    continue
                ok, d = verify(j, i)
                checks += 1
                tried += 1
                if ok:
                    keep[j], rep[j], score[j], detail[j] = False, i, s[i], d
                    break
                if rej[j] < 0:
                    rej[j], rej_s[j], detail[j] = i, s[i], d
                if tried >= max_checks:
                    break
            if not keep[j]:
                rej[j], rej_s[j] = -1, np.nan
    return keep, rep, score, rej, rej_s, detail, checks


def read_images(paths: list[str], locs: np.ndarray) -> dict[int, np.ndarray]:
    """Decoded images of the rows ``locs`` = [(k, partition index, row)]: one read per partition file."""
    from curate import imaging

    out: dict[int, np.ndarray] = {}
    for p in np.unique(locs[:, 1]).tolist():
        sel = locs[locs[:, 1] == p]
        col = io.read_parquet(paths[p], columns=["image"]).column("image")
        for k, r in zip(sel[:, 0].tolist(), sel[:, 2].tolist()):
            out[k] = imaging.decode_png(col[r].as_py())
    return out


def run_chunk_verified(job: tuple):
    """:func:`run_chunk` with verified removals; ``job`` adds (locations file, samples paths, max_checks).

    Images are read in the task, only for rows that have a candidate (cosine > t to an earlier row).
    """
    path, d, start, end, sizes, t, count_only, loc_path, paths, max_checks = job
    from curate.ops.geometry import verify_pairs

    X = read_rows(path, d, start, end)
    fs, p = io.fs_and_path(loc_path)
    with fs.open(p, "rb") as f:
        f.seek(start * 16)
        loc = np.frombuffer(f.read((end - start) * 16), np.int64).reshape(-1, 2)
    m = end - start
    keep = np.ones(m, bool)
    rep = np.full(m, -1, np.int64)
    score = np.full(m, np.nan, np.float32)
    rej = np.full(m, -1, np.int64)
    rej_s = np.full(m, np.nan, np.float32)
    detail: list[str | None] = [None] * m
    checks = verified = 0
    need = np.zeros(m, bool)  # rows with a neighbour above t in their cluster: the only images read
    off = 0
    for s in sizes:
        for b0 in range(0, s, BLOCK):
            S = X[off + b0:off + min(s, b0 + BLOCK)] @ X[off:off + s].T
            S[np.arange(len(S)), b0 + np.arange(len(S))] = -np.inf
            need[off + b0:off + b0 + len(S)] = (S > t).any(axis=1)
        off += s
    rows = np.flatnonzero(need)
    images = read_images(paths, np.column_stack([rows, loc[rows]])) if rows.size else {}
    off = 0
    for s in sizes:
        Xc = X[off:off + s]

        def verify(j: int, i: int, off=off) -> tuple[bool, str]:
            ok, _, det = verify_pairs([images[off + i], images[off + j]], np.array([0]), np.array([1]))
            return bool(ok[0]), det[0]

        k_, r_, sc, rj, rs, dt, ch = greedy_keep_verified(Xc, t, verify, max_checks)
        keep[off:off + s] = k_
        rep[off:off + s] = np.where(r_ >= 0, r_ + start + off, -1)
        rej[off:off + s] = np.where(rj >= 0, rj + start + off, -1)
        score[off:off + s], rej_s[off:off + s] = sc, rs
        detail[off:off + s] = dt
        checks += ch
        verified += int((~k_).sum())
        off += s
    if count_only:
        return start, np.array([int(keep.sum())]), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return start, keep, rep, score, rej, rej_s, detail, checks, verified
