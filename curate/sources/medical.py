"""Medical volumes: DICOM series (pydicom) and NIfTI volumes (nibabel).

DICOM: files are grouped by (PatientID, StudyInstanceUID, SeriesInstanceUID);
slices are ordered by ImagePositionPatient projected on the slice normal, then
InstanceNumber (by InstanceNumber alone, counted, when a file of the series has
a malformed position); multi-frame files are split into frames; the modality
LUT (RescaleSlope / RescaleIntercept) is applied, then a CT window, and
MONOCHROME1 is inverted. A malformed DS / IS value that a file needs
quarantines that file (``malformed_dicom_value``), never the run.
NIfTI: a volume is sliced along ``axis`` with one window for the whole volume
(so adjacent slices stay comparable); a 4-D+ file is a series of volumes, each
ingested (``source_uri`` ends ``#volume_index=<t>``); empty slices can be
dropped (counted, quarantined with reason ``empty_slice``). Header-declared
sizes are checked before anything is read or planned.
``group_id`` is a salted hash of the series / volume identity, never the raw
PatientID or name.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Iterator

import numpy as np

from curate.errors import ConfigError, SampleError
from curate.samples import sample_row
from curate.sources import Bad, ReadOptions, chunks, file_sha256, salted_group

# (center, width) in Hounsfield units; common radiology presets
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
}


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ConfigError("DICOM sources need pydicom: pip install 'curate[medical]'") from None
    return pydicom


def apply_window(arr: np.ndarray, window, header: tuple | None = None) -> np.ndarray:
    """Map real-valued pixels to uint8 with a window: preset name, [center, width], 'auto' or 'minmax'."""
    a = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(a).all():
        raise SampleError("nan_values", f"{int((~np.isfinite(a)).sum())} NaN/inf pixel values")
    if isinstance(window, str) and window in WINDOWS:
        center, width = WINDOWS[window]
    elif isinstance(window, (list, tuple)):
        center, width = float(window[0]), float(window[1])
    elif window == "auto" and header is not None:
        center, width = header
    else:  # minmax, or auto without a header window
        lo, hi = float(a.min()), float(a.max())
        center, width = (lo + hi) / 2, max(hi - lo, 1e-6)
    lo = center - width / 2
    out = np.clip((a - lo) / max(width, 1e-6), 0.0, 1.0) * 255.0
    return np.rint(out).astype(np.uint8)


# ------------------------------------------------------------------------- DICOM
def _walk(path: str, keep=lambda name: True) -> tuple[list[str], list[dict]]:
    """(regular files, skipped entries) under ``path``: FIFOs, sockets, devices, broken links and
    sub-directories that cannot be listed are never opened (a FIFO would block ingest forever); each
    becomes a quarantine row (:func:`curate.sources.folder._listing`)."""
    from curate.sources.folder import _listing

    if os.path.isfile(path):
        return [path], []
    files, skipped = [], []
    for e in _listing(path, text_sidecar=False):
        if isinstance(e, str):
            if keep(e):
                files.append(e)
        elif e["reason"] == "unreadable_directory" or keep(e["path"]):
            skipped.append(e)
    return files, skipped


def _skipped(payload: dict) -> Iterator:
    for e in payload.get("skipped") or ():
        yield Bad(SampleError(e["reason"], e["detail"]), e["path"])


def _numbers(ds, keyword: str) -> list[float] | None:
    """The float values of a multi-valued DS element, None when absent; raises :class:`SampleError`
    (reason ``malformed_dicom_value``) naming the element when a value is not a decimal string."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        multi = isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str))
        values = value if multi else [value]
        out = [float(x) for x in values]
    except (ValueError, TypeError, OverflowError) as err:
        raise SampleError("malformed_dicom_value",
                          f"{keyword} is not numeric ({_raw_value(ds, keyword)}): {err}") from None
    if not all(np.isfinite(out)):
        raise SampleError("malformed_dicom_value", f"{keyword} has a NaN/inf value ({_raw_value(ds, keyword)})")
    return out


