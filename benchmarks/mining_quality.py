"""Mining quality on Fashion-MNIST with the labels hidden from the miner (issue 11, item 4).

Pipeline: ingest (IDX images only, no labels) -> embed (``--encoder``, default ``pixels``) ->
dedup.semantic -> dedup.apply -> mine.positives (near_duplicate, nn) -> mine.negatives at its defaults.
The true labels are joined afterwards by source position. For every method it prints

* FN share - share of the mined negatives that have the anchor's true label (goal <= 25%);
* hardness - percentile of the negatives' mean cosine to their anchor among the cosines of 200k
  random pairs, in a fixed reference space the miner never sees: raw pixels mean-pooled to 14x14
  (goal >= 90);
* served - share of anchors that got ``num_negatives`` (goal >= 99%).

``defaults (pipeline)`` is the real stage over all kept anchors. The other rows re-mine a seeded sample of
anchors (``--anchors``, the smallest blake2b(seed|id)) with the stage's own block code (``mine_rows``) and
the stage's inputs (its kNN index and aux arrays from the run's ``_cache``), label-free methods only:

* naive_topk - the k nearest neighbours, no guard;
* topk_percpos - NV-Retriever's margin guard alone (Moreira et al. 2024);
* semi_hard - uniform from the 32 hardest survivors (InterCLR, Xie et al. 2022);
* hcl - from the 32 hardest with probability ~ exp(beta s): hardness-concentrated sampling (Robinson et al. 2021);
* debiased_band - a per-anchor similarity band from the debiasing class prior tau+ (Chuang et al. 2020):
  a uniformly drawn sample is a false negative with probability tau+, so candidates above the anchor's
  (1 - tau+) quantile of cosines to 4096 seeded random samples are dropped and the hardest below it taken;
* fn_cancel - false-negative cancellation (Huynh et al. 2022) with the anchor's 10 nearest neighbours as
  its support set: of the 1000 nearest candidates, the share ``c`` with the highest mean cosine to the
  support set is cancelled, then the hardest are taken;
* fine_cluster - exclusion of the anchor's own fine k-means cluster (manifold alpha 0);
* manifold_<x> - the manifold guard (Iscen et al. 2018) excluding x% of the clusters; 15 is the default;
* manifold_hcl - the manifold guard with HCL sampling;
* oracle_other_class - the nearest samples of another TRUE class (uses labels: an upper bound only).

    python benchmarks/mining_quality.py [--n 70000] [--anchors 2000] [--encoder pixels]
    python benchmarks/mining_quality.py --encoder ssl --weights RUN/models/ssl.safetensors
    python benchmarks/mining_quality.py --scale 1000000   # kNN mining throughput only (synthetic vectors)
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import os
import shutil
import struct
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FMNIST = "/usr/share/datasets/fashion-mnist"


def load_fmnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n train (+ test) images and their labels."""
    xs, ys = [], []
    for part in ("train", "t10k"):
        with gzip.open(f"{FMNIST}/{part}-images-idx3-ubyte.gz") as f:
            xs.append(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28))
        with gzip.open(f"{FMNIST}/{part}-labels-idx1-ubyte.gz") as f:
            ys.append(np.frombuffer(f.read(), np.uint8, offset=8))
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n].astype(np.int64)


def write_idx(x: np.ndarray, out_dir: str) -> str:
    path = os.path.join(out_dir, "images-idx3-ubyte.gz")
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">3I", *x.shape) + x.tobytes())
    return path


def reference_space(images: np.ndarray) -> np.ndarray:
    """Raw pixels mean-pooled to 14x14, unit length: the fixed space hardness is measured in."""
    r = images.reshape(-1, 14, 2, 14, 2).astype(np.float32).mean((2, 4)).reshape(len(images), -1)
    return r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)


class Scorer:
    """FN share, hardness percentile and served share of (anchors, negative rows) against the true labels."""

    def __init__(self, y: np.ndarray, ref: np.ndarray, m: int, seed: int = 0):
        self.y, self.ref, self.m = y, ref, m
        rng = np.random.default_rng(seed)
        a, b = rng.integers(0, len(y), 200_000), rng.integers(0, len(y), 200_000)
        self.rand = np.sort(np.einsum("ij,ij->i", ref[a], ref[b]))

    def __call__(self, anchors: np.ndarray, neg: np.ndarray) -> tuple[float, float, float]:
        ok = neg >= 0
        j = np.where(ok, neg, 0)
        fn = float((self.y[j] == self.y[anchors][:, None])[ok].mean()) if ok.any() else float("nan")
        cos = float(np.einsum("bkd,bd->bk", self.ref[j], self.ref[anchors])[ok].mean()) if ok.any() else -1.0
        hard = 100.0 * np.searchsorted(self.rand, cos) / len(self.rand)
        return fn, hard, float((ok.sum(1) >= self.m).mean())


