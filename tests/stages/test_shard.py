import hashlib
import json

import numpy as np
import pytest
import pyarrow.parquet as pq

from curate.config import PipelineConfig
from curate.load import ShardDataset
from curate.runner import run_pipeline
from curate.samples import samples_from_arrays
from curate.stages.shard import _plan_cuts, build_shard_table, write_shards
from tests.conftest import idx_pipeline, read_run_table


def pipeline(idx_dataset, **shard):
    img, lab, *_ = idx_dataset
    cfg = idx_pipeline(img, lab, partition_size=70)
    cfg["stages"].append({"stage": "shard", **shard})
    return PipelineConfig(**cfg)


def test_shard_stage_round_trip_and_index(tmp_path, idx_dataset):
    _, _, images, labels = idx_dataset
    run = tmp_path / "run"
    summary = run_pipeline(pipeline(idx_dataset, max_rows=64, row_group_max_rows=16), str(run), scheduler="sync",
                           progress=False)
    d = run / "01_shard" / "shards"
    index = json.loads((d / "index.json").read_text())
    assert index["num_samples"] == 300 and index["num_shards"] == 5
    assert [s["rows"] for s in index["shards"]] == [60, 60, 60, 60, 60]  # max_rows 64, evened out
    for s in index["shards"]:
        data = (d / s["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]
        md = pq.ParquetFile(d / s["path"]).metadata
        assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == s["row_groups"]
        assert md.row_group(0).column(0).compression == "ZSTD"
    # placements: one per sample, per partition, pointing at the right row
    placed = read_run_table(run, "01_shard")
    assert placed.num_rows == 300
    first = placed.slice(0, 1).to_pylist()[0]
    t = pq.read_table(d / first["shard"])
    assert t.column("sample_id")[first["row"]].as_py() == first["sample_id"]
    # the loader sees the pixels and labels that went in
    got = {it["label"]: 0 for it in ShardDataset(run)}
    assert len(list(ShardDataset(run))) == 300 and set(got) == set(labels.tolist())
    assert summary["stages"]["01_shard"]["partitions"] == 5


def test_shuffle_is_deterministic_and_seeded(tmp_path, idx_dataset):
    a = tmp_path / "a"
    b = tmp_path / "b"
    run_pipeline(pipeline(idx_dataset, max_rows=100), str(a), scheduler="sync", progress=False)
    run_pipeline(pipeline(idx_dataset, max_rows=100), str(b), scheduler="sync", progress=False)
    ia = json.loads((a / "01_shard/shards/index.json").read_text())
    ib = json.loads((b / "01_shard/shards/index.json").read_text())
    assert [s["sha256"] for s in ia["shards"]] == [s["sha256"] for s in ib["shards"]]
    c = tmp_path / "c"
    run_pipeline(pipeline(idx_dataset, max_rows=100, seed=1), str(c), scheduler="sync", progress=False)
    ic = json.loads((c / "01_shard/shards/index.json").read_text())
    assert [s["sha256"] for s in ia["shards"]] != [s["sha256"] for s in ic["shards"]]


def test_byte_limit_and_rerun_removes_stale_shards(tmp_path, idx_dataset):
    run = tmp_path / "run"
    run_pipeline(pipeline(idx_dataset, max_rows=10), str(run), scheduler="sync", progress=False)
    assert len(list((run / "01_shard/shards").glob("shard-*.parquet"))) == 30
    run_pipeline(pipeline(idx_dataset, max_bytes=8 * 1024), str(run), scheduler="sync", progress=False)
    index = json.loads((run / "01_shard/shards/index.json").read_text())
    files = sorted(p.name for p in (run / "01_shard/shards").glob("shard-*.parquet"))
    assert files == [s["path"] for s in index["shards"]]
    assert all(s["bytes"] <= 8 * 1024 + 4096 for s in index["shards"])  # estimate + parquet footer
    assert sum(s["rows"] for s in index["shards"]) == 300


def test_plan_cuts_respects_both_limits():
    sizes = np.array([10, 10, 10, 50, 10, 10, 200, 10])
    cuts = _plan_cuts(sizes, max_rows=3, max_bytes=40)
    assert cuts == [(0, 3), (3, 4), (4, 6), (6, 7), (7, 8)]
    assert sum(b - a for a, b in cuts) == len(sizes)


def test_adainf_replication_becomes_weights_and_metadata(tmp_path, idx_dataset):
    run = tmp_path / "run"
    aug = {"crop_min_scale": 0.2, "jitter_p": 0.4, "jitter_strength": 0.5}
    run_pipeline(pipeline(idx_dataset, adainf={"real_replication": 2.0, "augmentation": aug}), str(run),
                 scheduler="sync", progress=False)
    index = json.loads((run / "01_shard/shards/index.json").read_text())
    assert index["metadata"]["adainf"]["real_replication"] == 2.0
    assert index["metadata"]["augmentation"] == aug and index["metadata"]["uniform_weights"] is False
    ds = ShardDataset(run)
    assert len(ds) == 600  # every real row twice
    from curate.load import SimCLRAugment
    a = SimCLRAugment.from_params(32, ds.metadata["augmentation"])
    assert (a.crop_min_scale, a.jitter_p, a.jitter_strength) == (0.2, 0.4, 0.5)


def test_build_shard_table_weights_synthetic_rows_once():
    s = samples_from_arrays([np.full((3, 3), i, np.uint8) for i in range(4)], is_synthetic=[False, True, False, True])
    t = build_shard_table(s, None, real_replication=3.0)
    assert t.column("sample_weight").to_pylist() == [3.0, 1.0, 3.0, 1.0]


def test_write_throughput_close_to_bare_pyarrow(tmp_path):
    """Smoke version of benchmarks/loader_speed: our writer is not slower than 0.5x a bare write_table."""
    import time
    rng = np.random.default_rng(0)
    s = samples_from_arrays([rng.integers(0, 255, (16, 16), dtype=np.uint8) for _ in range(2000)])
    t = build_shard_table(s, None)
    t0 = time.perf_counter()
    pq.write_table(t, tmp_path / "bare.parquet", compression="zstd")
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_shards(t, str(tmp_path / "ours"), max_rows=500)
    ours = time.perf_counter() - t0
    assert ours < max(2.0 * bare, 0.2)


def test_shard_takes_adainf_table_from_inflate_adainf(tmp_path):
    import tests.stages.mine._fixture  # noqa: F401 - registers test.planted
    from tests.stages.mine._fixture import make_partitions
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    path = str(tmp_path / "p.pkl")
    make_partitions(x, path, is_synthetic=[i % 3 == 0 for i in range(12)])
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": path},
                                           {"stage": "inflate.adainf", "mode": "paper"},
                                           {"stage": "shard"}])
    run = tmp_path / "run"
    run_pipeline(cfg, str(run), scheduler="sync", progress=False)
    index = json.loads((run / "02_shard/shards/index.json").read_text())
    meta = index["metadata"]
    assert meta["adainf"]["real_replication"] == 10.0 and meta["adainf"]["source"] == "adainf table"
    assert meta["augmentation"]["crop_min_scale"] == 0.2 and meta["synthetic"] == 4
    ds = ShardDataset(run)
    assert len(ds) == 8 * 10 + 4
    assert ds.recommended_augment(16).jitter_strength == 0.5


