"""Tiny real data with known duplicates for the hash dedup tests, and a source stage that emits it.

* base images: the pydicom test CT (128x128) and MR (64x64) slices plus smooth
  random fields - unrelated to each other;
* transformed copies of one base image: JPEG quality 95 re-encode, resize,
  a small crop, a brightness shift;
* adjacent slices of a real MR volume (pydicom ``emri_small.dcm``).
"""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file

from curate import imaging, registry
from curate.config import StageParams
from curate.samples import sample_row, samples_table
from curate.stage import Partition, SourceStage


def smooth_field(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random 8-bit image (low-frequency noise upsampled), unrelated across seeds."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC))


def ct_slice() -> np.ndarray:
    return imaging.to_uint8(dcmread(get_testdata_file("CT_small.dcm")).pixel_array)


def mr_volume() -> np.ndarray:
    return np.stack([imaging.to_uint8(f) for f in dcmread(get_testdata_file("emri_small.dcm")).pixel_array])


def jpeg95(img: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def resized(img: np.ndarray, factor: float = 0.75) -> np.ndarray:
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((int(w * factor), int(h * factor)), Image.Resampling.BILINEAR))


def cropped(img: np.ndarray, frac: float = 0.03) -> np.ndarray:
    h, w = img.shape[:2]
    dy, dx = max(1, int(h * frac)), max(1, int(w * frac))
    return np.ascontiguousarray(img[dy:h - dy, dx:w - dx])


def brighter(img: np.ndarray, delta: int = 20) -> np.ndarray:
    return np.clip(img.astype(np.int16) + delta, 0, 255).astype(np.uint8)


def write_partitions(path: str, parts: dict[str, list[dict]]) -> str:
    """Write ``parts`` as a directory of ``<pid>.parquet`` samples tables (no pickle anywhere)."""
    os.makedirs(path, exist_ok=True)
    for pid, rows in parts.items():
        pq.write_table(samples_table(rows), os.path.join(path, f"{pid}.parquet"))
    return path


def rows_for(images: list[np.ndarray], uri: str = "memory://t", **columns) -> list[dict]:
    out = []
    for i, img in enumerate(images):
        extra = {k: v[i] for k, v in columns.items()}
        out.append(sample_row(img, f"{uri}/{i:03d}", 0, **extra))
    return out


class TablesParams(StageParams):
    path: str


class TablesSource(SourceStage):
    """Emits the samples tables of a :func:`write_partitions` directory, one per partition id (test only)."""

    key = "test.tables"
    Params = TablesParams
    outputs = ("samples",)

    def plan(self, ctx):
        return [Partition(f[: -len(".parquet")]) for f in sorted(os.listdir(self.params.path))
                if f.endswith(".parquet")]

    def read(self, partition, ctx) -> pa.Table:
        return pq.read_table(os.path.join(self.params.path, f"{partition.id}.parquet"))


registry.register("test.tables", "tests.stages.dedup._hash_fixture:TablesSource")