def _raw_value(ds, keyword: str) -> str:
    """The stored bytes of an element, for messages (never the parsed value, which may be what failed)."""
    try:
        from pydicom.datadict import tag_for_keyword

        raw = ds.get_item(tag_for_keyword(keyword))
        value = getattr(raw, "value", raw)
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    except Exception:  # noqa: BLE001 - best effort, for a message only
        return "?"
    return repr(text[:40])


def _position(ds) -> float | None:
    """Slice position along the normal of ImageOrientationPatient; None when absent.
    Raises :class:`SampleError` (``malformed_dicom_value``) for non-numeric values."""
    pos, ori = _numbers(ds, "ImagePositionPatient"), _numbers(ds, "ImageOrientationPatient")
    if pos is None:
        return None
    if len(pos) != 3:
        raise SampleError("malformed_dicom_value", f"ImagePositionPatient has {len(pos)} values, not 3")
    if ori is not None and len(ori) == 6:
        o = np.array(ori)
        return float(np.dot(np.array(pos), np.cross(o[:3], o[3:])))
    return float(pos[2])


def _instance(ds) -> int | None:
    try:
        inst = ds.get("InstanceNumber")
        return int(inst) if inst not in (None, "") else None
    except (ValueError, TypeError, OverflowError):
        return None


def plan_dicom(src, partition_size: int, salt: str) -> list[dict]:
    """Partitions per series, slices in anatomical order. A series where some file has a malformed or
    missing ImagePositionPatient is ordered by InstanceNumber instead (the payload says so and the
    read counts it: ``dicom_ordered_by_instance_number``); never a failed run."""
    pydicom = _pydicom()
    series: dict[tuple, list] = {}
    bad = []
    files, skipped = _walk(src.path)
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            key = (str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", "")),
                   str(ds.get("SeriesInstanceUID", f)))
        except Exception:  # noqa: BLE001 - read() re-reads it and quarantines with the reason
            bad.append(f)
            continue
        try:
            pos, problem = _position(ds), None
        except SampleError as err:
            pos, problem = None, err.detail
        series.setdefault(key, []).append((pos, _instance(ds), f, problem))
    out = []
    for key in sorted(series):
        files = series[key]
        problems = [x for x in files if x[3] is not None]
        by_instance = bool(problems) or (any(x[0] is None for x in files) and any(x[0] is not None for x in files))
        if by_instance:  # positions unusable for part of the series: one consistent order for all of it
            files.sort(key=lambda x: (x[1] is None, x[1] if x[1] is not None else 0, x[2]))
        else:
            files.sort(key=lambda x: (x[0] is None, x[0] if x[0] is not None else 0.0,
                                      x[1] if x[1] is not None else 0, x[2]))
        group = salted_group(salt, "dicom", *key)
        for start, c in zip(range(0, len(files), partition_size), chunks(files, partition_size)):
            part = {"kind": "dicom", "group": group, "files": [x[2] for x in c], "first_slice": start,
                    "window": src.window}
            if by_instance:
                part["order"] = "instance_number"
                part["order_reason"] = (f"{len(problems)} file(s) with a malformed ImagePositionPatient "
                                        f"(first: {problems[0][3]})" if problems
                                        else "ImagePositionPatient missing in part of the series")
            out.append(part)
    if bad or skipped:
        out.append({"kind": "dicom", "group": None, "files": bad, "first_slice": 0, "window": src.window,
                    "skipped": skipped})
    return out


def _header_window(ds) -> tuple[float, float] | None:
    """(center, width) of the header's first VOI window; None when absent. Raises :class:`SampleError`
    (``malformed_dicom_value``) for a non-numeric or non-positive value."""
    c, w = _numbers(ds, "WindowCenter"), _numbers(ds, "WindowWidth")
    if not c or not w:
        return None
    if w[0] <= 0:
        raise SampleError("malformed_dicom_value", f"WindowWidth {w[0]} is not positive")
    return c[0], w[0]


def _int_tag(ds, keyword: str, default: int) -> int:
    try:
        v = ds.get(keyword, default)
        return int(v) if v not in (None, "") else default
    except (ValueError, TypeError, OverflowError):
        raise SampleError("malformed_dicom_value", f"{keyword} is not an integer ({_raw_value(ds, keyword)})") from None


