"""A generated corpus of bad inputs, one file (or row, or array) per kind, next to good ones.

:func:`build` writes everything under a root and returns the ingest sources plus, per kind, where the bad
input is and the quarantine reason it must get. :data:`EXIT_2` lists inputs that are wrong as a whole
(an array file whose labels do not match its images, a header that cannot be parsed, a column of the
wrong type): each must stop the run at plan time with exit 2 and a message naming the file and the problem.
Everything is built from bytes here (no downloads), small enough that one pipeline run reads it all.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

RNG = np.random.default_rng(12)
GOOD = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
GOOD_GRAY = RNG.integers(0, 256, (16, 16), dtype=np.uint8)


def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) if crc is None else crc)


def png(w: int, h: int, raw: bytes | None = None, *, ctype: int = 0, idat: bytes | None = None,
        ihdr_crc: int | None = None, idat_crc: int | None = None, iend: bool = True, depth: int = 8,
        interlace: int = 0) -> bytes:
    """A hand-made PNG; ``raw`` filtered scanlines (default: all rows of an 8-bit gray image, filter 0)."""
    if idat is None:
        idat = zlib.compress(raw if raw is not None else b"".join(b"\x00" + bytes(w) for _ in range(h)))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr, ihdr_crc)
    out += chunk(b"IDAT", idat, idat_crc)
    return out + (chunk(b"IEND", b"") if iend else b"")


def flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


def _palette_png() -> bytes:
    img = Image.fromarray(GOOD).convert("P", palette=Image.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_with_size(data: bytes, w: int, h: int) -> bytes:
    """``data`` (a baseline JPEG) with its SOF0 frame header declaring ``w`` x ``h``."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + struct.pack(">HH", h, w) + data[i + 9:]


def tiff_with_size(data: bytes, w: int, h: int) -> bytes:
    """A little-endian TIFF with its ImageWidth / ImageLength tags set to ``w`` / ``h`` (LONG values)."""
    b = bytearray(data)
    ifd = struct.unpack("<I", b[4:8])[0]
    (n,) = struct.unpack("<H", b[ifd:ifd + 2])
    for k in range(n):
        e = ifd + 2 + 12 * k
        tag, typ = struct.unpack("<HH", b[e:e + 4])
        if tag in (256, 257):
            b[e + 2:e + 12] = struct.pack("<HII", 4, 1, w if tag == 256 else h)
    return bytes(b)


def bmp_with_size(data: bytes, w: int, h: int) -> bytes:
    return data[:18] + struct.pack("<ii", w, h) + data[26:]


@dataclass
class Corpus:
    sources: list[dict] = field(default_factory=list)
    bad: dict[str, tuple[str, int | None, str]] = field(default_factory=dict)  # kind -> (uri, index, reason)
    good: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # name -> (uri, index)
    counters: dict[str, int] = field(default_factory=dict)  # stage counters that must be at least this


