"""``shard``: the kept (and synthetic) samples as size-bounded Parquet shards + ``index.json``.

mosaicml-streaming's contract: shards first, ``index.json`` (rows, bytes and
sha256 per shard, the schema, dataset metadata) written last, so a reader never
sees a half-written dataset. Samples are put in source order and shuffled once
with a seeded permutation (deterministic: same rows, same shards, same checksums,
however the work is partitioned), cut into
shards bounded by ``max_rows`` and ``max_bytes``, written with zstd and row
groups of about ``row_group_bytes`` so the loader streams a row group at a time.

Columns: image (PNG; by default a stored PNG, see curate.ops.png), sample_id, label, group_id, is_synthetic, sample_weight,
positive_ids, negative_ids (from the ``pairs`` table of mine.positives /
mine.negatives, when they ran), height, width, channels.

``sample_weight`` is 1.0, times AdaInf's real-data replication factor for real
rows when known: from the ``adainf`` param, or from the ``adainf`` table of an
upstream ``inflate.adainf`` stage (columns ``real_replication``,
``augmentation`` JSON, read when present). The factor is baked into the weights
so the loader honours it with no extra knob; the index's metadata records it
together with the augmentation recommendation.

Output per partition: the placement of each of its samples (sample_id, shard, row).
Shards go to ``RUN_DIR/NN_shard/shards/`` next to their ``index.json``.

No rows pass through the driver. ``map`` (one task per partition) encodes the
partition's anchor images once, into the stage's scratch space
(``ctx.scratch()``), and returns only sample_id and estimated bytes per row;
``reduce`` plans on those: rows in source order (source_uri, source_index,
sample_id; partition ids are hashes, so their order would change with the
partition size), the seeded permutation of that order and the cuts
(:func:`plan_shards`), a function of the rows, seed and limits only, so the
bytes do not depend on partition size or worker count;
one task per shard (:func:`write_range`) gathers its rows from the partitions,
joins their pairs and partner images, writes the shard and returns its
manifest; the driver assembles ``index.json`` from the manifests and writes it
last (:func:`commit_index`). The driver holds ids and sizes, never images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from curate import io, schemas
from curate.config import StageParams
from curate.errors import CurateError
from curate.ops.png import to_stored
from curate.stage import GlobalStage, StageContext

SHARD_SCHEMA = pa.schema([
    pa.field("image", pa.binary(), nullable=False),
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("label", pa.int64()),
    pa.field("group_id", pa.string()),
    pa.field("is_synthetic", pa.bool_(), nullable=False),
    pa.field("sample_weight", pa.float32(), nullable=False),
    pa.field("positive_ids", pa.list_(pa.string())),
    pa.field("negative_ids", pa.list_(pa.string())),
    # PNG of a positive partner that is not itself in the shards (a copy dedup removed); null otherwise
    pa.field("positive_images", pa.list_(pa.binary())),
    # PNGs of the first ``inline_negatives`` negatives (hardest first), stored with the anchor so triplet
    # batches need no random access across shards; null when not inlined
    pa.field("negative_images", pa.list_(pa.binary())),
    pa.field("height", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("channels", pa.int8()),
])

PLACEMENTS = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("row", pa.int64(), nullable=False),
])


class AdaInfSettings(BaseModel):
    """AdaInf mix (Zhang et al. 2024): replicate real data, weaken augmentation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    real_replication: float = Field(1.0, ge=0, description="sample_weight multiplier of real rows")
    augmentation: dict[str, float] | None = Field(
        None, description="recommended SimCLRAugment params, e.g. {crop_min_scale: 0.2, jitter_p: 0.4, jitter_strength: 0.5}")


