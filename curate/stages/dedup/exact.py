"""``dedup.exact``: identical canonical pixels or identical source files -> one kept.

Two rows are exact duplicates when their canonical decoded pixels are equal
(``pixel_hash``: BLAKE2b of shape + pixels, so a PNG and a lossless re-encode
match) or when they come from byte-identical source files at the same position
(``source_hash`` + ``source_index``: the same DICOM file copied twice; the index
keeps different slices of one volume file apart). Groups are the connected
components of both relations; in each, the first row in source order
(``source_uri``, ``source_index``, ``sample_id``) is kept and the others are
removed in its favour with score 1.0. This is a global stage: duplicates cross
partitions. ``map`` projects the key columns, ``reduce`` groups them.

YAML::

    - stage: dedup.exact
      pixels: true         # identical canonical pixels
      source_bytes: true   # identical source file bytes (same source_index)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curate.config import StageParams
from curate.ops import unionfind
from curate.stage import GlobalStage, StageContext
from curate.stages.dedup._decisions import concat_mapped, decisions_table, source_rank

METHOD = "exact"


class ExactParams(StageParams):
    pixels: bool = Field(True, description="rows with identical canonical pixels (pixel_hash) are duplicates")
    source_bytes: bool = Field(True, description="rows from byte-identical source files at the same "
                                                 "source_index (source_hash) are duplicates")

    @model_validator(mode="after")
    def _one_key(self) -> "ExactParams":
        if not (self.pixels or self.source_bytes):
            raise ValueError("dedup.exact needs `pixels: true` or `source_bytes: true` (both false finds nothing)")
        return self


class ExactDedup(GlobalStage):
    key = "dedup.exact"
    version = "1"
    Params = ExactParams
    inputs = ("samples",)
    outputs = ("decisions",)
    map_schema = pa.schema([
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("pixel_hash", pa.string(), nullable=False),
        pa.field("source_hash", pa.string()),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_index", pa.int64(), nullable=False),
    ])

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        return table.select(self.map_schema.names)

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, pa.Table]:
        p: ExactParams = self.params
        table, part = concat_mapped(ctx, mapped, self.map_schema)
        n = table.num_rows
        pix = np.array(table.column("pixel_hash").to_pylist(), dtype=object)
        src_hash = table.column("source_hash").to_pylist()
        src_idx = table.column("source_index").to_pylist()
        file_key = np.array([f"{h}|{i}" if h is not None else None for h, i in zip(src_hash, src_idx)], dtype=object)
        srcs, dsts = [], []
        if p.pixels:
            s, d = unionfind.components_by_key(pix.astype(str))
            srcs.append(s), dsts.append(d)
        if p.source_bytes:
            has = np.flatnonzero(file_key != None)  # noqa: E711 - elementwise on an object array
            if has.size:
                s, d = unionfind.components_by_key(file_key[has].astype(str))
                srcs.append(has[s]), dsts.append(has[d])
        labels = unionfind.components(n, np.concatenate(srcs) if srcs else [], np.concatenate(dsts) if dsts else [])
        rep, keep, size = unionfind.keep_first(labels, source_rank(table))
        reasons = np.empty(n, dtype=object)
        same_pix = pix == pix[rep]
        same_file = (file_key == file_key[rep]) & (file_key != None)  # noqa: E711
        reasons[same_pix] = "identical pixels to representative"
        reasons[~same_pix & same_file] = "identical source file to representative"
        reasons[~same_pix & ~same_file] = "linked to representative through identical pixels / source files"
        score = np.ones(n)
        ctx.count("removed", int((~keep).sum()))
        ctx.count("duplicate_groups", int(((size > 1) & keep).sum()))
        return decisions_table(ctx, table, part, METHOD, rep, keep, rep, score, reasons, "identical copies")
