"""Ingest on real files of every supported source, and every kind of bad input."""

from __future__ import annotations

import io
import os
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate import imaging
from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import read_run_table


def ingest(tmp_path, sources, **params):
    cfg = PipelineConfig(name="t", stages=[{"stage": "ingest", "sources": sources, **params}])
    run_dir = tmp_path / "run"
    summary = run_pipeline(cfg, str(run_dir), scheduler="sync", progress=False)
    samples = read_run_table(run_dir, "00_ingest")
    quarantine = read_run_table(run_dir, "00_ingest", "quarantine")
    assert summary["accounting"]["balanced"]
    return samples, quarantine, summary


def decoded(table, i):
    return imaging.decode_png(table.column("image")[i].as_py())


def test_folder_formats_labels_and_text(tmp_path):
    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(gray).save(root / "cat" / "a.png")
    (root / "cat" / "a.txt").write_text("a grey gradient")
    Image.fromarray((gray.astype(np.uint16) * 1000)).save(root / "cat" / "b16.png")  # 16-bit
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba, "RGBA").save(root / "dog" / "c.png")
    Image.fromarray(np.full((5, 7, 3), 90, np.uint8)).save(root / "dog" / "d.jpg", quality=95)
    Image.fromarray(gray).save(root / "dog" / "e.bmp")
    frames = [Image.fromarray(gray), Image.fromarray(255 - gray)]
    frames[0].save(root / "dog" / "f.tiff", save_all=True, append_images=frames[1:])
    samples, quarantine, summary = ingest(tmp_path, [{"type": "folder", "path": str(root)}])
    rows = {(os.path.basename(r["source_uri"]), r["source_index"]): r for r in samples.to_pylist()}
    assert len(rows) == 7 and quarantine.num_rows == 0
    assert rows[("a.png", 0)]["label_name"] == "cat" and rows[("a.png", 0)]["label"] == 0
    assert rows[("c.png", 0)]["label"] == 1
    assert rows[("a.png", 0)]["text"] == "a grey gradient"
    assert rows[("b16.png", 0)]["channels"] == 1
    b16 = imaging.decode_png(rows[("b16.png", 0)]["image"])
    assert b16.dtype == np.uint8 and b16.min() == 0 and b16.max() == 255  # 16-bit scaled to 8-bit
    c = imaging.decode_png(rows[("c.png", 0)]["image"])
    assert c.shape == (6, 6, 3) and c[0, 0, 0] == 100  # alpha composited over black
    assert rows[("d.jpg", 0)]["channels"] == 3 and (rows[("d.jpg", 0)]["height"], rows[("d.jpg", 0)]["width"]) == (5, 7)
    np.testing.assert_array_equal(imaging.decode_png(rows[("e.bmp", 0)]["image"]), gray)
    np.testing.assert_array_equal(imaging.decode_png(rows[("f.tiff", 1)]["image"]), 255 - gray)
    # same pixels from PNG and BMP -> same pixel hash, different sample ids
    assert rows[("a.png", 0)]["pixel_hash"] == rows[("e.bmp", 0)]["pixel_hash"]
    assert rows[("a.png", 0)]["sample_id"] != rows[("e.bmp", 0)]["sample_id"]
    assert len(set(samples.column("sample_id").to_pylist())) == 7


def test_npz_medmnist_layout(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "pneumoniamnist.npz"
    np.savez(path, train_images=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8),
             train_labels=np.arange(10).reshape(10, 1) % 2,
             val_images=rng.integers(0, 255, (4, 28, 28, 3), dtype=np.uint8), val_labels=np.zeros((4, 1), int))
    samples, quarantine, _ = ingest(tmp_path, [{"type": "npz", "path": str(path)}], partition_size=3)
    assert samples.num_rows == 14 and quarantine.num_rows == 0
    by_uri = samples.group_by("source_uri").aggregate([("sample_id", "count")]).to_pylist()
    assert {r["source_uri"].split("#")[1]: r["sample_id_count"] for r in by_uri} == {"train": 10, "val": 4}
    train = samples.filter(pa.compute.ends_with(samples.column("source_uri"), "#train")).sort_by("source_index")
    assert train.column("label").to_pylist() == [i % 2 for i in range(10)]