def test_inlined_partners_need_no_random_access(tmp_path):
    import pyarrow as pa
    from curate.imaging import decode_png
    s = samples_from_arrays([np.full((3, 3), i * 20, np.uint8) for i in range(6)])
    sid = s.column("sample_id").to_pylist()
    pairs = pa.table({
        "anchor_id": [sid[0], sid[0], sid[1]],
        "positive_id": [sid[2], None, None],
        "positive_kind": ["nn", None, None],
        "positive_score": pa.array([0.9, None, None], pa.float32()),
        "class_pair": pa.array([None] * 3, pa.string()),
        "negative_ids": [None, [sid[3], sid[4], sid[5]], [sid[0]]],
        "negative_scores": pa.array([None, [0.5, 0.4, 0.3], [0.2]], pa.list_(pa.float32())),
    })
    t = build_shard_table(s, pairs, inline_positives=True, inline_negatives=2)
    rows = {r["sample_id"]: r for r in t.to_pylist()}
    assert rows[sid[0]]["positive_images"] == [s.column("image")[2].as_py()]
    assert rows[sid[0]]["negative_images"] == [s.column("image")[3].as_py(), s.column("image")[4].as_py()]
    assert rows[sid[1]]["negative_images"] == [s.column("image")[0].as_py()]
    assert rows[sid[2]]["negative_images"] is None
    write_shards(t, str(tmp_path / "sh"), max_rows=2)
    ds = ShardDataset(tmp_path / "sh", pairs="triplet")
    items = {it["sample_id"]: it for it in ds}
    assert ds._store is None  # every partner came from the anchor's own row
    a = items[sid[0]]
    assert a["negative_id"] in (sid[3], sid[4])
    assert np.array_equal(a["negative_image"][0].numpy(), decode_png(rows[a["negative_id"]]["image"]))


