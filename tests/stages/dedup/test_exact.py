"""dedup.exact: identical pixels / identical source files across partitions -> one kept."""

import pytest

from curate.config import PipelineConfig
from curate.errors import ConfigError
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.dedup._hash_fixture import ct_slice, jpeg95, rows_for, smooth_field, write_partitions


def run(tmp_path, parts, **params):
    path = write_partitions(str(tmp_path / "parts"), parts)
    cfg = PipelineConfig(name="t", stages=[{"stage": "test.tables", "path": path},
                                           {"stage": "dedup.exact", **params}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    return read_run_table(tmp_path / "run", "01_dedup_exact").to_pylist()


def test_identical_pixels_and_files_across_partitions(tmp_path):
    ct, a, b = ct_slice(), smooth_field(1), smooth_field(2)
    p0 = rows_for([ct, a, jpeg95(ct)], uri="memory://p0")
    p1 = rows_for([b, ct, a], uri="memory://p1")  # ct and a again, from other files
    # the same source file (bytes) twice, different rows of the run: same source_hash + index
    p1[0]["source_hash"] = p0[1]["source_hash"] = "sha256:x"
    p1[0]["source_index"] = p0[1]["source_index"] = 0
    dec = {r["sample_id"]: r for r in run(tmp_path, {"p0": p0, "p1": p1})}
    assert len(dec) == 6
    ct0, a0, jpg, b1, ct1, a1 = (r["sample_id"] for r in p0 + p1)
    assert dec[ct0]["keep"] and dec[a0]["keep"] and dec[jpg]["keep"]  # JPEG copy is not pixel-identical
    assert not dec[ct1]["keep"] and dec[ct1]["representative_id"] == ct0 and dec[ct1]["score"] == 1.0
    assert dec[ct1]["reason"] == "identical pixels to representative"
    assert not dec[a1]["keep"] and dec[a1]["representative_id"] == a0
    assert not dec[b1]["keep"] and dec[b1]["representative_id"] == a0
    assert dec[b1]["reason"] == "identical source file to representative"
    assert dec[a0]["cluster_id"] == dec[a1]["cluster_id"] == dec[b1]["cluster_id"] == f"exact:{a0}"
    assert dec[a0]["reason"] == "representative of 2 identical copies"
    assert dec[jpg]["reason"] == "unique" and dec[jpg]["cluster_id"] is None
    assert {r["method"] for r in dec.values()} == {"exact"}


def test_pixels_only_ignores_source_files(tmp_path):
    a, b = smooth_field(1), smooth_field(2)
    rows = rows_for([a, b])
    rows[0]["source_hash"] = rows[1]["source_hash"] = "same"
    dec = run(tmp_path, {"p0": rows}, source_bytes=False)
    assert all(r["keep"] for r in dec)


def test_rejects_config_that_finds_nothing():
    with pytest.raises(ConfigError, match="pixels"):
        PipelineConfig(name="t", stages=[{"stage": "dedup.exact", "pixels": False, "source_bytes": False}]).specs()
