"""dedup.apply: kept set + removal log from every decision table; accounting balances."""

from __future__ import annotations

import numpy as np

from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.dedup._helpers import near_duplicate_images


def _pipeline(tmp_path, corrupt=(), methods=None):
    images, _ = near_duplicate_images(24, 0)
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(24) % 6)
    apply = {"stage": "dedup.apply"} if methods is None else {"stage": "dedup.apply", "methods": methods}
    return PipelineConfig(name="t", stages=[
        {"stage": "test.arrays", "path": str(tmp_path / "x.npz"), "partition_size": 8, "corrupt": list(corrupt)},
        {"stage": "embed", "encoder": "random_cnn", "image_size": 16},
        {"stage": "test.plant_decisions", "name": "first", "method": "exact", "remove_labels": [1, 2]},
        {"stage": "test.plant_decisions", "name": "second", "method": "phash", "remove_labels": [2, 3]},
        apply])


def test_first_method_wins_and_log_explains(tmp_path):
    summary = run_pipeline(_pipeline(tmp_path), run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    samples = read_run_table(tmp_path / "run", "00_test_arrays")
    label = dict(zip(samples.column("sample_id").to_pylist(), samples.column("label").to_pylist()))
    kept = read_run_table(tmp_path / "run", "04_dedup_apply")
    removals = read_run_table(tmp_path / "run", "04_dedup_apply", "removals")
    assert sorted({label[s] for s in kept.column("sample_id").to_pylist()}) == [0, 4, 5]
    assert kept.num_rows == 12 and removals.num_rows == 12
    by_label = {}
    for row in removals.to_pylist():
        by_label.setdefault(label[row["sample_id"]], set()).add(row["method"])
        assert label[row["representative_id"]] == 0 and row["score"] == 0.5 and row["reason"]
    assert by_label == {1: {"exact"}, 2: {"exact"}, 3: {"phash"}}  # label 2: exact came first
    assert kept.schema.equals(samples.schema)
    acc = summary["accounting"]
    assert (acc["ingested"], acc["kept"], acc["removed"], acc["quarantined"], acc["balanced"]) == (24, 12, 12, 0, True)
    c = summary["stages"]["04_dedup_apply"]["counters"]
    assert c["removed_by_02_first"] == 8 and c["removed_by_03_second"] == 4


def test_quarantined_samples_are_neither_kept_nor_removed(tmp_path):
    # row 1 (label 1: would be removed) and row 4 (label 4: would be kept) cannot be decoded by embed
    summary = run_pipeline(_pipeline(tmp_path, corrupt=[1, 4]), run_dir=str(tmp_path / "run"), scheduler="sync",
                           progress=False)
    samples = read_run_table(tmp_path / "run", "00_test_arrays")
    bad = {samples.column("sample_id")[i].as_py() for i in (1, 4)}
    kept = set(read_run_table(tmp_path / "run", "04_dedup_apply").column("sample_id").to_pylist())
    removed = set(read_run_table(tmp_path / "run", "04_dedup_apply", "removals").column("sample_id").to_pylist())
    assert not bad & kept and not bad & removed
    acc = summary["accounting"]
    assert (acc["ingested"], acc["kept"], acc["removed"], acc["quarantined"], acc["balanced"]) == (24, 11, 11, 2, True)


def test_methods_filter(tmp_path):
    summary = run_pipeline(_pipeline(tmp_path, methods=["phash"]), run_dir=str(tmp_path / "run"), scheduler="sync",
                           progress=False)
    removals = read_run_table(tmp_path / "run", "04_dedup_apply", "removals")
    assert set(removals.column("method").to_pylist()) == {"phash"} and removals.num_rows == 8
    assert summary["accounting"]["balanced"]