def _shard_output(run, stage="01_shard"):
    """(index without its timestamp, {file: bytes}, placements) of a shard stage's output."""
    d = run / stage / "shards"
    index = json.loads((d / "index.json").read_text())
    index.pop("created")
    files = {p.name: p.read_bytes() for p in sorted(d.glob("shard-*.parquet"))}
    return index, files, read_run_table(run, stage)


def _idx_shard_config(idx_dataset, partition_size, **shard):
    img, lab, *_ = idx_dataset
    cfg = idx_pipeline(img, lab, partition_size=partition_size)
    cfg["stages"].append({"stage": "shard", **shard})
    return PipelineConfig(**cfg)


def test_stage_writes_the_in_memory_writers_bytes_whatever_the_partitioning(tmp_path, idx_dataset):
    """Shard tasks write exactly what write_shards writes from the whole table (in source order) in one
    process, and the partition size (here 70, 23 and 300 rows) changes nothing, placements included."""
    outs = []
    for size in (70, 23, 300):
        run = tmp_path / f"p{size}"
        run_pipeline(_idx_shard_config(idx_dataset, size, max_rows=64, row_group_max_rows=16), str(run),
                     scheduler="sync", progress=False)
        outs.append(_shard_output(run))
    for index, files, placed in outs[1:]:
        assert index == outs[0][0] and files == outs[0][1]
        assert placed.sort_by("sample_id").equals(outs[0][2].sort_by("sample_id"))
    samples = read_run_table(tmp_path / "p70", "00_ingest").sort_by(
        [("source_uri", "ascending"), ("source_index", "ascending"), ("sample_id", "ascending")])  # source order
    ref_index, ref_placed = write_shards(build_shard_table(samples, None), str(tmp_path / "ref"), seed=0,
                                         max_rows=64, row_group_max_rows=16)
    ref_index.pop("created")
    index, files, placed = outs[0]
    assert [s["sha256"] for s in index["shards"]] == [s["sha256"] for s in ref_index["shards"]]
    assert {k: v for k, v in index["metadata"].items() if k not in ("name", "adainf", "augmentation",
                                                                     "source_stage")} == ref_index["metadata"]
    assert placed.sort_by("sample_id").equals(ref_placed.sort_by("sample_id"))
    assert not (tmp_path / "p70" / "scratch" / "01_shard").exists()  # the encoded images are dropped


