"""Results do not depend on how the work is cut (issue 13, item 3).

The same pipeline (ingest -> embed -> dedup.exact + phash + semantic -> dedup.apply -> mine.positives +
mine.negatives -> shard) runs with the in-process scheduler and with a local Dask cluster of 1, 2 and 4
workers, two ingest partition sizes and two settings of every execution-only knob (kNN ``block_size``,
``dedup.semantic`` ``chunk_items``, ``dedup.phash`` ``splits``). Every table of every stage must be equal
(sorted rows; Parquet bytes file by file where the partitioning is the same), and the shards and their
index byte-identical.

The data: 200 crops of scikit-image's shipped pictures plus exact copies, JPEG re-encodes and brightened
copies of some of them (so that every dedup method and both mining stages have work), plus two broken files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.config import PipelineConfig
from curate.runner import run_pipeline

SMALL = {"block_size": 64, "chunk_items": 256, "splits": 1}  # many tasks
LARGE = {"block_size": 16384, "chunk_items": 65536, "splits": 7}  # one task (splits: an odd cut)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> str:
    import skimage.data as d

    root = tmp_path_factory.mktemp("determinism") / "imgs"
    rng = np.random.default_rng(7)
    pics = [np.asarray(Image.fromarray(p).convert("L")) for p in
            (d.camera(), d.coins(), d.astronaut(), d.chelsea(), d.moon(), d.brick(), d.coffee(), d.clock(),
             d.page(), d.rocket(), d.grass(), d.immunohistochemistry())]
    arrays = []
    for i in range(200):
        p = pics[i % len(pics)]
        y, x = rng.integers(0, p.shape[0] - 64), rng.integers(0, p.shape[1] - 64)
        arrays.append(np.asarray(Image.fromarray(p[y:y + 64, x:x + 64]).resize((24, 24), Image.Resampling.BILINEAR)))
    files: list[tuple[str, bytes]] = []
    for i, a in enumerate(arrays):
        files.append((f"{'abc'[i % 3]}/img{i:03d}.png", _png(a)))
    for j, i in enumerate(rng.choice(200, 60, replace=False)):
        a = arrays[i]
        kind = j % 3
        if kind == 0:
            files.append((f"{'abc'[j % 3]}/copy{j:02d}.png", _png(a)))
        elif kind == 1:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=90)
            files.append((f"{'abc'[j % 3]}/jpeg{j:02d}.jpg", buf.getvalue()))
        else:
            files.append((f"{'abc'[j % 3]}/bright{j:02d}.png", _png(np.clip(a.astype(int) + 6, 0, 255).astype(np.uint8))))
    files += [("a/truncated.png", files[0][1][:50]), ("b/empty.png", b"")]
    for name, data in files:
        os.makedirs(root / name.split("/")[0], exist_ok=True)
        (root / name).write_bytes(data)
    return str(root)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def pipeline(images: str, partition_size: int, knobs: dict) -> PipelineConfig:
    knn = {"block_size": knobs["block_size"]}
    return PipelineConfig(name="det", seed=3, stages=[
        {"stage": "ingest", "partition_size": partition_size, "group_secret": "determinism-test",
         "sources": [{"type": "folder", "path": images}]},
        {"stage": "embed", "dim": 16},
        {"stage": "dedup.exact"},
        {"stage": "dedup.phash", "threshold": 10, "splits": knobs["splits"]},
        {"stage": "dedup.semantic", "eps": 0.05, "chunk_items": knobs["chunk_items"]},
        {"stage": "dedup.apply"},
        {"stage": "mine.positives", "kinds": ["near_duplicate", "nn", "same_label"], **knn},
        {"stage": "mine.negatives", "num_negatives": 3, "sampling": "semi_hard", "semi_hard_pool": 8, **knn},
        {"stage": "shard", "max_rows": 70},
    ])


def run(images: str, run_dir: str, partition_size: int, knobs: dict, scheduler: str = "sync",
        workers: int | None = None) -> str:
    from curate import stage

    stage._INSTANCES.clear()  # every run fits its own state (embed's PCA), as a fresh worker process does
    summary = run_pipeline(pipeline(images, partition_size, knobs), run_dir, scheduler=scheduler, workers=workers,
                           progress=False)
    assert summary["accounting"]["balanced"], summary["accounting"]
    return run_dir


# ------------------------------------------------------------------------------------ comparing runs
def _stage_dirs(run_dir: str) -> list[str]:
    return sorted(d for d in os.listdir(run_dir) if d[:2].isdigit() and d[2] == "_")


def parquet_files(run_dir: str) -> dict[str, bytes]:
    """Every Parquet file of every stage (tables, secondary tables, map outputs, shards) by relative path."""
    out = {}
    for stage in _stage_dirs(run_dir):
        for d, _, files in os.walk(os.path.join(run_dir, stage)):
            for f in files:
                if f.endswith(".parquet"):
                    path = os.path.join(d, f)
                    with open(path, "rb") as fh:
                        out[os.path.relpath(path, run_dir)] = fh.read()
    return out


def tables(run_dir: str) -> dict[str, pa.Table]:
    """Every stage table, all partitions concatenated and rows sorted (partition ids depend on the cut)."""
    out = {}
    for stage in _stage_dirs(run_dir):
        for d, subdirs, files in os.walk(os.path.join(run_dir, stage)):
            subdirs[:] = [s for s in subdirs if s not in ("shards", "_map")]
            parts = sorted(f for f in files if f.startswith("part-") and f.endswith(".parquet"))
            if not parts:
                continue
            t = pa.concat_tables([pq.read_table(os.path.join(d, f)) for f in parts])
            keys = [c for c in t.column_names if not pa.types.is_nested(t.schema.field(c).type)
                    and not pa.types.is_binary(t.schema.field(c).type)]
            out[os.path.relpath(d, run_dir)] = t.sort_by([(c, "ascending") for c in keys]).combine_chunks()
    return out


def shards(run_dir: str) -> dict[str, str]:
    """sha256 of every shard file and index.json (less its creation time)."""
    [stage] = [s for s in _stage_dirs(run_dir) if s.endswith("_shard")]
    d = os.path.join(run_dir, stage, "shards")
    out = {}
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), "rb") as fh:
            data = fh.read()
        if f == "index.json":
            index = json.loads(data)
            index.pop("created", None)
            data = json.dumps(index, sort_keys=True).encode()
        out[f] = hashlib.sha256(data).hexdigest()
    return out


def assert_same_tables(a: str, b: str) -> None:
    ta, tb = tables(a), tables(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        assert ta[name].schema.equals(tb[name].schema, check_metadata=True), name
        assert ta[name].equals(tb[name]), f"{name} differs between {a} and {b}"
    assert shards(a) == shards(b)


def assert_same_bytes(a: str, b: str) -> None:
    fa, fb = parquet_files(a), parquet_files(b)
    assert sorted(fa) == sorted(fb)
    differ = [p for p in fa if fa[p] != fb[p]]
    assert not differ, f"Parquet files differ between {a} and {b}: {differ[:8]}"
    assert shards(a) == shards(b)


# ------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def baseline(images, tmp_path_factory) -> str:
    return run(images, str(tmp_path_factory.mktemp("det") / "base"), 50, SMALL)


def test_baseline_has_work_for_every_stage(baseline):
    s = json.load(open(os.path.join(baseline, "summary.json")))
    st = {v["key"]: v for v in s["stages"].values()}
    assert s["accounting"]["quarantined"] == 2 and s["accounting"]["removed"] >= 20
    for key in ("dedup.exact", "dedup.phash", "dedup.semantic"):
        assert st[key]["rows"]["decisions"] == s["accounting"]["ingested"] - 2
    assert st["dedup.apply"]["counters"]["removed"] == s["accounting"]["removed"]
    assert st["mine.negatives"]["counters"]["anchors"] == s["accounting"]["kept"]
    assert st["shard"]["counters"]["shards"] >= 3  # several shards, so their cut is compared too
    assert st["ingest"]["partitions"] >= 5


@pytest.mark.parametrize("partition_size, knobs", [(50, LARGE), (128, SMALL), (128, LARGE)],
                         ids=["blocks", "partitions", "partitions+blocks"])
def test_same_tables_whatever_partition_and_block_size(images, baseline, tmp_path, partition_size, knobs):
    other = run(images, str(tmp_path / "run"), partition_size, knobs)
    assert_same_tables(baseline, other)
    if partition_size == 50:
        assert_same_bytes(baseline, other)


def test_same_bytes_whatever_thread_count(images, baseline, tmp_path):
    """Dask workers run with one OpenMP / torch thread (the nanny sets OMP_NUM_THREADS=1), an in-process
    run with one per core: the faiss PCA fit of ``embed`` once depended on that (fast stand-in for the
    multi-worker test below)."""
    import faiss
    import torch

    threads, torch_threads = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    try:
        other = run(images, str(tmp_path / "run"), 50, SMALL)
    finally:
        faiss.omp_set_num_threads(threads)
        torch.set_num_threads(torch_threads)
    assert_same_bytes(baseline, other)


@pytest.mark.slow  # 25-60 s each on 2 cores: a LocalCluster of worker processes, each importing torch
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_same_bytes_whatever_worker_count(images, baseline, tmp_path, workers):
    """A local Dask cluster (one process per worker) writes the same Parquet bytes as the in-process run."""
    other = run(images, str(tmp_path / "run"), 50, SMALL, scheduler="local", workers=workers)
    assert_same_bytes(baseline, other)


@pytest.mark.slow
def test_same_tables_with_4_workers_other_partitions_and_blocks(images, baseline, tmp_path):
    other = run(images, str(tmp_path / "run"), 128, LARGE, scheduler="local", workers=4)
    assert_same_tables(baseline, other)