def test_idx_fashion_mnist_layout(tmp_path, idx_dataset):
    img, lab, images, labels = idx_dataset
    samples, _, _ = ingest(tmp_path, [{"type": "idx", "images": img, "labels": lab}], partition_size=64)
    assert samples.num_rows == 300
    samples = samples.sort_by("source_index")
    assert samples.column("label").to_pylist() == labels.tolist()
    np.testing.assert_array_equal(decoded(samples, 123), images[123])


def test_parquet_with_image_bytes(tmp_path):
    imgs = [np.full((4, 4), v, np.uint8) for v in (10, 20, 30)]
    blobs = []
    for a in imgs:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    blobs.append(b"not an image")
    table = pa.table({"img": blobs, "y": [0, 1, 2, 3], "caption": ["a", "b", "c", "d"], "patient": ["p1", "p1", "p2", "p2"]})
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    samples, quarantine, _ = ingest(tmp_path, [{"type": "parquet", "path": str(path), "image_column": "img",
                                                "label_column": "y", "text_column": "caption", "group_column": "patient"}])
    samples = samples.sort_by("source_index")
    assert samples.column("label").to_pylist() == [0, 1, 2]
    assert samples.column("text").to_pylist() == ["a", "b", "c"]
    g = samples.column("group_id").to_pylist()
    assert g[0] == g[1] != g[2] and "p1" not in g[0]
    assert quarantine.column("reason").to_pylist() == ["not_an_image"]


def _ct_series(tmp_path):
    """Three CT slices from pydicom's CT_small, written shuffled with distinct positions."""
    import pydicom
    from pydicom.data import get_testdata_file

    d = tmp_path / "series"
    d.mkdir()
    for name, z, inst, offset in [("x1.dcm", 20.0, 3, 200), ("x2.dcm", 0.0, 1, 0), ("x3.dcm", 10.0, 2, 100)]:
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = inst
        arr = ds.pixel_array.astype(np.int16)
        arr[:8, :8] = offset  # mark each slice
        ds.PixelData = arr.tobytes()
        ds.save_as(d / name)
    return d


def test_dicom_series_order_rescale_window_and_group(tmp_path):
    d = _ct_series(tmp_path)
    samples, quarantine, _ = ingest(tmp_path, [{"type": "dicom", "path": str(d), "window": [0, 2000],
                                                "redact_paths": False}])
    assert quarantine.num_rows == 0 and samples.num_rows == 3
    rows = sorted(samples.to_pylist(), key=lambda r: r["slice_index"])
    assert [os.path.basename(r["source_uri"]) for r in rows] == ["x2.dcm", "x3.dcm", "x1.dcm"]
    assert len({r["group_id"] for r in rows}) == 1
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert ds.PatientID not in rows[0]["group_id"]
    # rescale (slope 1, intercept -1024 in CT_small) then window [0, 2000]: raw 100 -> HU -924 -> 0
    marks = [int(imaging.decode_png(r["image"])[0, 0]) for r in rows]
    hu = [0 * float(ds.RescaleSlope) + float(ds.RescaleIntercept), 100 + float(ds.RescaleIntercept), 200 + float(ds.RescaleIntercept)]
    expected = [int(np.rint(np.clip((h + 1000) / 2000, 0, 1) * 255)) for h in hu]
    assert marks == expected