def _dicom_frames(ds, max_pixels: int | None = None, max_voxels: int | None = None) -> list[np.ndarray]:
    from pydicom.pixels import apply_modality_lut

    rows, cols = _int_tag(ds, "Rows", 0), _int_tag(ds, "Columns", 0)
    nframes = max(_int_tag(ds, "NumberOfFrames", 1), 1)
    if max_pixels and rows * cols > max_pixels:  # checked on the header, before any pixel is decoded
        raise SampleError("too_large", f"header declares {rows}x{cols} = {rows * cols} pixels per frame, "
                                       f"exceeds max_pixels={max_pixels}")
    if max_voxels and rows * cols * nframes > max_voxels:  # a compressed multi-frame file can hold a bomb
        raise SampleError("too_large", f"header declares {nframes} frames of {rows}x{cols} pixels, exceeds "
                                       f"max_voxels={max_voxels}")
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        _numbers(ds, keyword)  # a malformed LUT value is this file's problem, named
    try:
        arr = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - missing codec, corrupt pixel data ...
        raise SampleError("unreadable_pixels", f"cannot decode pixel data ({type(err).__name__}: {err})") from None
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    spp = _int_tag(ds, "SamplesPerPixel", 1) or 1
    if spp == 1 and pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr, spp, pi = apply_color_lut(arr, ds), 3, "RGB"
    frames = list(arr) if nframes > 1 else [arr]
    out = []
    for fr in frames:
        if spp == 3:
            out.append(fr)  # pydicom >= 3 already converts YBR_* to RGB in pixel_array
        else:
            try:
                out.append(apply_modality_lut(fr, ds))
            except (ValueError, TypeError, KeyError, IndexError) as err:
                raise SampleError("malformed_dicom_value", f"cannot apply the modality LUT "
                                                           f"({type(err).__name__}: {err})") from None
    return out


def read_dicom(payload: dict, opts: ReadOptions) -> Iterator:
    pydicom = _pydicom()
    yield from _skipped(payload)
    slice_no = payload["first_slice"]
    for f in payload["files"]:
        try:
            digest, _ = file_sha256(f)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f)
        except Exception as err:  # noqa: BLE001
            yield Bad(SampleError("unreadable_dicom", f"not a readable DICOM file ({type(err).__name__}: {err})"), f)
            continue
        if "PixelData" not in ds:
            yield Bad(SampleError("no_pixel_data", f"DICOM object without pixel data (Modality "
                                                   f"{ds.get('Modality', '?')}, SOP {ds.get('SOPClassUID', '?')})"), f)
            continue
        group = payload["group"] or salted_group(opts.group_salt, "dicom", str(ds.get("PatientID", "")),
                                                 str(ds.get("StudyInstanceUID", "")),
                                                 str(ds.get("SeriesInstanceUID", f)))
        try:
            frames = _dicom_frames(ds, opts.max_pixels, opts.max_voxels)
            mono1 = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
            # the header window matters only for window: auto; a malformed one then quarantines the file
            header = _header_window(ds) if payload["window"] == "auto" else None
        except SampleError as err:
            yield Bad(err, f)
            slice_no += 1
            continue
        for i, fr in enumerate(frames):
            try:
                if fr.ndim == 2:
                    u8 = apply_window(fr, payload["window"], header)
                    if mono1:
                        u8 = 255 - u8
                else:
                    u8 = fr
                yield sample_row(u8, f, i, group_id=group, slice_index=slice_no if len(frames) == 1 else i,
                                 source_hash=digest, max_pixels=opts.max_pixels)
            except SampleError as err:
                yield Bad(err, f, i)
        slice_no += 1


