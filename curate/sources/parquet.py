"""Parquet files with an image-bytes column (encoded PNG/JPEG/..., or a Hugging Face
``{bytes, path}`` struct) and optional label / text / group columns."""

from __future__ import annotations

import io
import os
from typing import Iterator

import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from curate import imaging
from curate.errors import ConfigError, SampleError
from curate.samples import sample_row
from curate.sources import Bad, ReadOptions, salted_group


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".parquet"))
        if not files:
            raise ConfigError(f"{path}: directory holds no .parquet files")
        return files
    return [path]


def plan(src, partition_size: int) -> list[dict]:
    out = []
    for f in _files(src.path):
        try:
            meta = pq.ParquetFile(f)
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"{f}: not a readable Parquet file ({err})") from None
        names = meta.schema_arrow.names
        for col in [src.image_column, src.label_column, src.text_column, src.group_column]:
            if col and col not in names:
                raise ConfigError(f"{f}: column '{col}' not found; columns are {names}")
        n = meta.metadata.num_rows
        out += [{"path": f, "start": s, "stop": min(n, s + partition_size)} for s in range(0, n, partition_size)]
    return out


def read(payload: dict, opts: ReadOptions, src) -> Iterator:
    cols = [c for c in (src.image_column, src.label_column, src.text_column, src.group_column) if c]
    table = pq.read_table(payload["path"], columns=cols).slice(payload["start"], payload["stop"] - payload["start"])
    data = table.to_pydict()
    for j in range(table.num_rows):
        i = payload["start"] + j
        raw = data[src.image_column][j]
        if isinstance(raw, dict):
            raw = raw.get("bytes")
        uri = payload["path"]
        if not raw:
            yield Bad(SampleError("empty_file", f"row {i}: image column is null or empty"), uri, i)
            continue
        try:
            with Image.open(io.BytesIO(raw)) as img:
                w, h = img.size
                if opts.max_pixels and w * h > opts.max_pixels:
                    raise SampleError("too_large", f"{h}x{w} pixels exceeds max_pixels={opts.max_pixels}")
                img.load()
                arr = imaging.from_pil(img, opts.max_pixels)
            label = data[src.label_column][j] if src.label_column else None
            group = data[src.group_column][j] if src.group_column else None
            yield sample_row(arr, uri, i, label=None if label is None else int(label),
                             text=data[src.text_column][j] if src.text_column else None,
                             group_id=None if group is None else salted_group(opts.group_salt, group))
        except SampleError as err:
            yield Bad(err, uri, i)
        except UnidentifiedImageError:
            yield Bad(SampleError("not_an_image", f"row {i}: bytes are not a readable image"), uri, i)
        except (OSError, SyntaxError, ValueError) as err:
            yield Bad(SampleError("corrupt_image", f"row {i}: {err}"), uri, i)
