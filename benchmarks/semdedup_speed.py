"""SemDeDup speed, memory and exactness (dedup.semantic).

Data: N x 256 random-but-clustered unit vectors (N / 500 Gaussian centres,
per-point noise, and 20% planted near-copies of other points), written as
embeddings Parquet partitions of a fake ``01_embed`` stage, then the real
stage path runs: ``SemanticDedup.reduce`` reads the Parquet, runs faiss
spherical k-means, writes the work file and fans the cluster chunks out on a
Dask LocalCluster (``--workers``, default 2) - time and peak RSS of the whole
process tree (driver + workers, sampled every 0.2 s) are printed.

Baseline (same clusters, same order): brute force all-pairs per cluster - the
full similarity matrix of each cluster and a greedy walk over it, single
process - timed on the same data. Exactness: on a 20k subset, our decisions
vs a pure-Python reference (``--check``).

    nice python benchmarks/semdedup_speed.py --n 1000000           # the issue's target
    nice python benchmarks/semdedup_speed.py --n 20000 --check      # equality with brute force
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time

import numpy as np
import psutil
import pyarrow as pa

from curate import io, schemas
from curate.ops import semdedup as sd
from curate.stage import StageContext, Upstream
from curate.stages.dedup.semantic import SemanticDedup, SemanticParams


def make_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = max(1, n // 500)
    centres = rng.standard_normal((k, d), dtype=np.float32)
    X = np.empty((n, d), np.float32)
    step = 1 << 16
    for i in range(0, n, step):
        m = min(step, n - i)
        X[i:i + m] = centres[rng.integers(0, k, m)]
        X[i:i + m] += 0.9 * rng.standard_normal((m, d), dtype=np.float32)
    copies = rng.choice(n, n // 5, replace=False)
    src = rng.integers(0, n, n // 5)
    for i in range(0, len(copies), step):
        c, s = copies[i:i + step], src[i:i + step]
        X[c] = X[s] + 0.05 * rng.standard_normal((len(c), d), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def write_partitions(run_dir: str, X: np.ndarray, parts: int) -> list[str]:
    n, d = X.shape
    pids = []
    for p, idx in enumerate(np.array_split(np.arange(n), parts)):
        pid = f"{p:04d}"
        ids = pa.array([f"s{i:08d}" for i in idx], pa.string())
        emb = pa.FixedSizeListArray.from_arrays(pa.array(X[idx].reshape(-1), pa.float32()), d)
        io.write_parquet(pa.Table.from_arrays([ids, emb], schema=schemas.embeddings_schema(d)),
                         io.part_path(run_dir, "01_embed", pid))
        pids.append(pid)
    return pids


class PeakRSS:
    """Peak summed RSS of this process and its children (Dask workers)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me] + me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


def brute_force_numpy(X: np.ndarray, sizes: list[int], t: float) -> np.ndarray:
    """Baseline: per cluster, the full similarity matrix and a greedy walk over it."""
    keep = np.zeros(len(X), bool)
    off = 0
    for s in sizes:
        S = X[off:off + s] @ X[off:off + s].T
        kept: list[int] = []
        for a in range(s):
            if not kept or S[a, kept].max() <= t:
                kept.append(a)
        keep[np.array(kept, dtype=np.int64) + off] = True
        off += s
    return keep


