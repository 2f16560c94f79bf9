"""outliers: FiftyOne uniqueness with known distances; removals balance through dedup.apply."""

from __future__ import annotations

import numpy as np
import pytest

from curate.config import PipelineConfig
from curate.runner import run_pipeline
from curate.stages.outliers import uniqueness
from tests.conftest import read_run_table


def _unit(deg):
    t = np.deg2rad(deg)
    return np.stack([np.cos(t), np.sin(t)], 1).astype(np.float32)


def test_uniqueness_is_weighted_distance_to_three_neighbours():
    x = _unit(np.array([0.0, 1, 2, 3, 90]))
    u = uniqueness(x, 3, np.array([0.6, 0.3, 0.1]))
    chord = lambda a: 2 * np.sin(np.deg2rad(a) / 2)  # noqa: E731 - euclidean distance between unit vectors
    # the point at 90 degrees: neighbours at 87, 88, 89 degrees
    assert u[4] == pytest.approx((0.6 * chord(87) + 0.3 * chord(88) + 0.1 * chord(89)) / 3, rel=1e-5)
    assert u[0] == pytest.approx((0.6 * chord(1) + 0.3 * chord(2) + 0.1 * chord(3)) / 3, rel=1e-4)
    assert np.argmax(u) == 4


def test_outlier_removed_as_filter_and_accounting_balances(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (16, 16), np.uint8)
    imgs = [np.clip(base.astype(int) + rng.integers(-4, 5, (16, 16)), 0, 255).astype(np.uint8) for _ in range(19)]
    imgs.append(255 - base)  # the odd one out
    np.savez(tmp_path / "x.npz", train_images=np.stack(imgs), train_labels=np.zeros(20, np.int64))
    cfg = PipelineConfig(name="o", stages=[
        {"stage": "ingest", "sources": [{"type": "npz", "path": str(tmp_path / "x.npz")}], "partition_size": 7},
        {"stage": "embed", "encoder": "random_cnn", "image_size": 16},
        {"stage": "outliers", "action": "remove"},
        {"stage": "dedup.apply"}])
    summary = run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    samples = read_run_table(tmp_path / "run", "00_ingest")
    odd = dict(zip(samples.column("source_index").to_pylist(), samples.column("sample_id").to_pylist()))[19]
    table = read_run_table(tmp_path / "run", "02_outliers")
    assert table.num_rows == 20
    flagged = [s for s, f in zip(table.column("sample_id").to_pylist(), table.column("outlier").to_pylist()) if f]
    assert flagged == [odd]
    assert max(table.column("uniqueness_norm").to_pylist()) == 1.0
    removals = read_run_table(tmp_path / "run", "03_dedup_apply", "removals").to_pylist()
    assert [(r["sample_id"], r["method"], r["representative_id"]) for r in removals] == [(odd, "outliers", None)]
    acc = summary["accounting"]
    assert (acc["ingested"], acc["kept"], acc["removed"], acc["balanced"]) == (20, 19, 1, True)