def _take(ok: np.ndarray, I: np.ndarray, m: int) -> np.ndarray:
    """The first m True columns of each row of ``ok`` (rank order), as ids of I; -1 where fewer."""
    pick = np.argsort(~ok, axis=1, kind="stable")[:, :m]
    return np.where(np.take_along_axis(ok, pick, 1), np.take_along_axis(I, pick, 1), -1)


def debiased_band(x: np.ndarray, rows: np.ndarray, m: int, tau: float, seed: int) -> np.ndarray:
    """Chuang et al. 2020's class prior as a per-anchor band: the m hardest below the (1-tau) quantile."""
    ref = x[np.sort(np.random.default_rng(seed).choice(len(x), min(4096, len(x)), replace=False))]
    out = np.full((len(rows), m), -1, np.int64)
    for c0 in range(0, len(rows), 256):
        r = rows[c0:c0 + 256]
        thr = np.quantile(x[r] @ ref.T, 1.0 - tau, axis=1)
        s = x[r] @ x.T
        s[np.arange(len(r)), r] = -np.inf
        s[s > thr[:, None]] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, :m]
        out[c0:c0 + len(r)] = np.where(np.isfinite(np.take_along_axis(s, top, 1)), top, -1)
    return out


def fn_cancel(x: np.ndarray, index, rows: np.ndarray, m: int, cancel: float, support: int = 10,
              pool: int = 1000) -> np.ndarray:
    """Huynh et al. 2022 with the anchor's nearest neighbours as support views: cancel the ``cancel`` share
    of the pool most similar (mean cosine) to the support set, take the m hardest of the rest."""
    S, I = index.search(np.ascontiguousarray(x[rows]), pool + 1)
    valid = (I >= 0) & (I != rows[:, None])
    sup = np.stack([I[b][valid[b]][:support] for b in range(len(rows))])
    agg = np.einsum("bkd,bd->bk", x[np.where(I >= 0, I, 0)], x[sup].mean(1))
    agg[~valid] = np.inf
    cut = np.nanquantile(np.where(valid, agg, np.nan), 1.0 - cancel, axis=1)
    return _take(valid & (agg < cut[:, None]), I, m)


def methods(x, index, aux, rows, prm, y, seed):
    """name -> (anchor rows, negative ids) for every method (see the module docstring)."""
    from curate.stages.mine import manifold
    from curate.stages.mine.negatives import mine_rows

    m = prm["num_negatives"]
    off = dict(guard_near_duplicate=False, guard_group=False, guard_margin=False, guard_manifold=False)
    nomf = dict(guard_manifold=False)
    out = {}

    def run(name, ax=aux, **over):
        out[name] = mine_rows(x, index, ax, rows, dict(prm, guard_label=False, **over))[0]

    run("naive_topk", **off)
    run("topk_percpos", **nomf)
    run("semi_hard", sampling="semi_hard", **nomf)
    run("hcl", sampling="hcl", **nomf)
    for tau in (0.02, 0.1):
        out[f"debiased_band_tau{tau:g}"] = debiased_band(x, rows, m, tau, seed)
    for c in (0.5, 0.9):
        out[f"fn_cancel_c{c:g}"] = fn_cancel(x, index, rows, m, c)
    if "cluster" in aux:
        k = len(aux["centroids"])
        run("fine_cluster", dict(aux, excluded=np.eye(k, dtype=bool)))
        F = manifold.diffusion(aux["centroids"], prm["manifold_graph_k"], prm["manifold_alpha"])
        for f in (0.05, 0.1, 0.15, 0.2):
            run(f"manifold_{round(f * 100)}", dict(aux, excluded=manifold.excluded_clusters(F, f)))
        run("manifold_hcl", sampling="hcl")
    S, I = index.search(np.ascontiguousarray(x[rows]), min(len(x), 5001))
    out["oracle_other_class"] = _take((I >= 0) & (I != rows[:, None]) & (y[np.where(I >= 0, I, 0)] != y[rows][:, None]),
                                      I, m)
    return out