def _plan_cuts(sizes: np.ndarray, max_rows: int, max_bytes: int) -> list[tuple[int, int]]:
    """Greedy [start, end) shard cuts over rows of ``sizes`` bytes: <= max_rows and <= max_bytes (>= 1 row).

    The row limit is first evened out over the shards it implies (20,000 rows at max_rows 16,384 give
    2 x 10,000, not 16,384 + 3,616): equal shards write in parallel and split evenly across ranks.
    """
    n = len(sizes)
    if n:
        max_rows = -(-n // -(-n // max_rows))
    cum = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    cuts, start = [], 0
    while start < n:
        end_b = int(np.searchsorted(cum, cum[start] + max_bytes, side="right")) - 1
        end = min(start + max_rows, max(end_b, start + 1), n)
        cuts.append((start, end))
        start = end
    return cuts


def write_shard(table: pa.Table, path: str, row_group_rows: int, compression: str = "zstd",
                compression_level: int | None = None, image_compression_level: int | None = 1) -> dict[str, Any]:
    """Write one shard atomically; return rows, bytes, sha256 and row-group sizes (hash of the in-memory bytes).

    ``image_compression_level`` sets zstd's level for the image columns alone (stored PNGs compress at
    level 1 to 410 bytes per Fashion-MNIST image vs 528 at -3; deflated PNGs barely change with it).
    """
    sink = pa.BufferOutputStream()
    no_dict = {"image", "sample_id", "positive_ids", "negative_ids", "positive_images", "negative_images"}
    level: Any = compression_level
    if image_compression_level is not None and compression == "zstd":
        level = {c: (image_compression_level if c in ("image", "positive_images", "negative_images")
                     else compression_level)
                 for c in table.column_names}
        if all(v is None for v in level.values()):
            level = None
        elif any(v is None for v in level.values()):
            level = {c: (1 if v is None else v) for c, v in level.items()}
    pq.write_table(table, sink, row_group_size=max(1, row_group_rows), compression=compression,
                   compression_level=level,
                   use_dictionary=[c for c in table.column_names if c not in no_dict],
                   write_statistics=[c for c in table.column_names if c not in no_dict])
    buf = sink.getvalue()
    digest = hashlib.sha256(buf).hexdigest()
    io._atomic_write(path, lambda f: f.write(buf))
    n = table.num_rows
    groups = [min(row_group_rows, n - i) for i in range(0, n, max(1, row_group_rows))] or [0]
    return {"rows": n, "bytes": buf.size, "sha256": digest, "row_groups": groups}


def thread_map(fn, items: list) -> list:
    """:func:`write_shards` (the in-memory library form) writes its shards from threads: the rows are
    already in memory, and Parquet encoding, zstd and sha256 release the GIL."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return list(pool.map(fn, items))


def _write_task(item: tuple) -> dict[str, Any]:
    table, path, rg, comp, level, img_level = item
    return write_shard(table, path, rg, comp, level, img_level)


def build_shard_table(samples: pa.Table, pairs: pa.Table | None, real_replication: float = 1.0,
                      partners: pa.Table | None = None, inline_positives: bool = False,
                      inline_negatives: int = 0, image_format: str = "stored", images: pa.Array | None = None,
                      lookup: pa.Table | None = None) -> pa.Table:
    """The shard columns for ``samples`` (any order), joining mined positive / negative ids by anchor.

    ``partners`` (sample_id, image) supplies images of positives that are not rows of ``samples``
    (always inlined); ``inline_positives`` inlines every positive's PNG, ``inline_negatives`` the PNGs of
    the first (hardest) k negatives. ``image_format="stored"`` re-encodes the anchor images as stored
    PNGs (:mod:`curate.ops.png`: Parquet's zstd compresses them, the loader decodes a row group in
    one gather); ``"source"`` keeps the ingested PNG bytes. ``images``, when given, is the anchor image
    column already in ``image_format`` (not re-encoded); ``lookup`` (sample_id, image), default
    ``samples``, is where inlined partner images of shard rows are looked up (a shard task passes the
    kept rows its partners are among, wherever they are shuffled to).
    """
    n = samples.num_rows
    ids = samples.column("sample_id")
    is_syn = samples.column("is_synthetic") if "is_synthetic" in samples.column_names else pa.array([False] * n)
    is_syn_np = np.asarray(is_syn.to_numpy(zero_copy_only=False), dtype=bool)
    w = np.where(is_syn_np, 1.0, float(real_replication)).astype(np.float32)
    pos = neg = pa.nulls(n, pa.list_(pa.string()))
    if pairs is not None and pairs.num_rows:
        pos = _ids_by_anchor(pairs.filter(pc.is_valid(pairs.column("positive_kind"))), "positive_id", ids)
        negrows = pairs.filter(pc.is_valid(pairs.column("negative_ids")))
        neg = _ids_by_anchor(negrows, "negative_ids", ids)
    src = samples if lookup is None else lookup
    pos_img = _inline_images(pos, ids, partners, src if inline_positives else None)
    neg_img = pa.nulls(n, pa.list_(pa.binary()))
    if inline_negatives > 0 and neg.null_count < n:
        neg_img = _inline_images(pc.list_slice(neg, 0, inline_negatives), ids, None, src)

    def col(name: str, typ: pa.DataType) -> pa.Array:
        return samples.column(name).cast(typ) if name in samples.column_names else pa.nulls(n, typ)

    image = encode_images(samples.column("image"), image_format) if images is None else images
    return pa.table({
        "image": image,
        "sample_id": ids.cast(pa.string()),
        "label": col("label", pa.int64()),
        "group_id": col("group_id", pa.string()),
        "is_synthetic": pa.array(is_syn_np),
        "sample_weight": pa.array(w),
        "positive_ids": pos,
        "negative_ids": neg,
        "positive_images": pos_img,
        "negative_images": neg_img,
        "height": col("height", pa.int32()),
        "width": col("width", pa.int32()),
        "channels": col("channels", pa.int8()),
    }, schema=SHARD_SCHEMA)


def encode_images(column, image_format: str) -> pa.Array:
    """The anchor image column of a shard: stored PNGs (``"stored"``) or the ingested bytes (``"source"``)."""
    image = column.cast(pa.binary())
    if image_format == "stored":
        return to_stored(image)
    if image_format != "source":
        raise CurateError(f"shard: image_format must be 'stored' or 'source', got '{image_format}'")
    return image.combine_chunks() if isinstance(image, pa.ChunkedArray) else image


def _inline_images(ids_list: pa.Array, ids: pa.ChunkedArray, partners: pa.Table | None,
                   samples: pa.Table | None = None) -> pa.Array:
    """list<binary> aligned with ``ids_list``: a partner's PNG when it is not a shard row (from ``partners``),
    or any partner's PNG when ``samples`` (sample_id, image) is given (looked up there first); null otherwise."""
    n = len(ids_list)
    if ids_list.null_count == n:
        return pa.nulls(n, pa.list_(pa.binary()))
    if isinstance(ids_list, pa.ChunkedArray):
        ids_list = ids_list.combine_chunks()
    flat = pc.list_flatten(ids_list)
    imgs = pa.nulls(len(flat), pa.binary())
    if partners is not None and partners.num_rows:
        j = pc.index_in(flat, value_set=partners.column("sample_id").combine_chunks())
        imgs = pc.take(partners.column("image").combine_chunks().cast(pa.binary()), j)
    if samples is not None:
        j = pc.index_in(flat, value_set=samples.column("sample_id").combine_chunks())
        own = pc.take(samples.column("image").combine_chunks().cast(pa.binary()), j)
        imgs = pc.coalesce(own, imgs)
    else:
        inside = pc.is_in(flat, value_set=ids.combine_chunks())
        imgs = pc.if_else(inside, pa.scalar(None, pa.binary()), imgs)
    offsets = ids_list.offsets
    offsets = pc.subtract(offsets, offsets[0])  # a sliced list array's offsets need not start at 0
    return pa.ListArray.from_arrays(offsets, imgs, mask=pc.is_null(ids_list))


def _ids_by_anchor(pairs: pa.Table, column: str, ids: pa.ChunkedArray) -> pa.Array:
    """list<string> per sample of ``ids``: the ``column`` values (flattened) of pairs rows anchored at it."""
    if pairs.num_rows == 0:
        return pa.nulls(len(ids), pa.list_(pa.string()))
    vals = pairs.column(column).combine_chunks()
    anchors = pairs.column("anchor_id").combine_chunks()
    if pa.types.is_list(vals.type):
        anchors = pc.take(anchors, pc.list_parent_indices(vals))
        vals = pc.list_flatten(vals)
    t = pa.table({"a": anchors, "v": vals}).filter(pc.is_valid(vals))
    t = t.group_by("a", use_threads=False).aggregate([("v", "list")])
    idx = pc.index_in(ids, value_set=t.column("a").combine_chunks())
    out = pc.take(t.column("v_list").combine_chunks(), idx)
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def plan_shards(sizes: np.ndarray, *, seed: int = 0, shuffle: bool = True, max_rows: int = 65536,
                max_bytes: int = 256 << 20, row_group_bytes: int = 4 << 20,
                row_group_max_rows: int = 4096) -> tuple[np.ndarray, list[tuple[str, int, int, int]]]:
    """The deterministic shard layout of ``n = len(sizes)`` rows (``sizes``: estimated bytes per row, in
    input order): the permutation (row ``perm[j]`` of the input is row ``j`` of the shuffled order) and the
    shards as (name, start, end, row-group rows) over the shuffled order. Depends on sizes, seed and limits
    only, never on how the rows are partitioned."""
    n = len(sizes)
    perm = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    s = np.asarray(sizes, np.int64)[perm]
    plan = []
    for i, (a, b) in enumerate(_plan_cuts(s, max_rows, max_bytes)):
        avg = max(1.0, float(s[a:b].mean()))
        plan.append((f"shard-{i:05d}.parquet", a, b, int(max(1, min(row_group_max_rows, row_group_bytes // avg)))))
    return perm, plan


def row_sizes(images) -> np.ndarray:
    """The per-row size estimate the shard cuts use: encoded image bytes + 64."""
    return pc.binary_length(images).to_numpy(zero_copy_only=False).astype(np.int64) + 64


def placements_of(ids, perm: np.ndarray, plan: list[tuple[str, int, int, int]]) -> pa.Table:
    """(sample_id, shard, row) of every input row, in input order."""
    n = len(perm)
    shard_of, row_in = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i, (_, a, b, _) in enumerate(plan):
        shard_of[perm[a:b]] = i
        row_in[perm[a:b]] = np.arange(b - a)
    names = np.asarray([x[0] for x in plan], dtype=object)
    return pa.table({"sample_id": pa.array(ids, pa.string()) if not isinstance(ids, (pa.Array, pa.ChunkedArray))
                     else ids,
                     "shard": pa.array(names[shard_of] if n else [], pa.string()),
                     "row": pa.array(row_in, pa.int64())}, schema=PLACEMENTS)


def shard_stats(table: pa.Table) -> dict[str, int]:
    """The per-shard counts index.json's metadata sums (SHARD_SCHEMA table)."""
    n = table.num_rows
    w = table.column("sample_weight").to_numpy(zero_copy_only=False)
    return {"synthetic": int(pc.sum(table.column("is_synthetic").cast(pa.int64())).as_py() or 0),
            "labelled": int(n - table.column("label").null_count),
            "with_positives": int(n - table.column("positive_ids").null_count),
            "with_negatives": int(n - table.column("negative_ids").null_count),
            "non_unit_weights": int(np.count_nonzero(w != 1.0))}


def commit_index(out_dir: str, shards: list[dict[str, Any]], stats: list[dict[str, int]], *, seed: int,
                 shuffle: bool, metadata: dict[str, Any] | None = None,
                 schema: pa.Schema = SHARD_SCHEMA) -> dict[str, Any]:
    """Assemble index.json from the shards' manifests (path, rows, bytes, sha256, row_groups) and their
    :func:`shard_stats`, write it atomically (after every shard is in place), then drop shards of an earlier,
    larger run. Returns the index."""
    tot = {k: sum(s[k] for s in stats) for k in ("synthetic", "labelled", "with_positives", "with_negatives",
                                                  "non_unit_weights")}
    index = {
        "format": schemas.SHARD_FORMAT,
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_samples": sum(s["rows"] for s in shards),
        "num_shards": len(shards),
        "shards": shards,
        "schema": [{"name": f.name, "type": str(f.type)} for f in schema],
        "metadata": {
            "seed": seed,
            "shuffled": shuffle,
            "uniform_weights": tot["non_unit_weights"] == 0,
            "synthetic": tot["synthetic"],
            "labelled": tot["labelled"],
            "with_positives": tot["with_positives"],
            "with_negatives": tot["with_negatives"],
            **(metadata or {}),
        },
    }
    io.write_json(index, io.join(out_dir, schemas.SHARD_INDEX_NAME))
    fs, p = io.fs_and_path(out_dir)
    keep = {s["path"] for s in shards} | {schemas.SHARD_INDEX_NAME}
    for f in fs.ls(p, detail=False):
        base = f.rsplit("/", 1)[-1]
        if base.startswith("shard-") and base.endswith(".parquet") and base not in keep:
            fs.rm(f)
    return index


def write_shards(table: pa.Table, out_dir: str, *, seed: int = 0, shuffle: bool = True, max_rows: int = 65536,
                 max_bytes: int = 256 << 20, row_group_bytes: int = 4 << 20, row_group_max_rows: int = 4096,
                 compression: str = "zstd", compression_level: int | None = 1, image_compression_level: int | None = 1,
                 metadata: dict[str, Any] | None = None, mapper=None) -> tuple[dict[str, Any], pa.Table]:
    """Shuffle, cut and write an in-memory ``table`` (SHARD_SCHEMA) under ``out_dir``; write index.json last.

    The library form of the ``shard`` stage (which writes the same bytes from worker tasks, never holding
    the rows in one process). Returns (the index dict, placements: sample_id, shard, row in the order of
    ``table``).
    """
    perm, plan = plan_shards(row_sizes(table.column("image")), seed=seed, shuffle=shuffle, max_rows=max_rows,
                             max_bytes=max_bytes, row_group_bytes=row_group_bytes,
                             row_group_max_rows=row_group_max_rows)
    shuffled = table.take(pa.array(perm)) if shuffle else table
    items = [(shuffled.slice(a, b - a), io.join(out_dir, name), rg, compression, compression_level,
              image_compression_level) for name, a, b, rg in plan]
    mapper = mapper or thread_map
    results = mapper(_write_task, items) if len(items) > 1 else [_write_task(x) for x in items]
    shards = [{"path": name, **r} for (name, *_), r in zip(plan, results)]
    stats = [shard_stats(it[0]) for it in items]
    index = commit_index(out_dir, shards, stats, seed=seed, shuffle=shuffle, metadata=metadata,
                         schema=table.schema)
    return index, placements_of(table.column("sample_id"), perm, plan)


_COLS = ["sample_id", "image", "label", "group_id", "is_synthetic", "height", "width", "channels"]

PLAN_SCHEMA = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string()),  # with source_index and sample_id: the canonical (source) order
    pa.field("source_index", pa.int64()),
    pa.field("size", pa.int64(), nullable=False),  # encoded image bytes + 64: the cut estimate
])


class Shard(GlobalStage):
    """Write training shards + index.json from the kept samples (and mined pairs)."""

    key: ClassVar[str] = "shard"
    version: ClassVar[str] = "3"  # 2: stored PNGs with the Up filter; 3: shuffle of the source order
    inputs: ClassVar[tuple[str, ...]] = ("samples", "pairs", "adainf")
    needs_settled: ClassVar[tuple[str, ...]] = ("decisions",)
    outputs: ClassVar[tuple[str, ...]] = ("placements",)
    map_schema: ClassVar[pa.Schema] = PLAN_SCHEMA

    class Params(StageParams):
        seed: int | None = Field(None, description="shuffle seed (default: the pipeline seed)")
        shuffle: bool = Field(True, description="seeded permutation of samples before cutting shards")
        max_rows: int = Field(65536, ge=1, description="rows per shard at most")
        max_bytes: int = Field(256 << 20, ge=1 << 10, description="approximate bytes per shard at most")
        row_group_bytes: int = Field(4 << 20, ge=1 << 10, description="target bytes per row group (streaming unit)")
        row_group_max_rows: int = Field(4096, ge=1, description="rows per row group at most")
        compression: str = Field("zstd", description="Parquet codec (zstd, snappy, lz4, none)")
        compression_level: int | None = Field(1, description="codec level of the metadata columns (zstd 1: fast)")
        image_format: Literal["stored", "source"] = Field(
            "stored", description="anchor images as stored PNGs (uncompressed inside, zstd-compressed by Parquet; "
                                  "decoded a row group at a time by the loader) or the ingested PNG bytes")
        image_compression_level: int | None = Field(1, description="zstd level of the image columns")
        inline_positives: bool = Field(False, description="store every positive's PNG with its anchor (removed "
                                                          "near-duplicates are always stored)")
        inline_negatives: int = Field(0, ge=0, description="store the PNGs of the k hardest negatives with their "
                                                           "anchor: triplet batches without random access")
        include_synthetic: bool = Field(True, description="include rows with is_synthetic (inflate output)")
        adainf: AdaInfSettings | None = Field(None, description="AdaInf settings; default: from an upstream adainf table")
        dataset_name: str | None = Field(None, description="name recorded in index.json metadata")

    def output_schemas(self) -> dict[str, pa.Schema]:
        return {"placements": PLACEMENTS}

    def _adainf(self, ctx: StageContext) -> dict[str, Any] | None:
        if self.params.adainf is not None:
            return {**self.params.adainf.model_dump(), "source": "stage params"}
        if not ctx.has("adainf"):
            return None
        for _, t in reversed(ctx.read_every("adainf")):
            if t.num_rows and "real_replication" in t.column_names:
                row = t.slice(t.num_rows - 1).to_pylist()[0]
                aug = row.get("augmentation")
                if isinstance(aug, str):
                    try:
                        aug = json.loads(aug)
                    except json.JSONDecodeError:
                        aug = None
                out = {k: v for k, v in row.items() if k not in ("augmentation",)}
                out.update(real_replication=float(row["real_replication"] or 1.0), augmentation=aug, source="adainf table")
                return out
        return None

    # ---- map: per partition, on workers ----------------------------------------------
    def _rows(self, table: pa.Table | None, columns: list[str] | None = None) -> pa.Table:
        """The rows of one samples partition that go into the shards (synthetic ones unless excluded)."""
        if table is None:
            table = pa.table({c: pa.array([], SHARD_SCHEMA.field(c).type if c in SHARD_SCHEMA.names else pa.string())
                              for c in (columns or _COLS)})
        if not self.params.include_synthetic:
            table = table.filter(pc.invert(table.column("is_synthetic")))
        return table

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        """Encode this partition's anchor images once (into the stage's scratch space, read back by the shard
        tasks) and return what the plan needs: sample_id and estimated bytes per row."""
        t = self._rows(table)
        images = encode_images(t.column("image"), self.params.image_format)
        if self.params.image_format == "stored":
            io.write_parquet(pa.table({"image": images}), _encoded_path(ctx, ctx.partition_id), compression="none")
        n = t.num_rows
        return pa.table({"sample_id": t.column("sample_id").cast(pa.string()),
                         "source_uri": t.column("source_uri").cast(pa.string()) if "source_uri" in t.column_names
                         else pa.nulls(n, pa.string()),
                         "source_index": t.column("source_index").cast(pa.int64()) if "source_index" in t.column_names
                         else pa.nulls(n, pa.int64()),
                         "size": row_sizes(images)}, schema=PLAN_SCHEMA)

    # ---- reduce: the plan, on the driver (ids and sizes only) ----------------------------
    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, pa.Table]:
        p = self.params
        pids = list(ctx.partitions)
        counts = np.array([mapped[pid].num_rows for pid in pids], np.int64)
        n = int(counts.sum())
        if n == 0:
            raise CurateError("shard: no samples to write; check that upstream stages kept any rows "
                              "(see `curate status RUN_DIR`)")
        plan_rows = pa.concat_tables([mapped[pid] for pid in pids])
        ids = plan_rows.column("sample_id").combine_chunks()
        dup = pc.count_distinct(ids).as_py()
        if dup != n:
            raise CurateError(f"shard: {n - dup} duplicate sample_ids across partitions; "
                              f"the samples table must have unique ids (rerun ingest)")
        # source order first (partition ids are hashes: their order changes with the partition size), then
        # the seeded permutation of that order
        canon = pc.sort_indices(plan_rows, sort_keys=[("source_uri", "ascending"), ("source_index", "ascending"),
                                                      ("sample_id", "ascending")]).to_numpy()
        sizes = plan_rows.column("size").to_numpy()[canon]
        del plan_rows
        seed = ctx.seed if p.seed is None else p.seed
        perm, plan = plan_shards(sizes, seed=seed, shuffle=p.shuffle, max_rows=p.max_rows, max_bytes=p.max_bytes,
                                 row_group_bytes=p.row_group_bytes, row_group_max_rows=p.row_group_max_rows)
        perm = canon[perm]  # shuffled position -> row of the partition-order concatenation
        adainf = self._adainf(ctx)
        rep = float(adainf["real_replication"]) if adainf else 1.0
        out_dir = io.join(ctx.run_dir, ctx.stage, "shards")
        offsets = np.concatenate([[0], np.cumsum(counts)])
        base = StageContext(run_dir=ctx.run_dir, stage=ctx.stage, stage_key=ctx.stage_key, partition_id=None,
                            seed=ctx.seed, on_error=ctx.on_error, upstream=ctx.upstream, partitions=ctx.partitions)
        jobs = []
        for name, a, b, rg in plan:
            g = perm[a:b]
            part = np.searchsorted(offsets, g, side="right") - 1
            order = np.argsort(part, kind="stable")
            cut = np.searchsorted(part[order], np.arange(len(pids) + 1))
            takes = tuple((pids[k], (g[order[cut[k]:cut[k + 1]]] - offsets[k]), order[cut[k]:cut[k + 1]])
                          for k in range(len(pids)) if cut[k + 1] > cut[k])
            jobs.append(_ShardJob(base, p, io.join(out_dir, name), rg, rep, b - a, takes))
        results = ctx.map(write_range, jobs)  # one worker task per shard
        shards = [{"path": name, **r["shard"]} for (name, *_), r in zip(plan, results)]
        meta = {"name": p.dataset_name, "adainf": adainf, "augmentation": (adainf or {}).get("augmentation"),
                "source_stage": ctx.stage}
        index = commit_index(out_dir, shards, [r["stats"] for r in results], seed=seed, shuffle=p.shuffle,
                             metadata=meta)
        io.remove(ctx.scratch())  # the encoded images: the shards hold them now
        ctx.count("shards", index["num_shards"])
        ctx.count("rows", index["num_samples"])
        ctx.count("bytes", sum(s["bytes"] for s in index["shards"]))
        ctx.count("synthetic", index["metadata"]["synthetic"])
        placements = placements_of(ids, perm, plan)
        return {pid: placements.slice(int(offsets[k]), int(counts[k])) for k, pid in enumerate(pids)}


def _encoded_path(ctx: StageContext, pid: str) -> str:
    return io.join(ctx.scratch("encoded"), f"part-{io.check_name(pid, 'partition id')}.parquet")


@dataclass
class _ShardJob:
    """One shard for one worker task: which rows (partition, row in its shard rows) go where in the shard."""

    ctx: StageContext
    params: Any  # Shard.Params
    path: str
    row_group_rows: int
    real_replication: float
    rows: int
    takes: tuple  # ((pid, rows within the partition's shard rows, positions in the shard), ...)


def write_range(job: _ShardJob) -> dict[str, Any]:
    """Task: gather one shard's rows from the partitions that hold them, join their pairs and inlined
    partner images, write the shard atomically; return its manifest (path-less) and :func:`shard_stats`.
    Holds one shard's rows and one partition at a time."""
    ctx, p = job.ctx, job.params
    stage = Shard(p)
    stored = p.image_format == "stored"
    cols = [c for c in _COLS if c != "image" or not stored]
    own, pos_in, enc = [], [], []
    for pid, rows, where in job.takes:
        idx = pa.array(rows, pa.int64())
        t = stage._rows(ctx.read("samples", pid, columns=cols), cols)
        if stored:
            path = _encoded_path(ctx, pid)
            if io.exists(path):
                enc.append(io.read_parquet(path).column("image").take(idx))
            else:  # the scratch file is gone (a resumed run): encode again
                img = stage._rows(ctx.read("samples", pid, columns=["is_synthetic", "image"]), ["is_synthetic", "image"])
                enc.append(encode_images(img.column("image").take(idx), "stored"))
        own.append(t.take(idx))
        pos_in.append(where)
    order = np.argsort(np.concatenate(pos_in))
    take = pa.array(order, pa.int64())
    samples = pa.concat_tables(own, promote_options="permissive").take(take)
    images = None
    if stored:
        images = pa.concat_arrays([e.combine_chunks() if isinstance(e, pa.ChunkedArray) else e for e in enc])
        images = images.take(take)
    ids = samples.column("sample_id").combine_chunks()
    pairs = _pairs_of(ctx, ids) if ctx.has("pairs") else None
    partners = lookup = None
    if pairs is not None and pairs.num_rows:
        pos = pairs.filter(pc.is_valid(pairs.column("positive_kind"))).column("positive_id")
        want = set()
        if p.inline_positives:
            want.update(x for x in pos.to_pylist() if x is not None)
        if p.inline_negatives > 0:
            negs = pairs.filter(pc.is_valid(pairs.column("negative_ids"))).column("negative_ids")
            want.update(x for x in pc.list_flatten(negs).to_pylist() if x is not None)
        if want:
            lookup = _kept_images(ctx, stage, pa.array(sorted(want), pa.string()))
        partners = _partner_images(ctx, _kept_ids(ctx), pos)
    table = build_shard_table(samples, pairs, job.real_replication, partners, p.inline_positives,
                              p.inline_negatives, p.image_format, images=images, lookup=lookup)
    res = write_shard(table, job.path, job.row_group_rows, p.compression, p.compression_level,
                      p.image_compression_level)
    return {"shard": res, "stats": shard_stats(table)}


def _pairs_of(ctx: StageContext, ids: pa.Array) -> pa.Table:
    """The pairs rows anchored at ``ids``, in the order of the whole (overlaid) pairs table."""
    parts = []
    for pid in ctx.partition_ids("pairs"):
        t = ctx.read("pairs", pid)
        if t is not None:
            parts.append(t.filter(pc.is_in(t.column("anchor_id"), value_set=ids)))
    return pa.concat_tables(parts, promote_options="permissive") if parts else None


def _kept_ids(ctx: StageContext) -> pa.Array:
    """Every shard row's sample_id (the map outputs: one small column per partition)."""
    map_dir = io.join(ctx.stage, "_map")
    parts = [io.read_parquet(io.part_path(ctx.run_dir, map_dir, pid), columns=["sample_id"]).column("sample_id")
             for pid in ctx.partitions]
    return pa.chunked_array([c for p in parts for c in p.chunks], pa.string()).combine_chunks()


def _kept_images(ctx: StageContext, stage: "Shard", want: pa.Array) -> pa.Table | None:
    """(sample_id, source image) of the shard rows (any partition) whose id is in ``want``."""
    found = []
    for pid in ctx.partitions:
        t = stage._rows(ctx.read("samples", pid, columns=["sample_id", "image", "is_synthetic"]),
                        ["sample_id", "image", "is_synthetic"])
        t = t.filter(pc.is_in(t.column("sample_id"), value_set=want))
        if t.num_rows:
            found.append(t.select(["sample_id", "image"]))
    return pa.concat_tables(found) if found else None


def _partner_images(ctx: StageContext, kept: pa.Array, pos: pa.ChunkedArray) -> pa.Table | None:
    """Images of positive partners missing from the shard rows (removed copies), from the ingested samples:
    the first occurrence over the producers of ``samples``, oldest first, in partition order."""
    want = pc.unique(pos.filter(pc.invert(pc.is_in(pos, value_set=kept))))
    want = want.combine_chunks() if isinstance(want, pa.ChunkedArray) else want
    if len(want) == 0:
        return None
    found = []
    for up in ctx.producers("samples"):
        sub = None if up.outputs[0] == "samples" else "samples"
        for pid in io.list_partitions(ctx.run_dir, up.dirname, sub):
            path = io.part_path(ctx.run_dir, up.dirname, pid, sub)
            hit = pc.is_in(io.read_parquet(path, columns=["sample_id"]).column("sample_id"), value_set=want)
            if pc.any(hit).as_py():
                t = io.read_parquet(path, columns=["sample_id", "image"])
                found.append(t.filter(hit))
        if found and sum(f.num_rows for f in found) >= len(want):
            break
    if not found:
        return None
    t = pa.concat_tables(found)
    _, first = np.unique(np.asarray(t.column("sample_id").to_pylist(), object), return_index=True)
    return t.take(pa.array(np.sort(first)))
