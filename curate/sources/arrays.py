"""Array files: NumPy ``.npz`` with ``<split>_images`` / ``<split>_labels`` (the
MedMNIST layout) and IDX files (the MNIST / Fashion-MNIST layout, optionally gzipped)."""

from __future__ import annotations

import functools
import gzip
import os
import struct
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
    except (OSError, EOFError) as err:
        raise ConfigError(f"{path}: cannot read IDX file ({err}); check the path and that it is not truncated") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ConfigError(f"{path}: not an IDX file (bad magic number); expected e.g. train-images-idx3-ubyte[.gz]")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    dims = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) < expected:
        raise ConfigError(f"{path}: IDX file truncated ({len(body)} of {expected} data bytes)")
    return np.frombuffer(body, dtype=dtype, count=int(np.prod(dims))).reshape(dims)


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


def plan_npz(src, partition_size: int) -> list[dict]:
    out = []
    for split in npz_splits(src.path, src.splits):
        n = len(load_npz(src.path)[f"{split}_images" if split else "images"])
        out += [{"kind": "npz", "path": src.path, "split": split, "start": s, "stop": min(n, s + partition_size)}
                for s in range(0, n, partition_size)]
    return out


def plan_idx(src, partition_size: int) -> list[dict]:
    n = len(load_idx(src.images))
    if src.labels:
        m = len(load_idx(src.labels))
        if m != n:
            raise ConfigError(f"{src.labels}: {m} labels for {n} images in {src.images}")
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
            label = int(lab[0]) if lab.size else None
        try:
            yield sample_row(images[i], uri, i, label=label, max_pixels=opts.max_pixels)
        except SampleError as err:
            yield Bad(err, uri, i)
