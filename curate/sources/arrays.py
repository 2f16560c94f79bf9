"""Array files: NumPy ``.npz`` with ``<split>_images`` / ``<split>_labels`` (the
MedMNIST layout) and IDX files (the MNIST / Fashion-MNIST layout, optionally gzipped)."""

from __future__ import annotations

import functools
import gzip
import math
import os
import struct
import zlib
from typing import Iterator

import numpy as np

from curate.errors import ConfigError, SampleError
from curate.samples import sample_row
from curate.sources import Bad, ReadOptions

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@functools.lru_cache(maxsize=4)
def load_idx(path: str) -> np.ndarray:
    """Parse an IDX file (magic 0x0000 <dtype> <ndim>, big-endian int32 dims, data)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ConfigError(f"{path}: cannot read IDX file ({err}); check the path and that it is not truncated") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ConfigError(f"{path}: not an IDX file (bad magic number); expected e.g. train-images-idx3-ubyte[.gz]")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    if ndim == 0:
        raise ConfigError(f"{path}: IDX header declares 0 dimensions; an IDX file holds (N, ...) arrays")
    if len(data) < 4 + 4 * ndim:
        raise ConfigError(f"{path}: IDX header truncated ({len(data)} bytes; {ndim} dimensions need {4 + 4 * ndim})")
    dims = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    count = math.prod(dims)
    expected = count * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) < expected:
        raise ConfigError(f"{path}: IDX file truncated ({len(body)} of {expected} data bytes for shape {dims})")
    return np.frombuffer(body, dtype=dtype, count=count).reshape(dims)


@functools.lru_cache(maxsize=4)
def load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"{path}: cannot read .npz ({type(err).__name__}: {err})") from None


def npz_splits(path: str, splits: list[str] | None) -> list[str]:
    keys = load_npz(path).keys()
    found = sorted(k[: -len("_images")] for k in keys if k.endswith("_images"))
    if "images" in keys:
        found = [""] + found
    if not found:
        raise ConfigError(f"{path}: no '<split>_images' array (MedMNIST layout) or 'images' array; found {sorted(keys)}")
    if splits:
        missing = [s for s in splits if s not in found]
        if missing:
            raise ConfigError(f"{path}: splits {missing} not found; available: {found}")
        return list(splits)
    return found


def _check_images(path: str, what: str, images: np.ndarray) -> int:
    if images.ndim < 3:
        raise ConfigError(f"{path}: {what} has shape {images.shape}; images must be an (N, H, W) or (N, H, W, C) array")
    return len(images)


def _check_labels(path: str, what: str, labels: np.ndarray | None, n: int) -> None:
    """Labels must give one value per image: exit 2 naming the file when they do not (nothing is dropped)."""
    if labels is None:
        return
    if labels.ndim == 0 or len(labels) != n:
        got = "a 0-dimensional array" if labels.ndim == 0 else f"{len(labels)} labels"
        raise ConfigError(f"{path}: {what} holds {got} for {n} images; every image needs one label")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)
            or np.issubdtype(labels.dtype, np.floating)):
        raise ConfigError(f"{path}: {what} has dtype {labels.dtype}; labels must be integer class ids")


def plan_npz(src, partition_size: int) -> list[dict]:
    out = []
    z = load_npz(src.path)
    for split in npz_splits(src.path, src.splits):
        key = f"{split}_images" if split else "images"
        n = _check_images(src.path, f"array '{key}'", z[key])
        lkey = f"{split}_labels" if split else "labels"
        _check_labels(src.path, f"array '{lkey}'", z.get(lkey), n)
        out += [{"kind": "npz", "path": src.path, "split": split, "start": s, "stop": min(n, s + partition_size)}
                for s in range(0, n, partition_size)]
    return out


def plan_idx(src, partition_size: int) -> list[dict]:
    n = _check_images(src.images, "IDX array", load_idx(src.images))
    if src.labels:
        _check_labels(src.labels, f"IDX labels (for {src.images})", load_idx(src.labels), n)
    return [{"kind": "idx", "path": src.images, "labels": src.labels, "start": s, "stop": min(n, s + partition_size)}
            for s in range(0, n, partition_size)]


def read(payload: dict, opts: ReadOptions) -> Iterator:
    if payload["kind"] == "npz":
        z = load_npz(payload["path"])
        split = payload["split"]
        images = z[f"{split}_images" if split else "images"]
        labels = z.get(f"{split}_labels" if split else "labels")
        uri = f"{payload['path']}#{split or 'images'}"
    else:
        images = load_idx(payload["path"])
        labels = load_idx(payload["labels"]) if payload.get("labels") else None
        uri = os.path.normpath(payload["path"])
    for i in range(payload["start"], payload["stop"]):
        label = None
        if labels is not None:
            lab = np.asarray(labels[i]).reshape(-1)
            if lab.size and not np.isfinite(lab[0]):
                yield Bad(SampleError("bad_label", f"label {lab[0]} is not a class id"), uri, i)
                continue
            label = int(lab[0]) if lab.size else None
        try:
            yield sample_row(images[i], uri, i, label=label, max_pixels=opts.max_pixels)
        except SampleError as err:
            yield Bad(err, uri, i)
