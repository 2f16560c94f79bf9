import collections
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from curate.imaging import decode_png
from curate.load import ShardDataset, ShardIntegrityError, ShardLoader
from curate.load.loader import consumed_per_worker

from tests.load._shards import make_shards


def ids(items):
    return [x["sample_id"] for x in items]


def test_round_trip_every_sample_once_with_its_pixels_and_columns(shards):
    path, samples, index = shards
    assert index["num_samples"] == 60 and index["num_shards"] == 4
    assert all(s["rows"] <= 17 for s in index["shards"])
    items = list(ShardDataset(path, shuffle_buffer=8))
    assert sorted(ids(items)) == sorted(samples.column("sample_id").to_pylist())
    by_id = {r["sample_id"]: r for r in samples.to_pylist()}
    for it in items[:20]:
        ref = by_id[it["sample_id"]]
        assert np.array_equal(it["image"][0].numpy(), decode_png(ref["image"]))
        assert it["label"] == ref["label"] and it["group_id"] == ref["group_id"]
        assert it["sample_weight"] == 1.0 and it["is_synthetic"] is False


def test_index_json_written_with_checksums_and_schema(shards):
    path, _, index = shards
    disk = json.loads((path / "index.json").read_text())
    assert disk["shards"] == index["shards"]
    names = [c["name"] for c in disk["schema"]]
    for col in ("image", "sample_id", "label", "group_id", "is_synthetic", "sample_weight", "positive_ids",
                "negative_ids"):
        assert col in names
    import hashlib
    for s in disk["shards"]:
        data = (path / s["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "s"
    make_shards(path)
    index = json.loads((path / "index.json").read_text())
    victim = path / index["shards"][1]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match=r"shard-00001.parquet.*corrupt or was modified"):
        list(ShardDataset(path, shuffle=False))


def test_missing_index_is_a_clear_error(tmp_path):
    from curate.errors import CurateError
    with pytest.raises(CurateError, match="no shard index"):
        ShardDataset(tmp_path)


def test_canonical_order_and_epoch_seeding(shards):
    path, _, _ = shards
    canon = ids(ShardDataset(path, shuffle=False))
    placed = [r for s in json.loads((path / "index.json").read_text())["shards"]
              for r in pa.parquet.read_table(path / s["path"], columns=["sample_id"]).column(0).to_pylist()]
    assert canon == placed
    e0 = ids(ShardDataset(path, seed=1, epoch=0))
    assert e0 == ids(ShardDataset(path, seed=1, epoch=0))
    assert e0 != ids(ShardDataset(path, seed=1, epoch=1)) and sorted(e0) == sorted(canon)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_rank_worker_split_has_no_duplicates_or_gaps(shards, world, workers):
    """Per-unit plans (what each DataLoader worker of each rank yields) cover the data exactly once."""
    path, samples, _ = shards
    seen = []
    for rank in range(world):
        ds = ShardDataset(path, rank=rank, world_size=world, seed=5)
        for w in range(max(1, workers)):
            seen.extend(ds._unit_order(w, max(1, workers)).tolist())
        assert len(ds) == sum(ds.worker_lengths(workers))
    assert sorted(seen) == list(range(samples.num_rows))
    # a rank's share does not depend on its worker count
    r0 = ShardDataset(path, rank=0, world_size=world, seed=5)
    assert sorted(r0._unit_rows(0, 1).tolist()) == sorted(
        np.concatenate([r0._unit_rows(w, 3) for w in range(3)]).tolist())


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("world,workers", [(2, 2), (3, 3), (1, 0)])
def test_real_dataloader_workers_cover_exactly_once(shards, world, workers):
    path, samples, _ = shards
    got = []
    for rank in range(world):
        loader = ShardLoader(ShardDataset(path, rank=rank, world_size=world), batch_size=4, num_workers=workers,
                             device="cpu")
        batches = list(loader)
        assert len(batches) == len(ShardLoader(ShardDataset(path, rank=rank, world_size=world), 4, workers, "cpu"))
        got.extend(s for b in batches for s in b["sample_id"])
    assert sorted(got) == sorted(samples.column("sample_id").to_pylist())


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core box
@pytest.mark.parametrize("workers,stop", [(0, 6), (2, 6), (2, 3), (3, 4), (3, 14)])
def test_mid_epoch_resume_is_exact(shards, workers, stop):
    """Stopping after any batch - also mid-round (3 of 2 workers' batches) and after a worker ran
    out (14 with 3 workers) - and resuming gives the uninterrupted epoch's batches in order."""
    path, _, _ = shards

    def loader():
        return ShardLoader(ShardDataset(path, seed=7, shuffle_buffer=16), batch_size=4, num_workers=workers,
                           device="cpu")

    full = [b["sample_id"] for b in loader()]
    first = loader()
    head = []
    for i, b in enumerate(first):
        head.append(b["sample_id"])
        if i == stop - 1:
            break
    state = first.state_dict()
    assert state["batches"] == stop
    second = loader()
    second.load_state_dict(json.loads(json.dumps(state)))
    tail = [b["sample_id"] for b in second]
    assert head + tail == full
    assert second.epoch == 1 and second.state_dict()["batches"] == 0


def test_dataset_state_dict_without_workers(shards):
    path, _, _ = shards
    full = ids(ShardDataset(path, seed=2))
    ds = ShardDataset(path, seed=2)
    it = iter(ds)
    head = [next(it)["sample_id"] for _ in range(13)]
    state = ds.state_dict()
    ds2 = ShardDataset(path, seed=2)
    ds2.load_state_dict(state)
    assert head + ids(ds2) == full


def test_resume_with_other_worker_count_is_refused(shards):
    from curate.errors import CurateError
    path, _, _ = shards
    a = ShardLoader(ShardDataset(path), batch_size=4, num_workers=2, device="cpu")
    b = ShardLoader(ShardDataset(path), batch_size=4, num_workers=1, device="cpu")
    with pytest.raises(CurateError, match="num_workers"):
        b.load_state_dict(a.state_dict())


def test_next_worker_continues_the_round_robin():
    from curate.load.loader import next_worker
    assert next_worker([8, 8], 4, 1) == 1 and next_worker([8, 8], 4, 2) == 0
    # batches per worker 3, 2, 1: served w0 w1 w2 w0 w1 w0
    assert next_worker([6, 4, 1], 2, 4) == 1
    assert next_worker([6, 4, 1], 2, 5) == 0  # worker 2 ran out after its one batch


def test_consumed_per_worker_follows_round_robin():
    # workers with 3, 2, 1 batches of size 2 (last ones partial): order w0 w1 w2 w0 w1 w0
    assert consumed_per_worker([6, 4, 1], 2, 4) == [4, 2, 1]
    assert consumed_per_worker([6, 4, 1], 2, 6) == [6, 4, 1]
    assert consumed_per_worker([5, 5], 2, 5, drop_last=True) == [4, 4]


def test_weighted_sampling_proportions(tmp_path):
    # every 2nd row synthetic; real rows get AdaInf replication 2.5 -> expected frequency ratio 2.5
    path = tmp_path / "w"
    samples, index, _ = make_shards(path, n=200, max_rows=64, rg=16, synthetic_every=2, real_replication=2.5)
    assert index["metadata"]["uniform_weights"] is False
    syn = dict(zip(samples.column("sample_id").to_pylist(), samples.column("is_synthetic").to_pylist()))
    counts = collections.Counter()
    for epoch in range(4):
        for it in ShardDataset(path, epoch=epoch, shuffle_buffer=32):
            counts["syn" if syn[it["sample_id"]] else "real"] += 1
            assert it["sample_weight"] == (1.0 if syn[it["sample_id"]] else 2.5)
    assert counts["syn"] == 4 * 100
    ratio = counts["real"] / counts["syn"]
    assert abs(ratio - 2.5) < 0.15
    # every real row appears 2 or 3 times per epoch, never 0
    per = collections.Counter(ids(ShardDataset(path)))
    assert {per[i] for i, s in syn.items() if not s} <= {2, 3}
    # weighting="none" ignores the weights
    assert len(list(ShardDataset(path, weighting="none"))) == 200


def test_pairs_and_triplets(tmp_path):
    path = tmp_path / "p"
    samples, _, _ = make_shards(tmp_path / "tmp", n=12)
    sid = samples.column("sample_id").to_pylist()
    pairs = pa.table({
        "anchor_id": [sid[0], sid[1]],
        "positive_id": [sid[5], None],
        "positive_kind": ["nn", None],
        "positive_score": pa.array([0.9, None], pa.float32()),
        "class_pair": pa.array([None, None], pa.string()),
        "negative_ids": [None, [sid[7], sid[8]]],
        "negative_scores": pa.array([None, [0.5, 0.4]], pa.list_(pa.float32())),
    })
    samples, _, _ = make_shards(path, n=12, pairs=pairs)
    items = {it["sample_id"]: it for it in ShardDataset(path, pairs="triplet", seed=3)}
    a0, a1 = items[sid[0]], items[sid[1]]
    assert a0["has_positive"] and a0["positive_id"] == sid[5]
    assert np.array_equal(a0["positive_image"].numpy(), items[sid[5]]["image"].numpy())
    assert not a0["has_negative"] and np.array_equal(a0["negative_image"].numpy(), a0["image"].numpy())
    assert a1["has_negative"] and a1["negative_id"] in (sid[7], sid[8])
    assert np.array_equal(a1["negative_image"].numpy(), items[a1["negative_id"]]["image"].numpy())
    assert not a1["has_positive"]
    loader = ShardLoader(ShardDataset(path, pairs="triplet"), batch_size=5, device="cpu")
    b = next(iter(loader))
    assert b["positive_image"].shape == b["image"].shape == b["negative_image"].shape


def test_collate_and_to_device_keep_ids_and_stack_tensors(shards):
    import torch
    from curate.load import collate, to_device
    path, _, _ = shards
    items = list(ShardDataset(path, shuffle=False))[:3]
    b = collate(items)
    assert b["image"].shape == (3, 1, 6, 6) and b["image"].dtype == torch.uint8
    assert b["label"].dtype == torch.int64 and isinstance(b["sample_id"], list)
    moved = to_device(b, "cpu")
    assert torch.equal(moved["image"], b["image"]) and moved["sample_id"] == b["sample_id"]


def test_pairs_need_mined_columns_message(shards):
    from curate.errors import CurateError
    path, _, _ = shards
    # the fixture shards have the columns (null): asking for pairs works and falls back to the anchor
    it = next(iter(ShardDataset(path, pairs="positive")))
    assert it["has_positive"] is False and torch_equal(it["positive_image"], it["image"])
    with pytest.raises(CurateError, match="pairs must be"):
        ShardDataset(path, pairs="quad")


def torch_equal(a, b):
    import torch
    return torch.equal(a, b)


def test_even_batches_gives_every_rank_the_same_count(tmp_path):
    path = tmp_path / "w"
    make_shards(path, n=50, max_rows=16, rg=4, synthetic_every=3, real_replication=1.7)
    counts = []
    for rank in range(3):
        loader = ShardLoader(ShardDataset(path, rank=rank, world_size=3), batch_size=1, device="cpu",
                             even_batches=True)
        expected = len(loader)  # this epoch's count (the next epoch replicates other rows)
        counts.append(sum(1 for _ in loader))
        assert counts[-1] == expected
    assert len(set(counts)) == 1
    uneven = [len(ShardLoader(ShardDataset(path, rank=r, world_size=3), 1, device="cpu")) for r in range(3)]
    assert min(uneven) == counts[0] and max(uneven) > min(uneven)


def test_shards_are_verified_once_in_the_main_process(shards, monkeypatch):
    import curate.load.dataset as dmod
    path, _, _ = shards
    calls = []
    monkeypatch.setattr(dmod, "verify_shard", lambda info, idx="": calls.append(info.path))
    ds = ShardDataset(path, rank=0, world_size=2)
    loader = ShardLoader(ds, batch_size=8, num_workers=1, device="cpu")
    list(loader)
    list(loader)
    assert len(calls) == len(set(calls)) >= 1  # never hashed twice, not even by the worker processes


def _pairs_table(sid):
    """Positives for anchors 0..4 (one missing from the shards), negatives for anchors 5..14."""
    n = 15
    pos = [sid[i + 20] if i < 4 else ("not-a-shard-row" if i == 4 else None) for i in range(n)]
    negs = [[sid[i + 1], sid[i + 2]] if i >= 5 else None for i in range(n)]
    return pa.table({
        "anchor_id": sid[:n],
        "positive_id": pos,
        "positive_kind": ["nn" if p else None for p in pos],
        "positive_score": pa.array([0.9 if p else None for p in pos], pa.float32()),
        "class_pair": pa.array([None] * n, pa.string()),
        "negative_ids": negs,
        "negative_scores": pa.array([[0.5, 0.4] if x else None for x in negs], pa.list_(pa.float32())),
    })


@pytest.mark.parametrize("pairs", [None, "positive", "triplet"])
def test_iter_batches_equal_collated_items(tmp_path, pairs):
    """The column-wise batches the loader's workers make equal collating the items one by one."""
    from curate.load.loader import collate

    samples, _, _ = make_shards(tmp_path / "tmp", n=45)
    table = _pairs_table(samples.column("sample_id").to_pylist()) if pairs else None
    make_shards(tmp_path / "s", n=45, synthetic_every=4, real_replication=2.5, pairs=table)
    ds = ShardDataset(tmp_path / "s", shuffle_buffer=8, seed=3, pairs=pairs)
    items = list(ds)
    if pairs:
        assert any(it["has_positive"] for it in items) and not all(it["has_positive"] for it in items)
    for drop_last in (False, True):
        batches = list(ds.iter_batches(8, drop_last=drop_last))
        want = [collate(items[a:a + 8]) for a in range(0, len(items), 8)
                if not drop_last or a + 8 <= len(items)]
        assert len(batches) == len(want)
        for b, w in zip(batches, want):
            assert b.keys() == w.keys()
            for k in b:
                if isinstance(w[k], torch.Tensor):
                    assert b[k].dtype == w[k].dtype and torch.equal(b[k], w[k]), k
                else:
                    assert b[k] == w[k], k


def test_shards_of_other_png_encoders_load_the_same(tmp_path):
    """Shards keeping the ingested (deflated) PNGs take the PNG-decoder path and give the same pixels."""
    from curate.samples import samples_from_arrays
    from curate.stages.shard import build_shard_table, write_shards

    rng = np.random.default_rng(0)
    arrs = [rng.integers(0, 255, (5 + i % 3, 6), dtype=np.uint8) for i in range(20)]  # mixed shapes
    samples = samples_from_arrays(arrs)
    out = {}
    for fmt in ("stored", "source"):
        write_shards(build_shard_table(samples, None, image_format=fmt), str(tmp_path / fmt), max_rows=7,
                     row_group_max_rows=4)
        out[fmt] = {it["sample_id"]: it["image"] for it in ShardDataset(tmp_path / fmt, shuffle=False)}
    assert out["stored"].keys() == out["source"].keys()
    for sid, img in out["stored"].items():
        assert torch.equal(img, out["source"][sid])


def test_persistent_workers_follow_epochs_and_resumes(shards):
    """One DataLoader, workers kept across epochs: the same batches as fresh workers every epoch."""
    path, _, _ = shards

    def epochs(loader, n):
        return [[b["sample_id"] for b in loader] for _ in range(n)]

    fresh = epochs(ShardLoader(ShardDataset(path, seed=7, shuffle_buffer=16), batch_size=4, num_workers=2,
                               device="cpu"), 3)
    kept = ShardLoader(ShardDataset(path, seed=7, shuffle_buffer=16), batch_size=4, num_workers=2, device="cpu",
                       persistent_workers=True)
    assert epochs(kept, 3) == fresh
    assert fresh[0] != fresh[1]  # epochs really differ
    # resume in the middle of epoch 1 on the same (persistent) loader
    kept.set_epoch(1)
    it = iter(kept)
    head = [next(it)["sample_id"] for _ in range(3)]
    state = kept.state_dict()
    del it
    kept.load_state_dict(state)
    assert head + [b["sample_id"] for b in kept] == fresh[1]
