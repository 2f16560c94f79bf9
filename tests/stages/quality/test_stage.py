"""quality stage in a pipeline: flags table, filter removals through dedup.apply, balanced accounting."""

from __future__ import annotations

import numpy as np
from PIL import Image

from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table
from tests.stages.quality._images import planted


def _folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name, a in planted().items():
        Image.fromarray(a).save(d / f"{name}.png")
    return d


def test_flags_removals_and_accounting(tmp_path):
    d = _folder(tmp_path)
    cfg = PipelineConfig(name="q", stages=[
        {"stage": "ingest", "sources": [{"type": "folder", "path": str(d), "labels": "none"}], "partition_size": 4},
        {"stage": "quality", "dark": {"action": "remove"}, "light": {"action": "remove"}},
        {"stage": "dedup.exact"},
        {"stage": "dedup.apply"}])
    summary = run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    samples = read_run_table(tmp_path / "run", "00_ingest")
    name = {s: u.rsplit("/", 1)[-1][:-4] for s, u in zip(samples.column("sample_id").to_pylist(),
                                                           samples.column("source_uri").to_pylist())}
    q = read_run_table(tmp_path / "run", "01_quality")
    flagged = {c: sorted(name[s] for s, f in zip(q.column("sample_id").to_pylist(), q.column(c).to_pylist()) if f)
               for c in ("dark", "light", "blurry", "odd_aspect_ratio", "odd_size", "padding_only")}
    # dark includes the two black frames; sizes: seven 64 x 64, one 16 x 64, one 512 x 512 (IQR 0)
    assert flagged == {"dark": ["dark", "near_blank", "padding"], "light": ["light"], "blurry": ["blurry"],
                       "odd_aspect_ratio": ["strip"], "odd_size": ["blurry", "strip"], "padding_only": ["padding"]}
    assert q.column("burned_in_annotation").null_count == q.num_rows  # no DICOM here
    removals = read_run_table(tmp_path / "run", "03_dedup_apply", "removals")
    rows = {name[r["sample_id"]]: r for r in removals.to_pylist()}
    assert sorted(rows) == ["dark", "light", "near_blank", "padding"]
    assert all(r["representative_id"] is None and r["method"].startswith("quality:") for r in rows.values())
    assert rows["dark"]["method"] == "quality:dark" and "< threshold 0.32" in rows["dark"]["reason"]
    acc = summary["accounting"]
    assert (acc["ingested"], acc["kept"], acc["removed"], acc["balanced"]) == (9, 5, 4, True)
    assert acc["representatives_not_kept"] == acc["groups_emptied"] == 0


def test_filtered_representative_does_not_leave_a_dangling_duplicate(tmp_path):
    d = _folder(tmp_path)
    Image.fromarray(planted()["clean_cat"]).save(d / "zz_cat_copy.png")  # exact copy: removed for clean_cat
    Image.fromarray(planted()["dark"]).save(d / "zz_dark_copy.png")  # exact copy of a filtered sample
    cfg = PipelineConfig(name="q", stages=[
        {"stage": "ingest", "sources": [{"type": "folder", "path": str(d), "labels": "none"}]},
        {"stage": "dedup.exact"},
        {"stage": "quality", "dark": {"action": "remove"}},
        {"stage": "dedup.apply"}])
    summary = run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    samples = read_run_table(tmp_path / "run", "00_ingest")
    name = {s: u.rsplit("/", 1)[-1][:-4] for s, u in zip(samples.column("sample_id").to_pylist(),
                                                           samples.column("source_uri").to_pylist())}
    removals = read_run_table(tmp_path / "run", "03_dedup_apply", "removals").to_pylist()
    got = {name[r["sample_id"]]: (r["method"], r["representative_id"] and name[r["representative_id"]])
           for r in removals}
    assert got == {"zz_cat_copy": ("exact", "clean_cat"), "dark": ("quality:dark", None),
                   "zz_dark_copy": ("quality:dark", None), "near_blank": ("quality:dark", None),
                   "padding": ("quality:dark", None)}
    acc = summary["accounting"]
    assert acc["balanced"] and acc["removed"] == 5 and acc["representatives_not_kept"] == 0


def test_burned_in_annotation_read_from_dicom_header(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    d = tmp_path / "dcm"
    d.mkdir()
    for k, flag in enumerate(["YES", "NO", None]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = f"1.2.3.{k}"
        if flag is not None:
            ds.BurnedInAnnotation = flag
        ds.save_as(d / f"s{k}.dcm")
    cfg = PipelineConfig(name="q", stages=[
        {"stage": "ingest", "sources": [{"type": "dicom", "path": str(d)}]},
        {"stage": "quality", "burned_in_annotation": {"action": "remove"}},
        {"stage": "dedup.apply"}])
    summary = run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    samples = read_run_table(tmp_path / "run", "00_ingest")
    from curate import secrets

    uris = samples.column("source_uri").to_pylist()
    assert all(u.startswith("redacted:") for u in uris)  # DICOM paths are redacted; quality reads them back
    name = dict(zip(samples.column("sample_id").to_pylist(), secrets.source_paths(str(tmp_path / "run"), uris)))
    q = read_run_table(tmp_path / "run", "01_quality")
    got = {name[s].rsplit("/", 1)[-1]: f for s, f in zip(q.column("sample_id").to_pylist(),
                                                         q.column("burned_in_annotation").to_pylist())}
    assert got == {"s0.dcm": True, "s1.dcm": False, "s2.dcm": False}
    removals = read_run_table(tmp_path / "run", "02_dedup_apply", "removals")
    assert [name[s].rsplit("/", 1)[-1] for s in removals.column("sample_id").to_pylist()] == ["s0.dcm"]
    assert summary["accounting"]["balanced"]


def test_quality_table_independent_of_partition_size(tmp_path):
    d = _folder(tmp_path)
    out = []
    for size in (2, 100):
        cfg = PipelineConfig(name="q", stages=[
            {"stage": "ingest", "sources": [{"type": "folder", "path": str(d), "labels": "none"}],
             "partition_size": size},
            {"stage": "quality"}])
        run_pipeline(cfg, run_dir=str(tmp_path / f"run{size}"), scheduler="sync", progress=False)
        q = read_run_table(tmp_path / f"run{size}", "01_quality")
        out.append(q.sort_by("sample_id"))
    assert out[0].equals(out[1])