def test_dicom_multiframe_monochrome1_and_unreadable(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    d = tmp_path / "dcm"
    d.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shutil.copyfile(get_testdata_file("emri_small.dcm"), d / "multi.dcm")  # 10 frames
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(d / "mono1.dcm")
    ds2 = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds2.save_as(d / "mono2.dcm")
    raw = (d / "mono2.dcm").read_bytes()
    (d / "broken.dcm").write_bytes(raw[: len(raw) - 3000])  # truncated inside the pixel data
    samples, quarantine, _ = ingest(tmp_path, [{"type": "dicom", "path": str(d), "window": "minmax",
                                                "redact_paths": False}])
    multi = samples.filter(pa.compute.ends_with(samples.column("source_uri"), "multi.dcm"))
    assert multi.num_rows == 10 and sorted(multi.column("slice_index").to_pylist()) == list(range(10))
    by = {os.path.basename(r["source_uri"]): r for r in samples.to_pylist()}
    np.testing.assert_array_equal(imaging.decode_png(by["mono1.dcm"]["image"]),
                                  255 - imaging.decode_png(by["mono2.dcm"]["image"]))
    assert quarantine.column("reason").to_pylist()[0] in {"unreadable_dicom", "unreadable_pixels"}
    assert "broken.dcm" in quarantine.column("source_uri")[0].as_py()


def test_nifti_slices_and_empty_slices(tmp_path):
    import nibabel as nib

    vol = np.zeros((6, 5, 4), np.float32)
    vol[1:5, 1:4, 1] = 100.0
    vol[2:4, 2, 2] = 50.0
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    samples, quarantine, summary = ingest(tmp_path, [{"type": "nifti", "path": str(tmp_path / "v.nii.gz"), "axis": 2}])
    assert sorted(samples.column("slice_index").to_pylist()) == [1, 2]
    assert sorted(quarantine.column("source_index").to_pylist()) == [0, 3]
    assert set(quarantine.column("reason").to_pylist()) == {"empty_slice"}
    assert samples.column("height").to_pylist() == [5, 5]  # rot90 of a 6x5 slice
    assert summary["accounting"]["ingested"] == 4


BAD_CASES = {
    "truncated": "truncated",
    "not_image": "not_an_image",
    "nan": "nan_values",
    "zero": "empty_image",
    "complex": "unsupported_dtype",
    "huge": "too_large",
}


def test_every_bad_input_is_quarantined_with_reason(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    good = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(good).save(root / "good.png")
    data = (root / "good.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "notes.csv").write_text("a,b\n1,2\n")
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(root / "huge.png")
    np.savez(tmp_path / "nan.npz", images=np.array([[[np.nan, 1.0], [0.0, 1.0]]]))
    np.savez(tmp_path / "zero.npz", images=np.zeros((1, 0, 5), np.uint8))
    np.savez(tmp_path / "complex.npz", images=np.ones((1, 3, 3), np.complex64))
    samples, quarantine, summary = ingest(tmp_path, [
        {"type": "folder", "path": str(root)},
        {"type": "npz", "path": str(tmp_path / "nan.npz")},
        {"type": "npz", "path": str(tmp_path / "zero.npz")},
        {"type": "npz", "path": str(tmp_path / "complex.npz")},
    ], max_pixels=100 * 100)
    reasons = {os.path.basename(r["source_uri"]).split(".")[0]: r["reason"] for r in quarantine.to_pylist()}
    assert reasons == {"truncated": "truncated", "notes": "not_an_image", "huge": "too_large", "nan": "nan_values",
                       "zero": "empty_image", "complex": "unsupported_dtype"}
    assert all(r["detail"] for r in quarantine.to_pylist())
    assert samples.num_rows == 1
    acc = summary["accounting"]
    assert (acc["ingested"], acc["kept"], acc["quarantined"]) == (7, 1, 6)


def test_on_error_skip_counts_and_raise_fails(tmp_path):
    from curate.errors import StageError

    root = tmp_path / "imgs"
    root.mkdir()
    (root / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(StageError, match="ingest.*x.png"):
        run_pipeline(PipelineConfig(name="t", stages=[{"stage": "ingest", "on_error": "raise",
                                                        "sources": [{"type": "folder", "path": str(root)}]}]),
                     str(tmp_path / "r1"), scheduler="sync", progress=False)
    summary = run_pipeline(PipelineConfig(name="t", stages=[{"stage": "ingest", "on_error": "skip",
                                                              "sources": [{"type": "folder", "path": str(root)}]}]),
                           str(tmp_path / "r2"), scheduler="sync", progress=False)
    assert summary["stages"]["00_ingest"]["counters"] == {"skipped_corrupt_image": 1, "samples": 0} or \
        any(k.startswith("skipped_") for k in summary["stages"]["00_ingest"]["counters"])
    assert summary["accounting"]["balanced"] and summary["accounting"]["quarantined"] == 1