# ------------------------------------------------------------------------- NIfTI
def _declared_size_problem(f: str, img) -> str | None:
    """Why the voxel data that a NIfTI header declares cannot be in the file (None when it can):
    checked on the header, so a bomb header never allocates or plans millions of slices."""
    hdr = img.header
    nbytes = math.prod(img.shape) * np.dtype(hdr.get_data_dtype()).itemsize
    offset = int(getattr(img.dataobj, "offset", 0) or 0)  # where nibabel reads the voxels from
    need = offset + nbytes
    size = os.path.getsize(f)
    if not f.endswith(".gz"):
        return None if need <= size else \
            f"header declares {nbytes} bytes of voxels at offset {offset}; the file has {size}"
    with open(f, "rb") as fh:  # gzip trailer: ISIZE = uncompressed size mod 2^32 (RFC 1952)
        fh.seek(max(size - 4, 0))
        isize = int.from_bytes(fh.read(4), "little")
    if (need < 1 << 32 and need > isize) or (need >= 1 << 32 and need % (1 << 32) != isize):
        return f"header declares {need} uncompressed bytes; the gzip stream holds {isize}"
    return None


def plan_nifti(src, partition_size: int, max_pixels: int | None = None, max_voxels: int | None = None) -> list[dict]:
    """Partitions of slices along ``axis``. A 4-D (or higher) file is a series of 3-D volumes: every volume
    is sliced (payload ``volumes`` = [t0, t1); rows carry ``#volume_index=<t>`` on the source_uri, and a
    group per volume, so adjacent-slice pairs never cross volumes). A file whose
    header cannot be read, declares more data than it holds, no voxels, or slices over ``max_pixels`` is
    one quarantine row (reason in the payload); ``axis: 3`` is an error (exit 2): it is the volume axis."""
    try:
        import nibabel as nib
    except ImportError:
        raise ConfigError("NIfTI sources need nibabel: pip install 'curate[medical]'") from None
    files, skipped = _walk(src.path, lambda name: name.endswith((".nii", ".nii.gz")))
    out = [{"kind": "nifti", "skipped": skipped, "start": 0, "stop": 0, "axis": src.axis}] if skipped else []
    for f in sorted(files):
        def bad(reason: str, detail: str) -> dict:
            return {"kind": "nifti", "path": f, "start": 0, "stop": 1, "axis": src.axis, "bad": [reason, detail]}

        try:
            img = nib.load(f)
            shape = tuple(int(x) for x in img.shape)
            problem = _declared_size_problem(f, img)
        except Exception as err:  # noqa: BLE001 - one quarantine row for the file
            out.append(bad("unreadable_nifti", f"cannot read the NIfTI header ({type(err).__name__}: {err})"))
            continue
        if len(shape) >= 4 and src.axis == 3:
            raise ConfigError(f"{f}: axis 3 is the volume (time) axis of this {len(shape)}-D image of shape {shape}; "
                              f"slice along a spatial axis (axis: 0, 1 or 2): every volume is ingested")
        if src.axis >= len(shape) or len(shape) < 3:
            raise ConfigError(f"{f}: axis {src.axis} out of range for a volume of shape {shape}; "
                              f"use axis 0..{min(len(shape), 3) - 1} (a NIfTI source needs 3-D volumes)")
        if problem:
            out.append(bad("truncated", problem))
            continue
        if math.prod(shape) == 0:
            out.append(bad("empty_volume", f"volume of shape {shape} holds no voxels"))
            continue
        plane = math.prod(shape[:3]) // shape[src.axis]
        if max_pixels and plane > max_pixels:
            out.append(bad("too_large", f"slices of {plane} pixels (shape {shape}) exceed max_pixels={max_pixels}"))
            continue
        voxels = math.prod(shape[:3])
        if max_voxels and voxels > max_voxels:  # a gzip bomb can declare a volume that fits its ISIZE
            out.append(bad("too_large", f"a volume of {voxels} voxels (shape {shape}) exceeds max_voxels={max_voxels}"))
            continue
        n, volumes = shape[src.axis], math.prod(shape[3:])
        base = {"kind": "nifti", "path": f, "axis": src.axis, "window": src.window, "drop_empty": src.drop_empty}
        if len(shape) == 3:
            out += [{**base, "start": s, "stop": min(n, s + partition_size)} for s in range(0, n, partition_size)]
        elif n >= partition_size:  # one volume per partition, its slices chunked
            out += [{**base, "volumes": [t, t + 1], "start": s, "stop": min(n, s + partition_size)}
                    for t in range(volumes) for s in range(0, n, partition_size)]
        else:  # whole volumes per partition: a .nii.gz is inflated once per partition, not once per volume
            per = max(1, min(partition_size // n, (max_voxels or voxels) // voxels))  # bounded memory
            out += [{**base, "volumes": [t, min(volumes, t + per)], "start": 0, "stop": n}
                    for t in range(0, volumes, per)]
    if not out:
        raise ConfigError(f"{src.path}: no .nii / .nii.gz files found")
    return out


def _volume_window(vol: np.ndarray, window) -> tuple[float, float]:
    if isinstance(window, str) and window in WINDOWS:
        return WINDOWS[window]
    if isinstance(window, (list, tuple)):
        return float(window[0]), float(window[1])
    finite = vol[np.isfinite(vol)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo + hi) / 2, max(float(hi - lo), 1e-6)


def read_nifti(payload: dict, opts: ReadOptions) -> Iterator:
    import nibabel as nib

    if "skipped" in payload:
        yield from _skipped(payload)
        return
    f = payload["path"]
    if payload.get("bad"):
        reason, detail = payload["bad"] if isinstance(payload["bad"], list) else ("unreadable_nifti", "bad header")
        yield Bad(SampleError(reason, detail), f)
        return
    span = payload.get("volumes")  # [t0, t1) of a 4-D+ file; None for a 3-D one
    try:
        digest, _ = file_sha256(f)
        img = nib.load(f)
        if span is None:
            vols = [(None, np.asarray(img.dataobj, dtype=np.float32))]
        else:
            shape = tuple(int(x) for x in img.shape)
            if span[1] - span[0] == 1:  # one volume: read only it (an uncompressed file is memory-mapped)
                idx = np.unravel_index(span[0], shape[3:], order="F")  # as the reshape below
                vols = [(span[0], np.asarray(img.dataobj[(slice(None),) * 3 + tuple(int(i) for i in idx)],
                                             dtype=np.float32))]
            else:
                if len(shape) == 4:  # only this partition's volumes
                    data = np.asarray(img.dataobj[..., span[0]:span[1]], dtype=np.float32)
                    vols = [(t, data[..., t - span[0]]) for t in range(*span)]
                else:
                    data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:3] + (-1,), order="F")
                    vols = [(t, data[..., t]) for t in range(*span)]
    except Exception as err:  # noqa: BLE001
        uris = [f] if span is None else [f"{f}#volume_index={t}" for t in range(*span)]
        for uri in uris:
            yield Bad(SampleError("unreadable_nifti", f"cannot read NIfTI volume ({type(err).__name__}: {err})"), uri)
        return
    for t, vol in vols:
        yield from _nifti_slices(payload, opts, f, t, vol, digest)


