"""Shared fixtures: tiny real files with known answers."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one torch thread, and CI's two cores are shared with Dask workers."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_idx(path: str, arr: np.ndarray) -> str:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())
    return path


def read_run_table(run_dir, stage_dir: str, table: str | None = None) -> pa.Table:
    d = os.path.join(str(run_dir), stage_dir, table or "")
    files = sorted(f for f in os.listdir(d) if f.startswith("part-") and f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(d, f)) for f in files])


@pytest.fixture
def idx_dataset(tmp_path):
    """An IDX image/label pair of 300 random 8x8 images with labels 0..9."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 8, 8), dtype=np.uint8)
    labels = (np.arange(300) % 10).astype(np.uint8)
    img = write_idx(str(tmp_path / "train-images-idx3-ubyte.gz"), images)
    lab = write_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), labels)
    return img, lab, images, labels


def idx_pipeline(img: str, lab: str, partition_size: int = 50, **extra) -> dict:
    return {"name": "t", "stages": [{"stage": "ingest", "partition_size": partition_size,
                                     "sources": [{"type": "idx", "images": img, "labels": lab}], **extra}]}