def _folder(root: str, c: Corpus) -> None:
    d = os.path.join(root, "images")
    os.makedirs(d)
    files: dict[str, tuple[bytes, str | None]] = {}  # name -> (bytes, reason or None for good)
    p, j = encode(GOOD, "PNG"), encode(GOOD, "JPEG", quality=90)
    t, b, g = encode(GOOD, "TIFF"), encode(GOOD, "BMP"), encode(GOOD_GRAY, "GIF")
    idat_at = p.index(b"IDAT")
    # PNG
    files["png_good.png"] = (p, None)
    files["png_truncated_half.png"] = (p[: len(p) // 2], "truncated")
    files["png_zero_byte.png"] = (b"", "empty_file")
    files["png_wrong_magic.png"] = (b"\x89PNX" + p[4:], "not_an_image")
    files["png_signature_only.png"] = (p[:8], "truncated")
    files["png_header_only.png"] = (p[:33], "truncated")
    files["png_idat_crc.png"] = (png(16, 16, idat_crc=0), "crc_mismatch")
    files["png_ihdr_crc.png"] = (png(16, 16, ihdr_crc=1234), "crc_mismatch")
    files["png_data_byte_flipped.png"] = (flip(p, idat_at + 10), "crc_mismatch")
    files["png_short_idat_6000.png"] = (png(6000, 6000, b"".join(b"\x00" + b"\x07" * 6000 for _ in range(10))),
                                        "truncated")
    files["png_bomb_header.png"] = (png(100_000, 100_000, b"\x00" * 10), "too_large")
    files["png_no_iend.png"] = (png(16, 16, iend=False), "truncated")
    files["png_garbage_zlib.png"] = (png(16, 16, idat=bytes(RNG.integers(0, 256, 64, dtype=np.uint8))), "corrupt_image")
    files["png_zlib_cut.png"] = (png(16, 16, idat=zlib.compress(bytes(17 * 16))[:-6]), "truncated")
    files["png_zero_width.png"] = (png(0, 16, b""), "empty_image")
    files["png_bad_color_type.png"] = (png(16, 16, ctype=5), "corrupt_image")
    files["png_huge_chunk_length.png"] = (p[:33] + struct.pack(">I", 0xFFFFFFF0) + p[37:], "corrupt_image")
    files["png_cut_in_chunk_header.png"] = (p[: idat_at - 2], "truncated")
    # PNG flavours that libspng does not take (16-bit, palette, alpha, interlaced): the full check decides
    p16 = encode((GOOD_GRAY.astype(np.uint16) * 257), "PNG")
    pal = _palette_png()
    files["png16_good.png"] = (p16, None)
    files["png16_short_idat.png"] = (png(64, 64, b"".join(b"\x00" + bytes(128) for _ in range(5)), depth=16), "truncated")
    files["png_palette_good.png"] = (pal, None)
    files["png_palette_byte_flipped.png"] = (flip(pal, pal.index(b"IDAT") + 6), "crc_mismatch")
    files["png_rgba_good.png"] = (encode(np.dstack([GOOD, GOOD_GRAY]), "PNG"), None)
    files["png_rgba_short_idat.png"] = (png(32, 32, b"\x00" + bytes(128), ctype=6), "truncated")
    files["png_interlaced_short.png"] = (png(16, 16, b"\x00" * 20, interlace=1), "truncated")
    # JPEG
    files["jpeg_good.jpg"] = (j, None)
    files["jpeg_truncated_half.jpg"] = (j[: len(j) // 2], "truncated")
    files["jpeg_zero_byte.jpg"] = (b"", "empty_file")
    files["jpeg_wrong_magic.jpg"] = (b"\x00\x00" + j[2:], "not_an_image")
    files["jpeg_no_eoi.jpg"] = (j[:-2], "truncated")
    files["jpeg_header_only.jpg"] = (j[:20], "truncated")
    files["jpeg_bomb_header.jpg"] = (jpeg_with_size(j, 65000, 65000), "too_large")
    # TIFF
    files["tiff_good.tiff"] = (t, None)
    files["tiff_truncated_half.tiff"] = (t[: len(t) // 2], "truncated")
    files["tiff_zero_byte.tiff"] = (b"", "empty_file")
    files["tiff_wrong_magic.tiff"] = (b"II\x2b\x01" + t[4:], "not_an_image")
    files["tiff_bomb_header.tiff"] = (tiff_with_size(t, 100_000, 100_000), "too_large")
    files["tiff_bad_ifd_offset.tiff"] = (t[:4] + struct.pack("<I", 10 ** 9) + t[8:], "corrupt_image")
    # BMP
    files["bmp_good.bmp"] = (b, None)
    files["bmp_truncated_half.bmp"] = (b[: len(b) // 2], "truncated")
    files["bmp_zero_byte.bmp"] = (b"", "empty_file")
    files["bmp_wrong_magic.bmp"] = (b"XX" + b[2:], "not_an_image")
    files["bmp_bomb_header.bmp"] = (bmp_with_size(b, 100_000, 100_000), "too_large")
    # GIF
    files["gif_good.gif"] = (g, None)
    files["gif_truncated_half.gif"] = (g[: len(g) // 2], "corrupt_image")
    files["gif_bomb_header.gif"] = (g[:6] + struct.pack("<HH", 65535, 65535) + g[10:], "too_large")
    # not images at all, whatever the name says
    files["text_named_png.png"] = (b"hello, I am text\n" * 4, "not_an_image")
    files["html_named_jpg.jpg"] = (b"<html><script>alert(1)</script></html>", "not_an_image")
    files["npy_named_png.png"] = (b"\x93NUMPY\x01\x00" + bytes(100), "not_an_image")
    # hostile names: good ones are kept with the name intact, bad ones quarantined under it
    files["<img src=x onerror=alert(1)>.png"] = (p, None)
    files["; rm -rf ~ && echo pwned.png"] = (p, None)
    files["-rf --no-preserve-root.png"] = (p[:40], "truncated")
    files["evil\u202egnp.exe"] = (p, None)
    files["new\nline\rname.png"] = (p, None)
    files["%s%n%x{0}$(id).png"] = (b"", "empty_file")
    files["x" * 200 + ".png"] = (p, None)
    files["PID-123_Doe^Jane ' \" `.png"] = (flip(p, idat_at + 10), "crc_mismatch")
    files["日本語の名前.png"] = (p, None)
    files[os.fsdecode(b"latin1_caf\xe9_not_utf8.png")] = (p, None)  # stored as ...caf\xe9... (escaped)
    files[os.fsdecode(b"\xff\xfe_cut.png")] = (p[:60], "truncated")
    for name, (data, reason) in files.items():
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(data)
        kind = "folder:" + os.fsencode(name).decode("utf-8", "backslashreplace")
        uri = os.fsencode(path).decode("utf-8", "backslashreplace")
        if reason is None:
            c.good[kind] = (uri, None)
        else:
            c.bad[kind] = (uri, None, reason)
    c.sources.append({"type": "folder", "path": d, "labels": "none"})
    c.sources.append({"type": "folder", "path": d + "/", "labels": "none"})  # the same source twice


def _arrays(root: str, c: Corpus) -> None:
    """npz files whose bad rows are quarantined one by one (whole-file problems are in EXIT_2)."""
    good = RNG.integers(0, 256, (2, 8, 8), dtype=np.uint8)
    cases = {
        "npz_nan": (np.array([[[np.nan, 1.0], [0.0, 1.0]]]), "nan_values"),
        "npz_inf": (np.array([[[np.inf, 1.0], [0.0, -np.inf]]]), "nan_values"),
        "npz_zero_size_image": (np.zeros((1, 0, 5), np.uint8), "empty_image"),
        "npz_complex": (np.ones((1, 3, 3), np.complex64), "unsupported_dtype"),
        "npz_string_pixels": (np.full((1, 3, 3), "ab"), "unsupported_dtype"),
        "npz_5d_image": (np.zeros((1, 2, 2, 2, 2), np.uint8), "bad_shape"),
        "npz_7_channels": (np.zeros((1, 5, 5, 7), np.uint8), "bad_shape"),
    }
    for kind, (bad, reason) in cases.items():
        path = os.path.join(root, kind + ".npz")
        np.savez(path, images=bad)
        c.sources.append({"type": "npz", "path": path})
        c.bad["npz:" + kind] = (path + "#images", 0, reason)
    imgs = np.stack([np.full((4, 4), np.nan, ">f4"), RNG.random((4, 4)).astype(">f4"),
                     np.full((4, 4), np.inf, ">f4")])
    path = _idx(os.path.join(root, "float-images-idx3-ubyte"), bytes([0, 0, 0x0D, 3]) + struct.pack(">III", 3, 4, 4),
                imgs.astype(">f4").tobytes(), gz=False)  # IDX data is big-endian
    labels = _idx(os.path.join(root, "float-labels-idx1-ubyte"), bytes([0, 0, 8, 1]) + struct.pack(">I", 3),
                  bytes([1, 2, 3]), gz=False)
    c.sources.append({"type": "idx", "images": path, "labels": labels})
    c.bad["idx:nan_image"] = (path, 0, "nan_values")
    c.bad["idx:inf_image"] = (path, 2, "nan_values")
    c.good["idx:float_image"] = (path, 1)
    path = os.path.join(root, "npz_nan_label.npz")
    np.savez(path, train_images=good, train_labels=np.array([[np.nan], [1.0]]))
    c.sources.append({"type": "npz", "path": path})
    c.bad["npz:nan_label"] = (path + "#train", 0, "bad_label")
    c.good["npz:row_with_label"] = (path + "#train", 1)


def _parquet(root: str, c: Corpus) -> None:
    p, j = encode(GOOD, "PNG"), encode(GOOD, "JPEG", quality=90)
    rows = [  # (image, label, reason or None)
        (p, "cat", None), (j, "dog", None), ({"bytes": p, "path": "a.png"}, "cat", None),
        (None, "cat", "empty_file"), (b"", "cat", "empty_file"), ({"bytes": None, "path": "x.png"}, "dog", "empty_file"),
        (b"not an image", "dog", "not_an_image"), (p[: len(p) // 2], "cat", "truncated"),
        (flip(p, p.index(b"IDAT") + 10), "cat", "crc_mismatch"), (png(100_000, 100_000, b"\x00"), "dog", "too_large"),
        (j[:-2], "dog", "truncated"),
    ]
    path = os.path.join(root, "rows.parquet")
    imgs = [r[0] if isinstance(r[0], dict) or r[0] is None else {"bytes": r[0], "path": None} for r in rows]
    pq.write_table(pa.table({"image": imgs, "label": [r[1] for r in rows]}), path)
    c.sources.append({"type": "parquet", "path": path, "label_column": "label"})
    names = {"parquet:null_image": 3, "parquet:empty_bytes": 4, "parquet:struct_without_bytes": 5,
             "parquet:not_an_image": 6, "parquet:truncated_png": 7, "parquet:crc_png": 8, "parquet:bomb_png": 9,
             "parquet:jpeg_no_eoi": 10}
    for kind, i in names.items():
        c.bad[kind] = (path, i, rows[i][2])
    for i in range(3):
        c.good[f"parquet:row{i}"] = (path, i)
    path = os.path.join(root, "float_labels.parquet")
    pq.write_table(pa.table({"image": [p, p, p], "y": [1.0, 2.5, None]}), path)
    c.sources.append({"type": "parquet", "path": path, "label_column": "y"})
    c.bad["parquet:fractional_label"] = (path, 1, "bad_label")
    c.good["parquet:null_label"] = (path, 2)
    path = os.path.join(root, "damaged_page.parquet")  # a data page whose CRC no longer matches
    pq.write_table(pa.table({"image": [p, p]}), path, compression="none", write_page_checksum=True)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(flip(data, data.index(p) + 40))
    c.sources.append({"type": "parquet", "path": path})
    for i in range(2):
        c.bad[f"parquet:damaged_page_row{i}"] = (path, i, "unreadable_parquet")


def _ct(**changes):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for k, v in changes.items():
        setattr(ds, k, v)
    return ds


def _patch(path: str, old: bytes, new: bytes) -> None:
    with open(path, "rb") as f:
        data = f.read()
    assert data.count(old) >= 1 and len(old) == len(new)
    with open(path, "wb") as f:
        f.write(data.replace(old, new))


def _dicom(root: str, c: Corpus) -> None:
    d = os.path.join(root, "dicom")
    os.makedirs(d)
    for k in range(3):  # a good series of three slices
        _ct(ImagePositionPatient=[0.0, 0.0, float(k)], InstanceNumber=k + 1).save_as(os.path.join(d, f"good{k}.dcm"))
        c.good[f"dicom:good{k}"] = (os.path.join(d, f"good{k}.dcm"), 0)
    # a second series in which one file has a non-numeric position: the series is ordered by InstanceNumber
    for k in range(2):
        f = os.path.join(d, f"pos{k}.dcm")
        _ct(SeriesInstanceUID=f"1.2.3.{99}", InstanceNumber=k + 1,
            ImagePositionPatient=["-9.87654", "-9.87654", "-9.87654"] if k else [0.0, 0.0, 1.0]).save_as(f)
        if k:
            _patch(f, b"-9.87654", b"abcdefgh")
        c.good[f"dicom:bad_position_kept{k}"] = (f, 0)
    c.counters["dicom_ordered_by_instance_number"] = 2
    path = os.path.join(d, "window_abcde.dcm")
    _ct(WindowCenter="12345", WindowWidth="400", SeriesInstanceUID="1.2.3.7").save_as(path)
    _patch(path, b"12345", b"abcde")
    c.bad["dicom:window_center_abcde"] = (path, None, "malformed_dicom_value")
    path = os.path.join(d, "slope_xyz.dcm")
    _ct(RescaleSlope="1.2345", SeriesInstanceUID="1.2.3.8").save_as(path)
    _patch(path, b"1.2345", b"xy.zzz")
    c.bad["dicom:rescale_slope_xyz"] = (path, None, "malformed_dicom_value")
    path = os.path.join(d, "bomb_frames.dcm")  # frames x rows x cols over max_voxels (2^30 by default)
    _ct(NumberOfFrames=70000, SeriesInstanceUID="1.2.3.11").save_as(path)
    c.bad["dicom:bomb_number_of_frames"] = (path, None, "too_large")
    path = os.path.join(d, "bomb_rows.dcm")
    _ct(Rows=65535, Columns=65535, SeriesInstanceUID="1.2.3.9").save_as(path)
    c.bad["dicom:bomb_rows_columns"] = (path, None, "too_large")
    good = open(os.path.join(d, "good0.dcm"), "rb").read()
    for name, data, reason in [("cut_pixels.dcm", good[:-3000], "unreadable_pixels"),
                               ("zero_byte.dcm", b"", "unreadable_dicom"),
                               ("garbage.dcm", bytes(RNG.integers(0, 256, 600, dtype=np.uint8)), "unreadable_dicom"),
                               ("cut_in_meta.dcm", good[:200], "no_pixel_data")]:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        c.bad["dicom:" + name[:-4]] = (os.path.join(d, name), None, reason)
    ds = _ct(SeriesInstanceUID="1.2.3.10")
    del ds.PixelData
    ds.save_as(os.path.join(d, "no_pixels.dcm"))
    c.bad["dicom:no_pixel_data"] = (os.path.join(d, "no_pixels.dcm"), None, "no_pixel_data")
    if hasattr(os, "mkfifo"):  # opening a FIFO would block ingest forever: never opened, quarantined
        os.mkfifo(os.path.join(d, "pipe.dcm"))
        c.bad["dicom:fifo"] = (os.path.join(d, "pipe.dcm"), None, "not_a_regular_file")
    os.symlink(os.path.join(d, "nowhere.dcm"), os.path.join(d, "dangling.dcm"))
    c.bad["dicom:broken_symlink"] = (os.path.join(d, "dangling.dcm"), None, "unreadable")
    c.sources.append({"type": "dicom", "path": d, "window": "auto", "redact_paths": False})


def _nifti(root: str, c: Corpus) -> None:
    import nibabel as nib

    d = os.path.join(root, "nifti")
    os.makedirs(d)
    vol = RNG.random((6, 5, 3)).astype(np.float32)

    def save(name: str, arr: np.ndarray) -> str:
        path = os.path.join(d, name)
        nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
        return path

    path = save("good.nii.gz", vol)
    for k in range(3):
        c.good[f"nifti:good{k}"] = (path, k)
    path = save("series4d.nii.gz", RNG.random((6, 5, 3, 2)).astype(np.float32))
    for t in range(2):
        for k in range(3):
            c.good[f"nifti:4d_t{t}_k{k}"] = (f"{path}#volume_index={t}", k)
    nan = vol.copy()
    nan[0, 0, 1] = np.nan
    c.bad["nifti:nan_voxel"] = (save("nan.nii.gz", nan), 1, "nan_values")
    c.bad["nifti:all_nan_slice"] = (save("allnan.nii.gz", np.where(np.arange(3) == 0, np.nan, vol)), 0, "nan_values")
    c.bad["nifti:constant_slice"] = (save("const.nii.gz", np.where(np.arange(3) == 2, 7.0, vol).astype(np.float32)),
                                     2, "empty_slice")
    c.bad["nifti:empty_volume"] = (save("empty.nii.gz", np.zeros((6, 0, 3), np.float32)), None, "empty_volume")
    raw_path = save("plain.nii", vol)
    raw = open(raw_path, "rb").read()
    for name, data, reason in [("cut.nii", raw[:-40], "truncated"), ("zero_byte.nii", b"", "unreadable_nifti"),
                               ("garbage.nii", bytes(RNG.integers(0, 256, 400, dtype=np.uint8)), "unreadable_nifti"),
                               ("cut_gz.nii.gz", gzip.compress(raw)[:-30], "unreadable_nifti"),
                               ("crc_gz.nii.gz", flip(gzip.compress(raw), -6), "unreadable_nifti")]:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        c.bad["nifti:" + name.split(".")[0]] = (os.path.join(d, name), None, reason)
    for k in range(3):
        c.good[f"nifti:plain{k}"] = (raw_path, k)
    bomb = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    bomb.header.set_data_shape((30_000, 30_000, 2))  # int16 dims: at most 32767
    with open(os.path.join(d, "bomb.nii"), "wb") as f:
        f.write(bomb.header.binaryblock + b"\x00" * 4 + b"\x00" * 32)
    c.bad["nifti:bomb_header"] = (os.path.join(d, "bomb.nii"), None, "truncated")
    if hasattr(os, "mkfifo"):
        os.mkfifo(os.path.join(d, "pipe.nii"))
        c.bad["nifti:fifo"] = (os.path.join(d, "pipe.nii"), None, "not_a_regular_file")
    os.symlink(os.path.join(d, "nowhere.nii.gz"), os.path.join(d, "dangling.nii.gz"))
    c.bad["nifti:broken_symlink"] = (os.path.join(d, "dangling.nii.gz"), None, "unreadable")
    c.sources.append({"type": "nifti", "path": d, "axis": 2})


def build(root: str) -> Corpus:
    c = Corpus()
    _folder(root, c)
    _arrays(root, c)
    _parquet(root, c)
    _dicom(root, c)
    _nifti(root, c)
    return c


# --------------------------------------------------------------------- whole-file problems: exit 2
def _idx(path: str, header: bytes, body: bytes = b"", gz: bool = True) -> str:
    data = header + body
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)
    return path


def _exit2_cases(root: str) -> dict[str, tuple[dict, list[str]]]:
    """kind -> (source, phrases the message must hold)."""
    imgs = RNG.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    good_idx = _idx(os.path.join(root, "good-images-idx3-ubyte.gz"), bytes([0, 0, 8, 3]) + struct.pack(">III", 5, 4, 4),
                    imgs.tobytes())
    out: dict[str, tuple[dict, list[str]]] = {}

    def npz(kind: str, needles: list[str], **arrays) -> None:
        path = os.path.join(root, kind + ".npz")
        np.savez(path, **arrays)
        out[kind] = ({"type": "npz", "path": path}, [path] + needles)

    npz("npz_fewer_labels", ["3 labels for 5 images"], images=imgs, labels=np.zeros(3, int))
    npz("npz_more_labels", ["9 labels for 5 images"], train_images=imgs, train_labels=np.zeros(9, int))
    npz("npz_0dim_labels", ["0-dimensional", "5 images"], images=imgs, labels=np.array(3))
    npz("npz_string_labels", ["dtype <U1", "integer class ids"], images=imgs, labels=np.array(list("abcde")))
    npz("npz_2d_images", ["shape (5, 16)", "(N, H, W)"], images=imgs.reshape(5, 16))
    npz("npz_no_images_array", ["no '<split>_images' array"], pixels=imgs)
    path = os.path.join(root, "npz_pickled.npz")
    np.savez(path, images=np.array([{"x": 1}], dtype=object))
    out["npz_pickled_object_array"] = ({"type": "npz", "path": path}, [path, "cannot read .npz"])
    path = os.path.join(root, "npz_not_a_zip.npz")
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 this is not a zip")
    out["npz_not_a_zip"] = ({"type": "npz", "path": path}, [path, "cannot read .npz"])

    def idx(kind: str, needles: list[str], header: bytes, body: bytes = b"", gz: bool = True, labels: str | None = None):
        path = _idx(os.path.join(root, f"{kind}-idx3-ubyte" + (".gz" if gz else "")), header, body, gz)
        src = {"type": "idx", "images": good_idx if labels else path, "labels": path if labels else None}
        out[kind] = (src, [path] + needles)

    idx("idx_truncated_header", ["IDX header truncated", "3 dimensions need 16"], bytes([0, 0, 8, 3]) + struct.pack(">I", 5))
    idx("idx_0dim", ["0 dimensions"], bytes([0, 0, 8, 0]))
    idx("idx_bad_magic", ["bad magic"], bytes([1, 2, 8, 3]) + struct.pack(">III", 1, 1, 1), b"\x00")
    idx("idx_bad_dtype_code", ["bad magic"], bytes([0, 0, 0x42, 3]) + struct.pack(">III", 1, 1, 1), b"\x00")
    idx("idx_truncated_data", ["truncated", "of 80 data bytes"], bytes([0, 0, 8, 3]) + struct.pack(">III", 5, 4, 4), b"\x00" * 30)
    idx("idx_bomb_dims", ["truncated", "(4294967295, 4294967295, 4294967295)"],
        bytes([0, 0, 8, 3]) + struct.pack(">III", 2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1), b"\x00" * 16, gz=False)
    idx("idx_1d_images", ["shape (5,)", "(N, H, W)"], bytes([0, 0, 8, 1]) + struct.pack(">I", 5), b"\x00" * 5)
    idx("idx_label_count", ["4 labels for 5 images"], bytes([0, 0, 8, 1]) + struct.pack(">I", 4), b"\x01" * 4,
        labels="yes")
    path = os.path.join(root, "idx_gzip_crc-idx3-ubyte.gz")
    with open(path, "wb") as f:
        f.write(flip(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 5, 4, 4) + imgs.tobytes()), -6))
    out["idx_gzip_crc"] = ({"type": "idx", "images": path}, [path, "cannot read IDX file"])
    path = os.path.join(root, "not_gzip-idx3-ubyte.gz")
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08 broken")
    out["idx_broken_gzip"] = ({"type": "idx", "images": path}, [path, "cannot read IDX file"])

    import nibabel as nib

    path = os.path.join(root, "v4.nii.gz")
    nib.save(nib.Nifti1Image(RNG.random((4, 4, 3, 2)).astype(np.float32), np.eye(4)), path)
    out["nifti_4d_axis_3"] = ({"type": "nifti", "path": path, "axis": 3}, [path, "axis 3 is the volume (time) axis"])
    path = os.path.join(root, "v2.nii.gz")
    nib.save(nib.Nifti1Image(RNG.random((4, 4)).astype(np.float32), np.eye(4)), path)
    out["nifti_2d"] = ({"type": "nifti", "path": path, "axis": 2}, [path, "axis 2 out of range", "3-D volumes"])

    p = encode(GOOD, "PNG")
    path = os.path.join(root, "int_image.parquet")
    pq.write_table(pa.table({"image": [1, 2, 3], "y": [0, 1, 2]}), path)
    out["parquet_int_image_column"] = ({"type": "parquet", "path": path},
                                       [path, "image column 'image' has type int64", "fix: set image_column"])
    path = os.path.join(root, "list_label.parquet")
    pq.write_table(pa.table({"image": [p], "y": [[1, 2]]}), path)
    out["parquet_list_label_column"] = ({"type": "parquet", "path": path, "label_column": "y"},
                                        [path, "label column 'y' has type list<", "integers (class ids) or strings"])
    path = os.path.join(root, "missing_col.parquet")
    pq.write_table(pa.table({"img": [p]}), path)
    out["parquet_missing_column"] = ({"type": "parquet", "path": path}, [path, "column 'image' not found"])
    path = os.path.join(root, "not_parquet.parquet")
    with open(path, "wb") as f:
        f.write(b"PAR1 but not really")
    out["parquet_not_parquet"] = ({"type": "parquet", "path": path}, [path, "not a readable Parquet file"])
    d = os.path.join(root, "mixed_labels")
    os.makedirs(d)
    pq.write_table(pa.table({"image": [p], "y": ["cat"]}), os.path.join(d, "a.parquet"))
    pq.write_table(pa.table({"image": [p], "y": [3]}), os.path.join(d, "b.parquet"))
    out["parquet_mixed_label_types"] = ({"type": "parquet", "path": d, "label_column": "y"},
                                        [d, "strings in some files and numbers in others"])
    return out


EXIT_2 = _exit2_cases