def test_resume_after_scratch_is_gone_gives_the_same_shards(tmp_path, idx_dataset):
    """A run killed after the map pass (scratch written) but before the index: the rerun re-encodes."""
    run = tmp_path / "run"
    cfg = _idx_shard_config(idx_dataset, 70, max_rows=100)
    run_pipeline(cfg, str(run), scheduler="sync", progress=False)
    want = _shard_output(run)
    for f in (run / "01_shard").glob("part-*.json"):  # partitions not done; map manifests stay valid
        f.unlink()
    assert list((run / "01_shard" / "_map").glob("part-*.json"))
    run_pipeline(cfg, str(run), scheduler="sync", progress=False)
    got = _shard_output(run)
    assert got[0] == want[0] and got[1] == want[1]


def _mined_config(path, partition_hint, **shard):
    return PipelineConfig(name="t", stages=[
        {"stage": "test.planted", "path": path}, {"stage": "dedup.apply"},
        {"stage": "mine.positives", "kinds": ["near_duplicate", "nn"]},
        {"stage": "mine.negatives", "num_negatives": 3, "guard_label": False, "block_size": partition_hint},
        {"stage": "shard", **shard}])


def test_inlined_partners_and_pairs_across_shard_tasks(tmp_path):
    """Pairs, partner images of removed copies and inlined kept partners come out the same when the rows
    sit in 2 or 5 partitions (the shard tasks gather them from every partition)."""
    import pyarrow as pa
    import tests.stages.mine._fixture  # noqa: F401 - registers test.planted
    from tests.stages.mine._fixture import decision, make_partitions
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    x[5::7] = x[4::7][:len(x[5::7])] + 0.01  # every 7th row a near copy of its predecessor ...
    ids = make_partitions(x, str(tmp_path / "ids"))
    dec = [decision(ids[i], ids[i - 1], 0.99) for i in range(5, 40, 7)]  # ... that dedup removed
    outs = []
    for nparts in (2, 5):
        src = str(tmp_path / f"src{nparts}")
        make_partitions(x, src, n_parts=nparts, decisions=dec)
        run = tmp_path / f"run{nparts}"
        run_pipeline(_mined_config(src, 64, max_rows=7, inline_positives=True, inline_negatives=2), str(run),
                     scheduler="sync", progress=False)
        outs.append(_shard_output(run, "04_shard"))
    (i1, f1, p1), (i2, f2, p2) = outs
    assert i1 == i2 and f1 == f2 and p1.sort_by("sample_id").equals(p2.sort_by("sample_id"))
    assert i1["metadata"]["with_positives"] > 0 and i1["metadata"]["with_negatives"] > 0
    rows = pa.concat_tables([pq.read_table(tmp_path / "run2/04_shard/shards" / s["path"])
                             for s in i1["shards"]]).to_pylist()
    by_id = {r["sample_id"]: r for r in rows}
    removed = read_run_table(tmp_path / "run2", "01_dedup_apply", "removals").column("sample_id").to_pylist()
    assert removed and not set(removed) & set(by_id)
    inlined = removed_partners = 0
    for r in rows:
        for pid, img in zip(r["positive_ids"] or [], r["positive_images"] or []):
            inlined += img is not None
            removed_partners += pid in removed and img is not None  # from the ingested samples
            if pid in by_id:  # a kept partner, maybe in another shard: its source PNG is inlined
                assert img is not None
        for nid, img in zip(r["negative_ids"] or [], r["negative_images"] or []):
            assert img is not None and nid in by_id
    assert inlined > removed_partners > 0


@pytest.mark.slow
def test_two_dask_workers_write_the_same_shards_as_sync(tmp_path, idx_dataset):
    outs = []
    for sched, workers in (("sync", None), ("local", 2)):
        run = tmp_path / sched
        run_pipeline(_idx_shard_config(idx_dataset, 37, max_rows=50), str(run), scheduler=sched, workers=workers,
                     progress=False)
        outs.append(_shard_output(run))
    assert outs[0][0] == outs[1][0] and outs[0][1] == outs[1][1] and outs[0][2].equals(outs[1][2])