def _nifti_slices(payload: dict, opts: ReadOptions, f: str, t: int | None, vol: np.ndarray, digest: str) -> Iterator:
    uri = f if t is None else f"{f}#volume_index={t}"
    if vol.ndim != 3:
        yield Bad(SampleError("bad_shape", f"volume of shape {vol.shape} is not 3-D"), uri)
        return
    window = _volume_window(vol, payload["window"])
    group = salted_group(opts.group_salt, "nifti", os.path.abspath(f), *([] if t is None else [t]))
    for k in range(payload["start"], payload["stop"]):
        sl = np.take(vol, k, axis=payload["axis"])
        try:
            if payload["drop_empty"] and (np.nanmax(sl) == np.nanmin(sl) if np.isfinite(sl).any() else True):
                if not np.isfinite(sl).all():
                    raise SampleError("nan_values", f"slice {k} along axis {payload['axis']} has only NaN/inf values")
                raise SampleError("empty_slice", f"slice {k} along axis {payload['axis']} is constant (dropped)")
            u8 = apply_window(sl, list(window))
            yield sample_row(np.rot90(u8), uri, k, group_id=group, slice_index=k, source_hash=digest,
                             max_pixels=opts.max_pixels)
        except SampleError as err:
            yield Bad(err, uri, k)