def scale(n: int, d: int = 64, block: int = 16384) -> None:
    """Time index build + guarded mining of n synthetic clustered vectors, one query block after another."""
    from curate.ops import faiss_knn
    from curate.stages.mine import manifold
    from curate.stages.mine.negatives import NegativesParams, anchor_seeds, block_params, manifold_arrays, mine_block

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(1000, d)).astype(np.float32)
    x = faiss_knn.normalise(centers[rng.integers(0, 1000, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32))
    tmp = tempfile.mkdtemp(prefix="curate_scale_")
    p = NegativesParams()
    spec = p.knn_spec(0)
    t0 = time.perf_counter()
    vec, idx, index = faiss_knn.prepare(x, tmp, spec)
    build = time.perf_counter() - t0
    recall = faiss_knn.measure_recall(index, x, 10, 500) if spec.resolve(n) != "flat" else 1.0
    ids = np.array([f"s{i:08d}" for i in range(n)], object)
    t0 = time.perf_counter()
    mc = manifold.fit(x, ids, None, p.manifold_graph_k, p.manifold_alpha, p.manifold_exclude, 0)
    fit = time.perf_counter() - t0
    aux = os.path.join(tmp, "aux.npz")
    np.savez(aux, label=np.full(n, -1), group=np.full(n, -1), dup=np.arange(n), pos_score=np.ones(n, np.float32),
             pos_keys=np.zeros(0, np.int64), seeds=anchor_seeds(ids, 0), **manifold_arrays(mc))
    prm = block_params(p, 0, spec)
    t0 = time.perf_counter()
    for a in range(0, n, block):
        mine_block((vec, idx, aux, a, min(a + block, n), prm))
    mine = time.perf_counter() - t0
    print(f"scale: {n} x {d} vectors, index {spec.resolve(n)} (recall@10 {recall:.3f}) built in {build:.1f} s; "
          f"manifold guard fit {fit:.1f} s; mining at the defaults {n / mine:.0f} anchors/s on one process "
          f"({mine:.1f} s; blocks of {block} are independent Dask tasks, so workers divide this)")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=70000)
    ap.add_argument("--anchors", type=int, default=2000, help="seeded anchor sample for the method rows")
    ap.add_argument("--encoder", default="pixels")
    ap.add_argument("--weights", default=None, help="checkpoint for --encoder ssl")
    ap.add_argument("--scheduler", default="local")
    ap.add_argument("--run-dir", default=None, help="keep the run here (default: a temp dir, removed)")
    ap.add_argument("--num-negatives", type=int, default=8)
    ap.add_argument("--scale", type=int, default=0, help="only time mining of this many synthetic vectors")
    args = ap.parse_args()
    if args.scale:
        scale(args.scale)
        return

    from curate import io
    from curate.config import PipelineConfig
    from curate.ops import faiss_knn
    from curate.runner import run_pipeline
    from curate.stages.mine import _common as C
    from curate.stages.mine.negatives import NegativesParams, anchor_seeds, block_params, mined_negatives
    from curate.train.data import run_context

    tmp = tempfile.mkdtemp(prefix="curate_mq_")
    run_dir = args.run_dir or os.path.join(tmp, "run")
    images, labels = load_fmnist(args.n)
    embed = {"stage": "embed", "encoder": args.encoder, **({"weights": args.weights} if args.weights else {})}
    stages = [
        {"stage": "ingest", "partition_size": 8192, "sources": [{"type": "idx", "images": write_idx(images, tmp)}]},
        embed,
        {"stage": "dedup.semantic", "eps": 0.01},
        {"stage": "dedup.apply"},
        {"stage": "mine.positives", "kinds": ["near_duplicate", "nn"]},
        {"stage": "mine.negatives", "num_negatives": args.num_negatives},
    ]
    t0 = time.perf_counter()
    summary = run_pipeline(PipelineConfig(name="mining_quality", stages=stages), run_dir=run_dir,
                           scheduler=args.scheduler, progress=False)
    st = summary["stages"]
    print(f"pipeline on {args.n} images, encoder {args.encoder}: {time.perf_counter() - t0:.0f} s "
          f"(mine.positives {st['04_mine_positives']['seconds']:.1f} s, mine.negatives "
          f"{st['05_mine_negatives']['seconds']:.1f} s)")
    ctx = run_context(run_dir)
    ctx = dataclasses.replace(ctx, partitions=tuple(ctx.partition_ids("samples")))
    first = ctx.producers("samples")[0]
    ing = pa.concat_tables([io.read_parquet(io.part_path(run_dir, first.dirname, pid),
                                            columns=["sample_id", "source_index"])
                            for pid in io.list_partitions(run_dir, first.dirname)])
    src = dict(zip(ing.column("sample_id").to_pylist(), ing.column("source_index").to_pylist()))
    kept, _ = C.load_kept(ctx, "mining_quality")
    pos = np.array([src[s] for s in kept.ids.tolist()])
    y, ref = labels[pos], reference_space(images[pos])  # row i of the stage's vectors = kept.ids[i]
    row = {s: i for i, s in enumerate(kept.ids.tolist())}
    score = Scorer(y, ref, args.num_negatives)
    print(f"kept {len(kept.ids)} of {args.n} after SemDeDup (eps 0.01); labels hidden from every stage")
    print(f"reference space: raw pixels pooled to 14x14; p90 of random-pair cosine {score.rand[180_000]:.4f}")
    counters = st["05_mine_negatives"]["counters"]
    print("mine.negatives counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())
                                                   if k.startswith(("anchors", "rejected", "manifold", "negatives", "margin"))))

    neg = mined_negatives(pa.concat_tables([io.read_parquet(io.part_path(run_dir, "05_mine_negatives", pid))
                                            for pid in io.list_partitions(run_dir, "05_mine_negatives")]))
    a = np.array([row[s] for s in neg.column("anchor_id").to_pylist()])
    lists = neg.column("negative_ids").to_pylist()
    mat = np.full((len(a), args.num_negatives), -1, np.int64)
    for i, v in enumerate(lists):
        mat[i, :len(v)] = [row[s] for s in v]
    header = f"  {'method':<26} {'FN share':>9} {'hardness pct':>13} {'served':>8}"
    print(f"\nhard negatives (k = {args.num_negatives}); goals: FN <= 25%, hardness >= 90, served >= 99%")
    print(header)
    fn, hard, served = score(a, mat)
    print(f"  {'defaults (pipeline, all)':<26} {fn:9.1%} {hard:13.1f} {served:8.1%}")

    p = NegativesParams(num_negatives=args.num_negatives)
    seed = 0  # the run's seed (run_pipeline's default); checked against the stage's per-anchor seeds below
    work = C.work_dir(ctx)
    vec_path, index_path, _ = faiss_knn.prepare(kept.x, work, p.knn_spec(seed))
    x, index = faiss_knn._load(vec_path, index_path)
    assert np.array_equal(x, kept.x), "kept order differs from the stage's vectors"
    auxes = [f for f in glob.glob(os.path.join(work, "aux-*.npz"))]
    assert len(auxes) == 1, auxes
    with np.load(auxes[0], allow_pickle=False) as z:
        aux = {k: z[k] for k in z.files}
    assert np.array_equal(aux["seeds"], anchor_seeds(kept.ids, seed)), "the run used another seed"
    rows = np.sort(np.argsort(aux["seeds"], kind="stable")[:args.anchors])
    prm = block_params(p, seed, p.knn_spec(seed))
    faiss_knn.set_search_params(index, prm["knn"])
    t0 = time.perf_counter()
    res = methods(x, index, aux, rows, prm, y, seed)
    print(f"  -- {len(rows)} seeded anchors, the stage's block code and inputs ({time.perf_counter() - t0:.0f} s) --")
    res = {"defaults": mine_rows_default(x, index, aux, rows, prm), **res}
    for name, negs in res.items():
        fn, hard, served = score(rows, negs)
        print(f"  {name:<26} {fn:9.1%} {hard:13.1f} {served:8.1%}")

    pairs = ctx.read_all("pairs")
    posr = pairs.filter(pc.is_valid(pairs.column("positive_kind")))
    print("\npositives: precision = share with the anchor's true label")
    true = {s: int(labels[i]) for s, i in src.items()}
    for kind in sorted(set(posr.column("positive_kind").to_pylist())):
        t = posr.filter(pc.equal(posr.column("positive_kind"), kind))
        same = np.array([true[u] == true[v] for u, v in zip(t.column("anchor_id").to_pylist(),
                                                                             t.column("positive_id").to_pylist())])
        print(f"  {kind:<16} {len(same):7d} pairs  precision {same.mean():6.1%}")
    shutil.rmtree(tmp, ignore_errors=True)  # the IDX copy (and the run, unless --run-dir put it elsewhere)


def mine_rows_default(x, index, aux, rows, prm):
    from curate.stages.mine.negatives import mine_rows

    return mine_rows(x, index, aux, rows, prm)[0]


if __name__ == "__main__":
    main()
