"""Medical checks: near-blank slices, padding-only frames (every source) and DICOM burned-in text.

* **near_blank** score = share of pixels whose luma differs from the image's most common value by more
  than ``tolerance`` gray levels (default 10) - the content share of a slice that is mostly air or
  background; flag < 0.01 (less than 1 % content).
* **padding_only** score = (max - min) / 255 of the luma; flag < 0.002, i.e. a constant frame (all
  padding value, e.g. an empty multi-frame DICOM frame or a NIfTI slice outside the body).
* **burned_in_annotation**: the DICOM attribute BurnedInAnnotation (0028,0301) is "YES": the pixels
  carry text (often patient identifiers). Read from the source file's header only (no pixel data);
  null for samples that are not DICOM. Score 0 when YES, 1 otherwise (flag < 0.5).
"""

from __future__ import annotations

import numpy as np


def near_blank_score(hist: np.ndarray, tolerance: int = 10) -> np.ndarray:
    """From (B, 256) luma histograms: share of pixels farther than ``tolerance`` from the modal value."""
    mode = hist.argmax(axis=1)
    cum = np.concatenate([np.zeros((len(hist), 1), np.int64), np.cumsum(hist, axis=1)], axis=1)
    rows = np.arange(len(hist))
    lo, hi = np.clip(mode - tolerance, 0, 255), np.clip(mode + tolerance, 0, 255)
    near = cum[rows, hi + 1] - cum[rows, lo]
    total = cum[:, -1]
    return 1.0 - near / np.maximum(total, 1)


def padding_score(hist: np.ndarray) -> np.ndarray:
    """(max - min) / 255 from (B, 256) luma histograms."""
    nz = hist > 0
    hi = 255 - np.argmax(nz[:, ::-1], axis=1)
    lo = np.argmax(nz, axis=1)
    return (hi - lo) / 255.0


def is_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def header_tags(path: str, tags: tuple[str, ...]) -> dict[str, str] | None:
    """Selected header attributes of a DICOM file (pixel data never read); None if not DICOM / unreadable.

    Values are returned to the caller only; callers hash identifiers before anything is written.
    """
    if not is_dicom(path):
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(tags))
    except Exception:  # noqa: BLE001 - an unreadable header simply has no tags
        return None
    return {t: str(ds.get(t, "") or "") for t in tags}


def burned_in(paths: list[str]) -> np.ndarray:
    """Per path: 1.0 YES, 0.0 NO / absent, NaN when not a DICOM file (header read once per file)."""
    cache: dict[str, float] = {}
    out = np.empty(len(paths))
    for i, p in enumerate(paths):
        if p not in cache:
            tags = header_tags(p, ("BurnedInAnnotation",))
            cache[p] = np.nan if tags is None else float(tags["BurnedInAnnotation"].strip().upper() == "YES")
        out[i] = cache[p]
    return out
