"""Mining quality on Fashion-MNIST with the labels hidden from the miner.

Pipeline: ingest (IDX images only, no labels) -> embed (pixels PCA-64, weight-free)
-> dedup.semantic -> dedup.apply -> mine.positives (near_duplicate, nn) ->
mine.negatives in several settings. The true labels are joined afterwards by
source position, and the script prints:

* false-negative rate: share of mined hard negatives that have the anchor's
  true label, for naive top-k (no guards) vs the guarded miner (near-duplicate
  + TopK-PercPos margin; group / label guards have no data here) vs
  semi-hard sampling and a skipped-top window;
* positive precision per kind: share of positives with the anchor's true label.

    python benchmarks/mining_quality.py [--n 70000] [--scheduler local|sync] [--run-dir DIR]
    python benchmarks/mining_quality.py --scale 1000000   # kNN mining throughput only (synthetic vectors)
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FMNIST = "/usr/share/datasets/fashion-mnist"
SETTINGS = {
    "naive_topk": dict(guard_near_duplicate=False, guard_group=False, guard_label=False, guard_margin=False),
    "guarded": dict(),
    "guarded_semi_hard": dict(sampling="semi_hard", semi_hard_pool=32),
    "guarded_skip10": dict(range_min=10, range_max=60),
}


def write_subset(n: int, out_dir: str) -> tuple[str, np.ndarray]:
    """IDX images of the first n train (+ test) images; returns the path and their true labels."""
    with gzip.open(f"{FMNIST}/train-images-idx3-ubyte.gz") as f:
        xtr = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{FMNIST}/t10k-images-idx3-ubyte.gz") as f:
        xte = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{FMNIST}/train-labels-idx1-ubyte.gz") as f:
        ytr = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(f"{FMNIST}/t10k-labels-idx1-ubyte.gz") as f:
        yte = np.frombuffer(f.read(), np.uint8, offset=8)
    x, y = np.concatenate([xtr, xte])[:n], np.concatenate([ytr, yte])[:n].astype(np.int64)
    path = os.path.join(out_dir, "images-idx3-ubyte.gz")
    import struct
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">3I", *x.shape) + x.tobytes())
    return path, y


def scale(n: int, d: int = 64, block: int = 16384) -> None:
    """Time index build + guarded mining of n synthetic clustered vectors, one query block after another."""
    from curate.ops import faiss_knn
    from curate.stages.mine.negatives import mine_block

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(1000, d)).astype(np.float32)
    x = faiss_knn.normalise(centers[rng.integers(0, 1000, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32))
    tmp = tempfile.mkdtemp(prefix="curate_scale_")
    spec = faiss_knn.KnnSpec()
    t0 = time.perf_counter()
    vec, idx, index = faiss_knn.prepare(x, tmp, spec)
    build = time.perf_counter() - t0
    recall = faiss_knn.measure_recall(index, x, 10, 500) if spec.resolve(n) != "flat" else 1.0
    aux = os.path.join(tmp, "aux.npz")
    np.savez(aux, label=np.full(n, -1), group=np.full(n, -1), dup=np.arange(n), pos_score=np.ones(n, np.float32),
             pos_keys=np.zeros(0, np.int64))
    prm = dict(range_max=50, range_min=0, num_negatives=8, sampling="top", semi_hard_pool=32,
               guard_near_duplicate=True, guard_group=True, guard_label=True, guard_margin=True,
               max_neg_ratio=0.95, seed=0, knn=spec)
    t0 = time.perf_counter()
    for a in range(0, n, block):
        mine_block((vec, idx, aux, a, min(a + block, n), prm))
    mine = time.perf_counter() - t0
    print(f"scale: {n} x {d} vectors, index {spec.resolve(n)} (recall@10 {recall:.3f}) built in {build:.1f} s; "
          f"guarded mining {n / mine:.0f} anchors/s on one process ({mine:.1f} s; blocks of {block} are "
          f"independent Dask tasks, so workers divide this)")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=70000)
    ap.add_argument("--scheduler", default="local")
    ap.add_argument("--run-dir", default=None, help="keep the run here (default: a temp dir, removed)")
    ap.add_argument("--num-negatives", type=int, default=8)
    ap.add_argument("--scale", type=int, default=0, help="only time mining of this many synthetic vectors")
    args = ap.parse_args()
    if args.scale:
        scale(args.scale)
        return

    from curate.config import PipelineConfig
    from curate.runner import run_pipeline
    from curate.train.data import run_context

    tmp = tempfile.mkdtemp(prefix="curate_mq_")
    run_dir = args.run_dir or os.path.join(tmp, "run")
    images, labels = write_subset(args.n, tmp)
    stages = [
        {"stage": "ingest", "partition_size": 8192, "sources": [{"type": "idx", "images": images}]},
        {"stage": "embed", "encoder": "pixels", "dim": 64},
        {"stage": "dedup.semantic", "eps": 0.01},
        {"stage": "dedup.apply"},
        {"stage": "mine.positives", "kinds": ["near_duplicate", "nn"]},
    ]
    for name, kw in SETTINGS.items():
        stages.append({"stage": "mine.negatives", "name": name, "num_negatives": args.num_negatives, **kw})
    t0 = time.perf_counter()
    summary = run_pipeline(PipelineConfig(name="mining_quality", stages=stages), run_dir=run_dir,
                           scheduler=args.scheduler, progress=False)
    print(f"pipeline on {args.n} images: {time.perf_counter() - t0:.0f} s "
          f"(mine.positives {summary['stages']['04_mine_positives']['seconds']:.1f} s, mine.negatives "
          f"{summary['stages']['06_guarded']['seconds']:.1f} s per setting)")
    ctx = run_context(run_dir)
    first = ctx.producers("samples")[0]
    from curate import io
    ing = pa.concat_tables([io.read_parquet(io.part_path(run_dir, first.dirname, pid),
                                            columns=["sample_id", "source_index"])
                            for pid in io.list_partitions(run_dir, first.dirname)])
    true = dict(zip(ing.column("sample_id").to_pylist(), labels[ing.column("source_index").to_numpy()].tolist()))
    kept = ctx.read_all("samples", columns=["sample_id"]).num_rows
    print(f"kept {kept} of {args.n} after SemDeDup (eps 0.01); labels hidden from every stage")
    print("\nhard negatives (k = %d): share with the anchor's TRUE label (false negatives), lower is better" %
          args.num_negatives)
    base_fn = None
    for i, name in enumerate(SETTINGS):
        stage_dir = f"{5 + i:02d}_{name}"
        pairs = pa.concat_tables([io.read_parquet(io.part_path(run_dir, stage_dir, pid))
                                  for pid in io.list_partitions(run_dir, stage_dir)])
        neg = pairs.filter(pc.is_valid(pairs.column("negative_ids")))
        anchors = neg.column("anchor_id").to_pylist()
        lists = neg.column("negative_ids").to_pylist()
        a_lab = np.repeat([true[a] for a in anchors], [len(x) for x in lists])
        n_lab = np.array([true[x] for xs in lists for x in xs])
        fn = float((a_lab == n_lab).mean()) if len(n_lab) else float("nan")
        base_fn = fn if base_fn is None else base_fn
        scores = np.array([s for xs in neg.column("negative_scores").to_pylist() for s in xs])
        import json
        st = {}
        for pid in io.list_partitions(run_dir, stage_dir, ext="json"):
            for k, v in io.read_json(io.manifest_path(run_dir, stage_dir, pid))["stats"].items():
                st[k] = st.get(k, 0) + v
        rej = {k[9:]: v for k, v in st.items() if k.startswith("rejected_") and k != "rejected_any"}
        print(f"  {name:<18} false-negative share {fn:6.1%}  ({fn / base_fn:4.2f}x naive)  "
              f"mean cos {scores.mean():.3f}  negatives/anchor {len(n_lab) / max(1, len(anchors)):.2f}  "
              f"rejected {json.dumps(rej)}")
    pairs = ctx.read_all("pairs")
    pos = pairs.filter(pc.is_valid(pairs.column("positive_kind")))
    print("\npositives: precision = share with the anchor's true label")
    for kind in sorted(set(pos.column("positive_kind").to_pylist())):
        p = pos.filter(pc.equal(pos.column("positive_kind"), kind))
        same = np.array([true[a] == true[b] for a, b in zip(p.column("anchor_id").to_pylist(),
                                                             p.column("positive_id").to_pylist())])
        print(f"  {kind:<16} {len(same):7d} pairs  precision {same.mean():6.1%}  mean score "
              f"{np.nanmean(p.column('positive_score').to_numpy(zero_copy_only=False)):.3f}")
    print(f"  (chance: {np.mean(np.bincount(labels, minlength=10) ** 2) / len(labels) ** 2 * 10:.1%})")
    if args.run_dir is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
