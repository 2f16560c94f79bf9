"""Bad input in each source becomes a quarantine row or exit 2, never exit 1 (issue 12, items 11-15)."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curate import imaging
from curate.cli import app
from tests.adversarial import _corpus
from tests.conftest import read_run_table

runner = CliRunner()


def _run(tmp_path, sources: list[dict], **params):
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "stages": [{"stage": "ingest", "sources": sources, **params}]}))
    run_dir = tmp_path / "run"
    r = runner.invoke(app, ["run", str(p), "--run-dir", str(run_dir), "--scheduler", "sync", "--quiet", "--no-card"])
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    return r, run_dir


def _ok(tmp_path, sources: list[dict], **params):
    r, run_dir = _run(tmp_path, sources, **params)
    assert r.exit_code == 0, r.output
    summary = json.loads((run_dir / "summary.json").read_text())
    acc = summary["accounting"]
    assert acc["balanced"] and acc["ingested"] == acc["kept"] + acc["removed"] + acc["quarantined"]
    samples = read_run_table(run_dir, "00_ingest")
    quarantine = read_run_table(run_dir, "00_ingest", "quarantine")
    return samples, quarantine, summary["stages"]["00_ingest"]["counters"]


def _exit2(tmp_path, sources: list[dict], *needles: str) -> None:
    r, run_dir = _run(tmp_path, sources)
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())
    for n in needles:
        assert n in flat, flat


# --------------------------------------------------------------------------- 11. DICOM DS values
def _series(tmp_path):
    d = tmp_path / "dcm"
    d.mkdir()
    for k, z in enumerate([20.0, 0.0, 10.0]):  # files named out of anatomical order
        ds = _corpus._ct(ImagePositionPatient=[0.0, 0.0, z], InstanceNumber=3 - k)
        ds.PixelData = np.full(ds.pixel_array.shape, 100 * k, np.int16).tobytes()
        ds.save_as(d / f"s{k}.dcm")
    return d


def test_dicom_non_numeric_window_center_quarantines_that_file_only(tmp_path):
    d = _series(tmp_path)
    ds = _corpus._ct(WindowCenter="12345", WindowWidth="400", SeriesInstanceUID="9.9")
    ds.save_as(d / "w.dcm")
    _corpus._patch(str(d / "w.dcm"), b"12345", b"abcde")
    samples, quarantine, _ = _ok(tmp_path, [{"type": "dicom", "path": str(d), "redact_paths": False}])
    assert samples.num_rows == 3
    (row,) = quarantine.to_pylist()
    assert row["reason"] == "malformed_dicom_value" and "WindowCenter" in row["detail"] and "abcde" in row["detail"]
    assert row["source_uri"].endswith("w.dcm")
    # an explicit window does not need the header's: the same file is then kept
    samples, quarantine, _ = _ok(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path,
                                 [{"type": "dicom", "path": str(d), "redact_paths": False, "window": "soft_tissue"}])
    assert samples.num_rows == 4 and quarantine.num_rows == 0


def test_dicom_non_numeric_position_orders_the_series_by_instance_number_and_counts_it(tmp_path):
    d = _series(tmp_path)
    good = _ok(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path,
               [{"type": "dicom", "path": str(d), "redact_paths": False}])[0]
    by_pos = [os.path.basename(r["source_uri"]) for r in sorted(good.to_pylist(), key=lambda r: r["slice_index"])]
    assert by_pos == ["s1.dcm", "s2.dcm", "s0.dcm"]  # z = 0, 10, 20
    _corpus._patch(str(d / "s2.dcm"), b"10.0", b"x1.0")  # s2's z is now not a number
    samples, quarantine, counters = _ok(tmp_path, [{"type": "dicom", "path": str(d), "redact_paths": False}])
    assert quarantine.num_rows == 0 and samples.num_rows == 3
    order = [os.path.basename(r["source_uri"]) for r in sorted(samples.to_pylist(), key=lambda r: r["slice_index"])]
    assert order == ["s2.dcm", "s1.dcm", "s0.dcm"]  # InstanceNumber 1, 2, 3
    assert counters["dicom_ordered_by_instance_number"] == 3


# --------------------------------------------------------------------------- 12. Parquet columns
def test_parquet_string_labels_are_mapped_to_ids_with_label_name(tmp_path):
    png = _corpus.encode(_corpus.GOOD, "PNG")
    d = tmp_path / "pq"
    d.mkdir()
    pq.write_table(pa.table({"image": [png, png, png], "y": ["dog", "cat", None]}), d / "a.parquet")
    pq.write_table(pa.table({"image": [png, b"nope"], "y": ["zebra", "cat"]}), d / "b.parquet")
    samples, quarantine, _ = _ok(tmp_path, [{"type": "parquet", "path": str(d), "label_column": "y"}], partition_size=1)
    rows = sorted(samples.to_pylist(), key=lambda r: (r["source_uri"], r["source_index"]))
    assert [(r["label"], r["label_name"]) for r in rows] == [(1, "dog"), (0, "cat"), (None, None), (2, "zebra")]
    assert quarantine.column("reason").to_pylist() == ["not_an_image"]  # the good images are not corrupt_image


def test_parquet_integer_image_column_exits_2_naming_file_column_and_fix(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"image": [1, 2], "png": [b"x", b"y"]}), path)
    _exit2(tmp_path, [{"type": "parquet", "path": str(path)}], str(path), "image column 'image' has type int64",
           "fix: set image_column", "candidates: ['png']")


# --------------------------------------------------------------------------- 13. arrays and volumes
def test_npz_with_fewer_labels_than_images_exits_2(tmp_path):
    path = tmp_path / "few.npz"
    np.savez(path, train_images=np.zeros((5, 4, 4), np.uint8), train_labels=np.zeros((3, 1), int))
    _exit2(tmp_path, [{"type": "npz", "path": str(path)}], str(path), "'train_labels' holds 3 labels for 5 images")


@pytest.mark.parametrize("header, needle", [
    (bytes([0, 0, 8, 3, 0, 0]), "IDX header truncated"),
    (bytes([0, 0, 8, 0]), "IDX header declares 0 dimensions"),
])
def test_idx_truncated_or_0_dim_header_exits_2(tmp_path, header, needle):
    path = _corpus._idx(str(tmp_path / "x-idx3-ubyte.gz"), header)
    _exit2(tmp_path, [{"type": "idx", "images": path}], path, needle)


def test_nifti_4d_ingests_every_volume_and_axis_3_exits_2(tmp_path):
    import nibabel as nib

    vol = np.random.default_rng(0).random((6, 5, 4, 3)).astype(np.float32)
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    _exit2(tmp_path, [{"type": "nifti", "path": str(path), "axis": 3}], str(path), "axis 3 is the volume (time) axis")
    samples, quarantine, _ = _ok(tmp_path, [{"type": "nifti", "path": str(path), "axis": 2}], partition_size=3)
    assert samples.num_rows == 4 * 3 and quarantine.num_rows == 0  # 4 slices of each of 3 volumes
    seen = {(r["source_uri"].rsplit("#volume_index=", 1)[1], r["slice_index"]) for r in samples.to_pylist()}
    assert seen == {(str(t), k) for t in range(3) for k in range(4)}
    # volume 2, slice 1: the pixels of that volume (windowed over that volume alone)
    row = next(r for r in samples.to_pylist() if r["source_uri"].endswith("#volume_index=2") and r["slice_index"] == 1)
    v = vol[..., 2]
    lo, hi = np.percentile(v, [0.5, 99.5])
    expected = np.rot90(np.rint(np.clip((v[:, :, 1] - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8))
    assert np.abs(imaging.decode_png(row["image"]).astype(int) - expected).max() <= 1
    assert len({r["group_id"] for r in samples.to_pylist()}) == 3  # adjacency stays inside one volume
    # whole volumes per partition (partition_size 2048) or slices of one volume (3): the same rows
    (tmp_path / "big").mkdir()
    again, _, _ = _ok(tmp_path / "big", [{"type": "nifti", "path": str(path), "axis": 2}], partition_size=2048)
    key = ["sample_id", "image", "slice_index", "source_uri"]  # group_id: salted per run
    assert again.select(key).sort_by("sample_id").equals(samples.select(key).sort_by("sample_id"))


def test_nifti_5d_every_volume_once(tmp_path):
    import nibabel as nib

    vol = np.random.default_rng(1).random((4, 4, 2, 2, 3)).astype(np.float32)
    path = tmp_path / "v5.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    for size in (1, 100):
        (tmp_path / str(size)).mkdir()
        samples, quarantine, _ = _ok(tmp_path / str(size), [{"type": "nifti", "path": str(path)}], partition_size=size)
        assert samples.num_rows == 2 * 6 and quarantine.num_rows == 0
        hashes = {r["pixel_hash"] for r in samples.to_pylist()}
        assert len(hashes) == 12  # 6 distinct volumes x 2 slices, none read twice


# --------------------------------------------------------------------------- 14. short IDAT, CRCs
def test_png_declaring_6000x6000_with_short_idat_is_truncated_not_zero_filled(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "big.png").write_bytes(_corpus.png(6000, 6000, b"".join(b"\x00" + b"\x07" * 6000 for _ in range(10))))
    (d / "crc.png").write_bytes(_corpus.png(16, 16, idat_crc=7))
    (d / "good.png").write_bytes(_corpus.encode(_corpus.GOOD, "PNG"))
    samples, quarantine, _ = _ok(tmp_path, [{"type": "folder", "path": str(d)}])
    reasons = {os.path.basename(r["source_uri"]): (r["reason"], r["detail"]) for r in quarantine.to_pylist()}
    assert reasons["big.png"][0] == "truncated" and "6000x6000" in reasons["big.png"][1]
    assert reasons["crc.png"][0] == "crc_mismatch" and "IDAT" in reasons["crc.png"][1]
    assert [os.path.basename(u) for u in samples.column("source_uri").to_pylist()] == ["good.png"]


def _adam7_png(arr: np.ndarray, cut: int = 0) -> bytes:
    """An interlaced 8-bit gray PNG (Adam7 passes, filter 0), written by hand: PIL cannot write one."""
    raw = b""
    for x0, y0, dx, dy in imaging._ADAM7:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    raw = raw[: len(raw) - cut]
    h, w = arr.shape
    ihdr = _corpus.struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _corpus.chunk(b"IHDR", ihdr) + _corpus.chunk(b"IDAT", _corpus.zlib.compress(raw))
            + _corpus.chunk(b"IEND", b""))


def test_check_png_accepts_valid_pngs_of_every_flavour():
    import io

    from PIL import Image

    for arr in (_corpus.GOOD, _corpus.GOOD_GRAY, np.zeros((3, 700, 4), np.uint8)):
        for kw in ({}, {"optimize": True}, {"compress_level": 0}):
            data = _corpus.encode(arr, "PNG", **kw)
            imaging.check_png(data)
            with Image.open(io.BytesIO(data)) as img:  # the libspng fast path gives PIL's pixels
                np.testing.assert_array_equal(imaging.decode_image_bytes(data), imaging.from_pil(img))
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (10, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])  # APNG: both frames
    assert [int(f[0, 0]) for f in imaging.decode_frames(buf.getvalue())] == [10, 200]
    for mode in ("1", "P", "LA", "RGBA", "I;16"):
        buf = io.BytesIO()
        Image.new(mode, (13, 7)).save(buf, format="PNG")
        imaging.check_png(buf.getvalue())
    arr = np.random.default_rng(3).integers(0, 256, (7, 13), dtype=np.uint8)
    data = _adam7_png(arr)
    imaging.check_png(data)
    np.testing.assert_array_equal(imaging.decode_image_bytes(data), arr)  # PIL agrees it is this image
    with pytest.raises(imaging.SampleError, match="inflates to 91 of the 105 bytes"):  # last row missing
        imaging.check_png(_adam7_png(arr, cut=14))


# --------------------------------------------------------------------------- 15. repeated sources
def test_same_source_twice_is_planned_once_with_a_warning(tmp_path, caplog, idx_dataset):
    img, lab, *_ = idx_dataset
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    (d / "a.png").write_bytes(_corpus.encode(_corpus.GOOD, "PNG"))
    (d / "sub" / "b.png").write_bytes(_corpus.encode(_corpus.GOOD_GRAY, "PNG"))
    os.symlink(d, tmp_path / "link")
    sources = [{"type": "folder", "path": str(d)}, {"type": "folder", "path": str(tmp_path / "link") + "/"},
               {"type": "folder", "path": str(d / "sub")}, {"type": "idx", "images": img, "labels": lab},
               {"type": "idx", "images": img}]
    with caplog.at_level(logging.WARNING, logger="curate.ingest"):
        samples, quarantine, _ = _ok(tmp_path, sources)
    ids = samples.column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)) == 2 + 300
    text = caplog.text
    assert "sources[1] repeats sources[0]" in text and "sources[4] repeats sources[3]" in text
    assert "1 file(s) under" in text and "already listed by an earlier folder source" in text


def test_parquet_damaged_page_quarantines_only_its_partition_rows(tmp_path):
    ims = [_corpus.encode((_corpus.GOOD_GRAY + k).astype(np.uint8), "PNG") for k in range(10)]
    path = tmp_path / "rg.parquet"
    pq.write_table(pa.table({"image": ims, "y": list(range(10))}), path, row_group_size=5, compression="none",
                   write_page_checksum=True)
    data = path.read_bytes()
    path.write_bytes(_corpus.flip(data, data.index(ims[7]) + 40))  # inside the second row group
    samples, quarantine, _ = _ok(tmp_path, [{"type": "parquet", "path": str(path), "label_column": "y"}],
                                 partition_size=5)
    assert sorted(samples.column("label").to_pylist()) == [0, 1, 2, 3, 4]
    assert sorted(quarantine.column("source_index").to_pylist()) == [5, 6, 7, 8, 9]
    assert set(quarantine.column("reason").to_pylist()) == {"unreadable_parquet"}


def test_nifti_volume_over_max_voxels_is_quarantined_before_reading(tmp_path):
    import nibabel as nib

    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(2).random((6, 5, 4)).astype(np.float32), np.eye(4)), path)
    samples, quarantine, _ = _ok(tmp_path, [{"type": "nifti", "path": str(path)}], max_voxels=100)
    (row,) = quarantine.to_pylist()
    assert samples.num_rows == 0 and row["reason"] == "too_large" and "120 voxels" in row["detail"]
