"""decontaminate: each route finds its planted leak; eval sets never reach the kept set; accounting balances."""

from __future__ import annotations

import numpy as np
from PIL import Image

from curate import imaging
from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table


def _dicom(path, patient, study, series, arr=None):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient, study, series
    if arr is not None:
        ds.PixelData = arr.astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(path)
    return ds.pixel_array


def test_routes_exact_phash_patient_study(tmp_path):
    train, test_dcm, test_png = tmp_path / "train", tmp_path / "test_dcm", tmp_path / "test_png"
    for d in (train, test_dcm, test_png):
        d.mkdir()
    rng = np.random.default_rng(0)
    base = _dicom(train / "a.dcm", "PAT-A", "1.1", "1.1.1")
    _dicom(train / "b.dcm", "PAT-B", "2.1", "2.1.1", np.roll(base, 20, axis=1))
    _dicom(train / "c.dcm", "PAT-C", "3.1", "3.1.1", base[::-1].copy())
    _dicom(train / "d.dcm", "PAT-D", "4.1", "4.1.1", base.T.copy())  # clean
    _dicom(train / "e.dcm", "PAT-E", "5.1", "5.1.1", np.roll(base, 40, axis=0))
    # test set: patient A again (other study, very different pixels), patient E's study (other pixels)
    _dicom(test_dcm / "a2.dcm", "PAT-A", "1.9", "1.9.1", (base.max() - base)[:, ::-1].copy())
    _dicom(test_dcm / "e2.dcm", "PAT-X", "5.1", "5.1.9", np.roll(base, 31, axis=1)[::-1].copy())
    cfg0 = {"stage": "ingest", "sources": [{"type": "dicom", "path": str(train), "redact_paths": False}]}
    run_pipeline(PipelineConfig(name="i", stages=[cfg0]), run_dir=str(tmp_path / "r0"), scheduler="sync",
                 progress=False)
    s0 = read_run_table(tmp_path / "r0", "00_ingest")
    png = {u.rsplit("/", 1)[-1]: imaging.decode_png(b) for u, b in zip(s0.column("source_uri").to_pylist(),
                                                                     s0.column("image").to_pylist())}
    Image.fromarray(png["b.dcm"]).save(test_png / "b_copy.png")  # exact
    c = png["c.dcm"].astype(int)
    c[:4, :4] = np.clip(c[:4, :4] + 3, 0, 255)
    Image.fromarray(c.astype(np.uint8)).save(test_png / "c_near.png")  # near copy: pHash
    cfg = PipelineConfig(name="d", stages=[
        cfg0,
        {"stage": "decontaminate", "embedding_threshold": None, "eval_sets": [
            {"name": "test_png", "sources": [{"type": "folder", "path": str(test_png), "labels": "none"}]},
            {"name": "test_dcm", "sources": [{"type": "dicom", "path": str(test_dcm)}]}]},
        {"stage": "dedup.apply"},
        {"stage": "shard"}])
    summary = run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    samples = read_run_table(tmp_path / "run", "00_ingest")
    name = dict(zip(samples.column("sample_id").to_pylist(),
                    [u.rsplit("/", 1)[-1] for u in samples.column("source_uri").to_pylist()]))
    con = read_run_table(tmp_path / "run", "01_decontaminate", "contamination").to_pylist()
    found = {(name[r["sample_id"]], r["eval_set"], r["route"]) for r in con}
    assert ("b.dcm", "test_png", "exact") in found and ("b.dcm", "test_png", "phash") in found
    assert ("c.dcm", "test_png", "phash") in found and not any(f[0] == "c.dcm" and f[2] == "exact" for f in found)
    assert ("a.dcm", "test_dcm", "patient") in found and ("e.dcm", "test_dcm", "study") in found
    assert not any(f[0] == "d.dcm" for f in found)
    assert not any(f[0] == "a.dcm" and f[2] in ("exact", "phash") for f in found)  # its images differ
    removals = read_run_table(tmp_path / "run", "02_dedup_apply", "removals").to_pylist()
    got = {name[r["sample_id"]]: r for r in removals}
    assert sorted(got) == ["a.dcm", "b.dcm", "c.dcm", "e.dcm"]
    assert got["b.dcm"]["method"] == "decontaminate:test_png" and "by exact" in got["b.dcm"]["reason"]
    assert got["a.dcm"]["method"] == "decontaminate:test_dcm" and got["a.dcm"]["representative_id"] is None
    assert "PAT-" not in repr(con) + repr(removals)  # identifiers are compared hashed, never written
    stats = summary["stages"]["01_decontaminate"]["counters"]
    assert stats["test_dcm:patient"] == 1 and stats["test_png:exact"] == 1 and stats["test_dcm:study"] == 1
    acc = summary["accounting"]
    assert (acc["ingested"], acc["kept"], acc["removed"], acc["balanced"]) == (5, 1, 4, True)


def test_embedding_route_uses_the_runs_encoder(tmp_path):
    rng = np.random.default_rng(1)
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir(), test.mkdir()
    imgs = rng.integers(0, 256, (6, 24, 24), np.uint8)
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(train / f"t{i}.png")
    shifted = np.clip(imgs[2].astype(int) + 6, 0, 255).astype(np.uint8)  # same content, other pixels
    Image.fromarray(shifted).save(test / "x.png")
    cfg = PipelineConfig(name="e", stages=[
        {"stage": "ingest", "sources": [{"type": "folder", "path": str(train), "labels": "none"}]},
        {"stage": "embed", "encoder": "pixels", "image_size": 24, "dim": 4},
        {"stage": "decontaminate", "exact": False, "phash_threshold": None, "embedding_threshold": 0.99,
         "eval_sets": [{"name": "t", "sources": [{"type": "folder", "path": str(test), "labels": "none"}]}]},
        {"stage": "dedup.apply"}])
    summary = run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    samples = read_run_table(tmp_path / "run", "00_ingest")
    name = dict(zip(samples.column("sample_id").to_pylist(),
                    [u.rsplit("/", 1)[-1] for u in samples.column("source_uri").to_pylist()]))
    con = read_run_table(tmp_path / "run", "02_decontaminate", "contamination").to_pylist()
    assert [(name[r["sample_id"]], r["route"]) for r in con] == [("t2.png", "embedding")]
    assert summary["accounting"]["removed"] == 1 and summary["accounting"]["balanced"]
