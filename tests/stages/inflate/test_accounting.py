"""Accounting stays balanced when dedup runs after inflation and removes generated rows."""

from __future__ import annotations

from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import idx_pipeline


def test_dedup_after_inflate_balances(tmp_path, squares_idx, tiny_pipeline_dir):
    img, lab, _, _ = squares_idx
    cfg = idx_pipeline(img, lab, partition_size=24)
    cfg["stages"] += [{"stage": "inflate.load", "path": str(tiny_pipeline_dir)},
                      {"stage": "inflate.generate", "n_images": 20, "images_per_partition": 10, "steps": 2,
                       "filter": False},
                      # every image within 64 bits of the first kept one: real and generated rows are removed
                      {"stage": "dedup.phash", "threshold": 64, "verify": False, "verify_geometry": False},
                      {"stage": "dedup.apply"}]
    s = run_pipeline(PipelineConfig(**cfg), run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    a = s["accounting"]
    removals = s["stages"]["04_dedup_apply"]["rows"]["removals"]
    assert a["balanced"] and a["ingested"] == 48 and a["kept"] + a["removed"] == 48
    assert removals > a["removed"]  # generated rows were removed too, and are not part of the balance
    assert a["kept"] + a["synthetic_added"] + removals == 48 + 20
