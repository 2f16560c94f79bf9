import numpy as np
import pyarrow.compute as pc
import pytest

import tests.stages.mine._fixture  # noqa: F401 - registers test.planted
from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.mine._fixture import decision, make_partitions


def volume(tmp_path):
    """vol v1: slices 0..4 (label 0), vol v2: slices 0..2 (label 1), X (label 2) with removed copy Xr."""
    rng = np.random.default_rng(0)
    n = 10
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[9] = x[8] + 0.01  # Xr ~ X
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    groups = ["v1"] * 5 + ["v2"] * 3 + [None, None]
    slices = [0, 1, 2, 3, 4, 0, 1, 2, None, None]
    labels = [0] * 5 + [1] * 3 + [2, 2]
    path = str(tmp_path / "vol.pkl")
    ids = make_partitions(x, path + ".tmp", group_id=groups, slice_index=slices, label=labels)
    make_partitions(x, path, decisions=[decision(ids[9], ids[8], 0.99, "phash")], group_id=groups,
                    slice_index=slices, label=labels)
    return path, ids, x


def run(tmp_path, path, **params):
    cfg = PipelineConfig(name="t", stages=[
        {"stage": "test.planted", "path": path}, {"stage": "dedup.apply"},
        {"stage": "mine.positives", **params}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False, force=True)
    return read_run_table(tmp_path / "run", "02_mine_positives")


def of_kind(pairs, kind):
    return pairs.filter(pc.equal(pairs.column("positive_kind"), kind)).to_pylist()


def test_every_kind_on_a_tiny_volume(tmp_path):
    path, ids, x = volume(tmp_path)
    pos = {i: k for k, i in enumerate(ids)}
    pairs = run(tmp_path, path, kinds=["near_duplicate", "nn", "adjacent_slice", "same_label", "cross_class"],
                class_pairs=[[0, 1]])
    assert pairs.column("negative_ids").null_count == pairs.num_rows
    # adjacent slices: exactly the |d| = 1 neighbours inside each volume, both directions
    adj = {(pos[r["anchor_id"]], pos[r["positive_id"]]) for r in of_kind(pairs, "adjacent_slice")}
    want = {(i, i + 1) for i in range(4)} | {(i + 1, i) for i in range(4)} | {(5, 6), (6, 5), (6, 7), (7, 6)}
    assert adj == want
    for r in of_kind(pairs, "adjacent_slice"):
        a, b = pos[r["anchor_id"]], pos[r["positive_id"]]
        assert r["positive_score"] == pytest.approx(float(x[a] @ x[b]), abs=1e-5)
    # near duplicate: X gets its removed copy, with the dedup score
    nd = of_kind(pairs, "near_duplicate")
    assert [(pos[r["anchor_id"]], pos[r["positive_id"]], round(r["positive_score"], 2)) for r in nd] == [(8, 9, 0.99)]
    # nn: one per kept anchor, the true nearest kept neighbour
    nn = of_kind(pairs, "nn")
    kept = list(range(9))
    assert sorted(pos[r["anchor_id"]] for r in nn) == kept
    for r in nn:
        a = pos[r["anchor_id"]]
        sims = {j: float(x[a] @ x[j]) for j in kept if j != a}
        assert pos[r["positive_id"]] == max(sims, key=sims.get)
    # same label: a different sample of the same label; X (label 2) has no kept partner
    sl = of_kind(pairs, "same_label")
    lab = [0] * 5 + [1] * 3 + [2]
    assert sorted(pos[r["anchor_id"]] for r in sl) == list(range(8))
    assert all(lab[pos[r["anchor_id"]]] == lab[pos[r["positive_id"]]] and r["anchor_id"] != r["positive_id"] for r in sl)
    # cross class 0-1 both ways, with its class-pair id
    cc = of_kind(pairs, "cross_class")
    assert len(cc) == 8 and all(r["class_pair"] == "0-1" for r in cc)
    assert all({lab[pos[r["anchor_id"]]], lab[pos[r["positive_id"]]]} == {0, 1} for r in cc)


def test_slice_k_and_missing_data_is_skipped_and_counted(tmp_path):
    path, ids, _ = volume(tmp_path)
    pairs = run(tmp_path, path, kinds=["adjacent_slice"], slice_k=2)
    assert len(of_kind(pairs, "adjacent_slice")) == 2 * (4 + 3) + 2 * (2 + 1)
    # no labels / no dedup: kinds are skipped and counted, not an error
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    p2 = str(tmp_path / "nolab.pkl")
    make_partitions(x, p2)
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.planted", "path": p2},
                                           {"stage": "mine.positives", "kinds": ["same_label", "nn"]}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run3"), scheduler="sync", progress=False)
    pairs = read_run_table(tmp_path / "run3", "01_mine_positives")
    assert set(pairs.column("positive_kind").to_pylist()) == {"nn"}
    import json
    import os
    d = tmp_path / "run3" / "01_mine_positives"
    st = {}
    for f in os.listdir(d):
        if f.endswith(".json"):
            st.update(json.load(open(d / f))["stats"])
    assert st.get("skipped_same_label_no_labels") == 1


def test_positives_then_negatives_then_shard_round_trip(tmp_path):
    """pairs flow into the shards; the removed near-duplicate partner is inlined and loads as a positive."""
    from curate.load import ShardDataset
    from curate.imaging import decode_png
    path, ids, _ = volume(tmp_path)
    cfg = PipelineConfig(name="t", stages=[
        {"stage": "test.planted", "path": path}, {"stage": "dedup.apply"},
        {"stage": "mine.positives", "kinds": ["near_duplicate"]},
        {"stage": "mine.negatives", "num_negatives": 2, "guard_label": False},
        {"stage": "shard", "max_rows": 4}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    shard_dir = tmp_path / "run" / "04_shard"
    placements = read_run_table(tmp_path / "run", "04_shard")
    assert sorted(placements.column("sample_id").to_pylist()) == sorted(ids[:9])
    ds = ShardDataset(tmp_path / "run", pairs="triplet")
    items = {it["sample_id"]: it for it in ds}
    assert set(items) == set(ids[:9]) and ds.index_path.startswith(str(shard_dir))
    x = items[ids[8]]
    assert x["has_positive"] and x["positive_id"] == ids[9]
    samples = read_run_table(tmp_path / "run", "00_test_planted")
    xr_png = samples.filter(pc.equal(samples.column("sample_id"), ids[9])).column("image")[0].as_py()
    assert np.array_equal(x["positive_image"][0].numpy(), decode_png(xr_png))
    assert all(it["has_negative"] for it in items.values())
