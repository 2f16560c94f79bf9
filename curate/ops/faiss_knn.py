"""Inner-product kNN over L2-normalised embeddings with FAISS, in query blocks that run as tasks.

Index choice (``kind="auto"``): exact ``IndexFlatIP`` up to ``exact_max``
vectors; beyond that ``IndexIVFFlat`` (nlist = 2 sqrt(n), nprobe 8 by default,
k-means with 10 iterations on at most 40 x nlist vectors) or ``IndexHNSWFlat`` (M 32, efSearch
128). An approximate index reports its recall@k measured against exact search
on a sample of queries (:func:`measure_recall`), so a user sees what they traded.

Scale-out: the driver writes the database once (``.npy``) and the trained index
(``faiss.write_index``) to a work folder; each query block is an independent
task (``ctx.map``) that memory-maps the vectors, loads the index once per
worker process (cached) and returns only ``(ids, scores)`` of its block.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

Kind = Literal["auto", "flat", "ivf", "hnsw"]


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a core dependency
        raise ImportError("faiss is needed for kNN mining: pip install faiss-cpu") from err
    return faiss


@dataclass(frozen=True)
class KnnSpec:
    kind: Kind = "auto"
    exact_max: int = 50_000
    nlist: int | None = None
    nprobe: int = 8
    hnsw_m: int = 32
    ef_search: int = 128
    seed: int = 0

    def build_key(self, n: int) -> tuple:
        """What the built index depends on (search-time nprobe / efSearch are set per search)."""
        kind = self.resolve(n)
        return (kind, self.nlist if kind == "ivf" else None, self.hnsw_m if kind == "hnsw" else None,
                self.seed if kind == "ivf" else None)

    def resolve(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if n <= self.exact_max else "ivf"


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if len(x) and not np.allclose(norms, 1.0, atol=1e-3):
        x = x / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


def build_index(x: np.ndarray, spec: KnnSpec = KnnSpec()):
    """An inner-product index over ``x`` (n, d) float32 (rows should be L2-normalised)."""
    faiss = _faiss()
    n, d = x.shape
    kind = spec.resolve(n)
    if kind == "flat" or n < 2:
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = spec.nlist or max(1, min(int(2 * math.sqrt(n)), n // 39 or 1))
        quant = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(spec.seed)
        train = x if n <= 40 * nlist else x[np.sort(rng.choice(n, 40 * nlist, replace=False))]
        index.cp.seed = spec.seed
        index.cp.niter = 10
        index.cp.min_points_per_centroid = 1
        index.train(train)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind '{kind}': use auto, flat, ivf or hnsw")
    index.add(x)
    return set_search_params(index, spec)


def set_search_params(index, spec: KnnSpec):
    """Apply the search-time settings (nprobe for IVF, efSearch for HNSW) to a built or loaded index."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(spec.nprobe, index.nlist)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = spec.ef_search
    return index


def exact_search(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product (``faiss.knn``: BLAS in bounded blocks, no n x n matrix)."""
    faiss = _faiss()
    k = min(k, len(x))
    scores, ids = faiss.knn(np.ascontiguousarray(q, np.float32), np.ascontiguousarray(x, np.float32), k,
                            metric=faiss.METRIC_INNER_PRODUCT)
    return scores.astype(np.float32), ids.astype(np.int64)


def measure_recall(index, x: np.ndarray, k: int, sample: int = 500, seed: int = 0) -> float:
    """recall@k of ``index`` vs exact search on ``sample`` random database vectors used as queries."""
    n = len(x)
    if n == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    qi = np.sort(rng.choice(n, min(sample, n), replace=False))
    k = min(k, n)
    _, approx = index.search(x[qi], k)
    _, exact = exact_search(x, x[qi], k)
    hits = sum(len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return hits / float(exact.size)


# ------------------------------------------------------------------ block tasks
_CACHE: dict[tuple, tuple] = {}


def _load(vec_path: str, index_path: str):
    key = (vec_path, index_path, os.path.getmtime(vec_path), os.path.getmtime(index_path))
    hit = _CACHE.get(key)
    if hit is None:
        faiss = _faiss()
        _CACHE.clear()
        hit = (np.load(vec_path, mmap_mode="r", allow_pickle=False), faiss.read_index(index_path))
        _CACHE[key] = hit
    return hit


def fingerprint(x: np.ndarray, spec: KnnSpec) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(repr((x.shape, str(x.dtype), spec.build_key(len(x)))).encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()


def prepare(x: np.ndarray, work_dir: str, spec: KnnSpec = KnnSpec()) -> tuple[str, str, object]:
    """Vectors + built index under ``work_dir/<fingerprint>/``; reused when the same vectors and settings
    were indexed before (mine.positives and mine.negatives share one index). Returns paths and the index."""
    faiss = _faiss()
    d = os.path.join(work_dir, fingerprint(x, spec))
    vec_path, index_path = os.path.join(d, "vectors.npy"), os.path.join(d, "index.faiss")
    if os.path.isfile(index_path) and os.path.isfile(vec_path):
        return vec_path, index_path, set_search_params(faiss.read_index(index_path), spec)
    os.makedirs(d, exist_ok=True)
    index = build_index(x, spec)
    tmp = f"{index_path}.tmp-{os.getpid()}"
    np.save(f"{vec_path}.tmp-{os.getpid()}.npy", x)
    os.replace(f"{vec_path}.tmp-{os.getpid()}.npy", vec_path)
    faiss.write_index(index, tmp)
    os.replace(tmp, index_path)
    return vec_path, index_path, index


def search_block(item: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Task: top-k of database rows [a, b) against the saved index -> (scores, ids), ids -1 when missing."""
    vec_path, index_path, a, b, k, spec = item
    x, index = _load(vec_path, index_path)
    set_search_params(index, spec)
    q = np.ascontiguousarray(x[a:b], dtype=np.float32)
    scores, ids = index.search(q, k)
    return scores.astype(np.float32), ids.astype(np.int64)


def knn(x: np.ndarray, k: int, work_dir: str, spec: KnnSpec = KnnSpec(), block: int = 16384,
        mapper: Callable | None = None, recall_sample: int = 500) -> tuple[np.ndarray, np.ndarray, dict]:
    """Self-kNN of every row of ``x`` (k neighbours incl. itself), query blocks fanned out with ``mapper``.

    Returns (scores (n, k), ids (n, k), info with the index kind and, for approximate kinds, recall@k).
    """
    n = len(x)
    k = max(1, min(k, n))
    vec_path, index_path, index = prepare(x, work_dir, spec)
    kind = spec.resolve(n) if n >= 2 else "flat"
    info: dict = {"index": kind, "n": n, "k": k}
    if kind != "flat":
        info["recall_at_k"] = round(measure_recall(index, x, min(k, 10), recall_sample, spec.seed), 4)
    items = [(vec_path, index_path, a, min(a + block, n), k, spec) for a in range(0, n, block)]
    run = mapper or (lambda f, xs: [f(i) for i in xs])
    out = run(search_block, items) if items else []
    if not out:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64), info
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out]), info
