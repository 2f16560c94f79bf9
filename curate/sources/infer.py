"""Guess an ingest source spec from a path (for `curate ingest PATH...`)."""

from __future__ import annotations

import itertools
import os

from curate.errors import ConfigError


def _looks_dicom(path: str) -> bool:
    if not os.path.isfile(path):  # never open a FIFO / socket / device: it would block
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return head[128:132] == b"DICM" or path.lower().endswith(".dcm")
    except OSError:
        return False


def infer_source(path: str) -> dict:
    if not os.path.exists(path):
        raise ConfigError(f"source '{path}' does not exist; pass an existing file or directory")
    low = path.lower()
    if os.path.isfile(path):
        if low.endswith(".npz"):
            return {"type": "npz", "path": path}
        if low.endswith((".nii", ".nii.gz")):
            return {"type": "nifti", "path": path}
        if low.endswith(".parquet"):
            return {"type": "parquet", "path": path}
        if "idx3-ubyte" in low:
            labels = path.replace("images-idx3", "labels-idx1")
            return {"type": "idx", "images": path, "labels": labels if os.path.exists(labels) and labels != path else None}
        if _looks_dicom(path):
            return {"type": "dicom", "path": path}
        raise ConfigError(f"cannot tell what kind of source '{path}' is; use a pipeline YAML with an explicit `type:`")
    walk = (os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    files = list(itertools.islice((p for p in walk if os.path.isfile(p)), 200))
    if files and all(f.lower().endswith((".nii", ".nii.gz")) for f in files):
        return {"type": "nifti", "path": path}
    if files and all(f.lower().endswith(".parquet") for f in files):
        return {"type": "parquet", "path": path}
    if files and sum(_looks_dicom(f) for f in files) > len(files) / 2:
        return {"type": "dicom", "path": path}
    return {"type": "folder", "path": path}
