"""Parquet files with an image-bytes column (encoded PNG/JPEG/..., or a Hugging Face
``{bytes, path}`` struct) and optional label / text / group columns."""

from __future__ import annotations

import os
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

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


def _check_types(f: str, schema: pa.Schema, src) -> str | None:
    """Exit 2 for a column of the wrong type; return the label kind: 'int', 'float', 'str' or None."""
    image = schema.field(src.image_column).type
    ok = (pa.types.is_binary(image) or pa.types.is_large_binary(image)
          or (pa.types.is_struct(image) and image.get_field_index("bytes") >= 0
              and (pa.types.is_binary(image.field("bytes").type) or pa.types.is_large_binary(image.field("bytes").type))))
    if not ok:
        binary = [n for n in schema.names if pa.types.is_binary(schema.field(n).type)
                  or pa.types.is_large_binary(schema.field(n).type) or pa.types.is_struct(schema.field(n).type)]
        raise ConfigError(f"{f}: image column '{src.image_column}' has type {image}, but it must hold encoded image "
                          f"bytes (binary, or a {{bytes, path}} struct as Hugging Face writes); fix: set image_column "
                          f"to the column with the image bytes" + (f" (candidates: {binary})" if binary else ""))
    if src.text_column:
        t = schema.field(src.text_column).type
        t = t.value_type if pa.types.is_dictionary(t) else t
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise ConfigError(f"{f}: text column '{src.text_column}' has type {t}; it must be a string column")
    if not src.label_column:
        return None
    t = schema.field(src.label_column).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    raise ConfigError(f"{f}: label column '{src.label_column}' has type {t}; labels must be integers (class ids) "
                      f"or strings (class names, mapped to ids in sorted order, kept as label_name)")


def plan(src, partition_size: int) -> list[dict]:
    """Partitions of ``partition_size`` rows. String labels are mapped to ids by the sorted set of names
    over every file of the source (so an id never depends on the partitioning); the names go with the
    payload and each row keeps its ``label_name``."""
    out, kinds, names = [], set(), set()
    for f in _files(src.path):
        try:
            meta = pq.ParquetFile(f)
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"{f}: not a readable Parquet file ({err})") from None
        names_ = meta.schema_arrow.names
        for col in [src.image_column, src.label_column, src.text_column, src.group_column]:
            if col and col not in names_:
                raise ConfigError(f"{f}: column '{col}' not found; columns are {names_}")
        kind = _check_types(f, meta.schema_arrow, src)
        kinds.add(kind)
        if kind == "str":
            col = pq.read_table(f, columns=[src.label_column]).column(0)
            names |= {v for v in col.to_pylist() if v is not None}
        n = meta.metadata.num_rows
        out += [{"path": f, "start": s, "stop": min(n, s + partition_size)} for s in range(0, n, partition_size)]
    if "str" in kinds and len(kinds - {None}) > 1:
        raise ConfigError(f"{src.path}: label column '{src.label_column}' holds strings in some files and numbers "
                          f"in others; use one type in every file")
    if "str" in kinds:
        for part in out:
            part["label_names"] = sorted(names)
    return out


def _label(value, names: dict[str, int] | None, i: int) -> tuple[int | None, str | None]:
    if value is None:
        return None, None
    if names is not None:
        return names[value], value
    if isinstance(value, float):
        if value != value:  # NaN: no label
            return None, None
        if not value.is_integer():
            raise SampleError("bad_label", f"label {value!r} is not a whole number (class id)")
    return int(value), None


def read(payload: dict, opts: ReadOptions, src) -> Iterator:
    cols = [c for c in (src.image_column, src.label_column, src.text_column, src.group_column) if c]
    start, stop = payload["start"], payload["stop"]
    try:  # only the row groups of this partition; page CRCs verified where the writer stored them
        pf = pq.ParquetFile(payload["path"], page_checksum_verification=True)
        groups, first, at = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if at < stop and at + n > start:
                groups.append(g)
                first = at if first is None else first
            at += n
        table = pf.read_row_groups(groups, columns=cols) if groups else pf.schema_arrow.empty_table().select(cols)
        table = table.slice(start - (first or 0), stop - start)
    except (OSError, pa.ArrowException) as err:  # a damaged page / footer: every row of the partition, counted
        for i in range(start, stop):
            yield Bad(SampleError("unreadable_parquet", f"row {i}: cannot read the file's pages "
                                                        f"({type(err).__name__}: {err})"), payload["path"], i)
        return
    data = table.to_pydict()
    names = {n: k for k, n in enumerate(payload["label_names"])} if "label_names" in payload else None
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
            label, label_name = _label(data[src.label_column][j] if src.label_column else None, names, i)
            arr = imaging.decode_image_bytes(raw, opts.max_pixels)
            group = data[src.group_column][j] if src.group_column else None
            yield sample_row(arr, uri, i, label=label, label_name=label_name,
                             text=data[src.text_column][j] if src.text_column else None,
                             group_id=None if group is None else salted_group(opts.group_salt, group))
        except SampleError as err:
            yield Bad(SampleError(err.reason, f"row {i}: {err.detail}"), uri, i)