def brute_force_python(X, ids, labels, sims, t):
    """Reference for --check: per cluster, sorted with Python, greedy with an explicit inner loop."""
    n = len(X)
    keep, rep = np.ones(n, bool), np.full(n, -1)
    for c in np.unique(labels):
        members = sorted(np.flatnonzero(labels == c).tolist(), key=lambda i: (float(sims[i]), ids[i]))
        S = X[members] @ X[members].T
        kept = []
        for a, i in enumerate(members):
            best, who = -np.inf, -1
            for b in kept:
                if S[a, b] > best:
                    best, who = S[a, b], b
            if best > t:
                keep[i], rep[i] = False, members[who]
            else:
                kept.append(a)
    return keep, rep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--parts", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="Dask LocalCluster workers; 0 = in-process")
    ap.add_argument("--check", action="store_true", help="compare decisions with a pure-Python brute force")
    ap.add_argument("--baseline", action="store_true", help="also time the numpy brute-force baseline")
    ap.add_argument("--target-fraction", type=float, default=None)
    args = ap.parse_args()

    t0 = time.perf_counter()
    X = make_data(args.n, args.d)
    print(f"data: {args.n:,} x {args.d} float32 ({X.nbytes / 2**30:.2f} GiB), {time.perf_counter() - t0:.1f} s")
    run_dir = tempfile.mkdtemp(prefix="semdedup_bench_")
    try:
        pids = write_partitions(run_dir, X, args.parts)
        del X
        params = SemanticParams(eps=args.eps, target_fraction=args.target_fraction)
        stage = SemanticDedup(params)
        ctx = StageContext(run_dir=run_dir, stage="02_dedup_semantic", stage_key="dedup.semantic",
                           partition_id=None, seed=0, on_error="raise", upstream=(Upstream("01_embed", ("embeddings",)),),
                           partitions=tuple(pids))
        executor = None
        if args.workers:
            from curate.runner import DaskExecutor

            executor = DaskExecutor(None, args.workers)
            ctx.mapper = executor.map
        try:
            with PeakRSS() as rss:
                t0 = time.perf_counter()
                out = stage.reduce(ctx, {})
                ours = time.perf_counter() - t0
        finally:
            if executor is not None:
                executor.close()
        kept = sum(int(pa.compute.sum(t.column("keep")).as_py() or 0) for t in out.values())
        print(f"dedup.semantic reduce (parquet -> decisions), {args.workers or 'in-process'} workers: {ours:.1f} s, "
              f"peak RSS (driver + workers) {rss.peak / 2**30:.2f} GiB; kept {kept:,} of {args.n:,} "
              f"({kept / args.n:.1%}); counters {dict(ctx.counters)}")

        if args.check or args.baseline:
            ctxr = StageContext(run_dir=run_dir, stage="x", stage_key="x", partition_id=None, seed=0,
                                on_error="raise", upstream=(Upstream("01_embed", ("embeddings",)),))
            from curate.stages.dedup.semantic import load_embeddings

            X, ids, _ = load_embeddings(ctxr, tuple(pids))
            k = max(1, min(int(round(np.sqrt(len(X)))), len(X) // 39))
            labels, sims, _ = sd.spherical_kmeans(X, k, params.niter, params.seed, params.max_points_per_centroid)
            order = sd.keep_order(labels, sims, ids, "hard", 0)
            sizes = [int(s) for s in np.bincount(labels[order]) if s > 0]
            Xo = np.ascontiguousarray(X[order])
            t = 1 - args.eps
            t0 = time.perf_counter()
            ours_keep = np.concatenate([sd.greedy_keep(Xo[a:b], t)[0] for a, b in
                                        zip(np.cumsum([0] + sizes[:-1]), np.cumsum(sizes))])
            ours_greedy = time.perf_counter() - t0
            if args.baseline:
                t0 = time.perf_counter()
                base = brute_force_numpy(Xo, sizes, t)
                bt = time.perf_counter() - t0
                print(f"per-cluster greedy, same clusters, 1 process: blocked (ours) {ours_greedy:.1f} s vs "
                      f"brute-force all-pairs {bt:.1f} s -> ratio {bt / ours_greedy:.2f}x; "
                      f"same keep set: {bool(np.array_equal(base, ours_keep))}")
            if args.check:
                dec = {}
                for tbl in out.values():
                    for r in tbl.select(["sample_id", "keep", "representative_id"]).to_pylist():
                        dec[r["sample_id"]] = (r["keep"], r["representative_id"])
                t0 = time.perf_counter()
                rk, rr = brute_force_python(X, ids, labels, sims, t)
                ref = {ids[i]: (bool(rk[i]), ids[rr[i]] if rr[i] >= 0 else None) for i in range(len(ids))}
                same = sum(dec[s] == ref[s] for s in ids)
                print(f"exactness vs pure-Python brute force ({time.perf_counter() - t0:.1f} s): "
                      f"{same:,} / {len(ids):,} decisions identical (keep + representative)")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
