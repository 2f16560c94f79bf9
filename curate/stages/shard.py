"""``shard``: the kept (and synthetic) samples as size-bounded Parquet shards + ``index.json``.

mosaicml-streaming's contract: shards first, ``index.json`` (rows, bytes and
sha256 per shard, the schema, dataset metadata) written last, so a reader never
sees a half-written dataset. Samples are shuffled once with a seeded
permutation (deterministic: same run, same shards, same checksums), cut into
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
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from curate import io
from curate.config import StageParams
from curate.errors import CurateError
from curate.load.index import FORMAT, INDEX_NAME
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
    """Shards are written by threads of the driver: the rows are already in its memory, and Parquet
    encoding, zstd and sha256 release the GIL (shipping the rows to Dask workers would cost more)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return list(pool.map(fn, items))


def _write_task(item: tuple) -> dict[str, Any]:
    table, path, rg, comp, level, img_level = item
    return write_shard(table, path, rg, comp, level, img_level)


def build_shard_table(samples: pa.Table, pairs: pa.Table | None, real_replication: float = 1.0,
                      partners: pa.Table | None = None, inline_positives: bool = False,
                      inline_negatives: int = 0, image_format: str = "stored") -> pa.Table:
    """The shard columns for ``samples`` (any order), joining mined positive / negative ids by anchor.

    ``partners`` (sample_id, image) supplies images of positives that are not rows of ``samples``
    (always inlined); ``inline_positives`` inlines every positive's PNG, ``inline_negatives`` the PNGs of
    the first (hardest) k negatives. ``image_format="stored"`` re-encodes the anchor images as stored
    PNGs (:mod:`curate.ops.png`: Parquet's zstd compresses them, the loader decodes a row group in
    one gather); ``"source"`` keeps the ingested PNG bytes.
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
    pos_img = _inline_images(pos, ids, partners, samples if inline_positives else None)
    neg_img = pa.nulls(n, pa.list_(pa.binary()))
    if inline_negatives > 0 and neg.null_count < n:
        neg_img = _inline_images(pc.list_slice(neg, 0, inline_negatives), ids, None, samples)

    def col(name: str, typ: pa.DataType) -> pa.Array:
        return samples.column(name).cast(typ) if name in samples.column_names else pa.nulls(n, typ)

    image = samples.column("image").cast(pa.binary())
    if image_format == "stored":
        image = to_stored(image)
    elif image_format != "source":
        raise CurateError(f"shard: image_format must be 'stored' or 'source', got '{image_format}'")
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


def _inline_images(ids_list: pa.Array, ids: pa.ChunkedArray, partners: pa.Table | None,
                   samples: pa.Table | None = None) -> pa.Array:
    """list<binary> aligned with ``ids_list``: a partner's PNG when it is not a shard row (from ``partners``),
    or any partner's PNG when ``samples`` is given (looked up there first); null otherwise."""
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
        j = pc.index_in(flat, value_set=ids.combine_chunks())
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


def write_shards(table: pa.Table, out_dir: str, *, seed: int = 0, shuffle: bool = True, max_rows: int = 65536,
                 max_bytes: int = 256 << 20, row_group_bytes: int = 4 << 20, row_group_max_rows: int = 4096,
                 compression: str = "zstd", compression_level: int | None = 1, image_compression_level: int | None = 1,
                 metadata: dict[str, Any] | None = None, mapper=None) -> tuple[dict[str, Any], pa.Table]:
    """Shuffle, cut and write ``table`` (SHARD_SCHEMA) under ``out_dir``; write index.json last.

    Returns (the index dict, placements: sample_id, shard, row in the order of ``table``).
    """
    n = table.num_rows
    perm = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    sizes = pc.binary_length(table.column("image")).to_numpy(zero_copy_only=False).astype(np.int64)[perm] + 64
    cuts = _plan_cuts(sizes, max_rows, max_bytes)
    shuffled = table.take(pa.array(perm)) if shuffle else table
    items, names = [], []
    for i, (a, b) in enumerate(cuts):
        part = shuffled.slice(a, b - a)
        avg = max(1.0, float(sizes[a:b].mean()))
        rg = int(max(1, min(row_group_max_rows, row_group_bytes // avg)))
        name = f"shard-{i:05d}.parquet"
        names.append(name)
        items.append((part, io.join(out_dir, name), rg, compression, compression_level, image_compression_level))
    mapper = mapper or thread_map
    results = mapper(_write_task, items) if len(items) > 1 else [_write_task(x) for x in items]
    shards = [{"path": name, **r} for name, r in zip(names, results)]
    weights = table.column("sample_weight").to_numpy(zero_copy_only=False)
    index = {
        "format": FORMAT,
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_samples": n,
        "num_shards": len(shards),
        "shards": shards,
        "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "metadata": {
            "seed": seed,
            "shuffled": shuffle,
            "uniform_weights": bool(np.all(weights == 1.0)),
            "synthetic": int(pc.sum(table.column("is_synthetic").cast(pa.int64())).as_py() or 0),
            "labelled": int(n - table.column("label").null_count),
            "with_positives": int(n - table.column("positive_ids").null_count),
            "with_negatives": int(n - table.column("negative_ids").null_count),
            **(metadata or {}),
        },
    }
    io.write_json(index, io.join(out_dir, INDEX_NAME))
    # drop shards of an earlier, larger run (after the new index is in place)
    fs, p = io.fs_and_path(out_dir)
    keep = set(names) | {INDEX_NAME}
    for f in fs.ls(p, detail=False):
        base = f.rsplit("/", 1)[-1]
        if base.startswith("shard-") and base.endswith(".parquet") and base not in keep:
            fs.rm(f)
    shard_of = np.repeat(np.arange(len(cuts)), [b - a for a, b in cuts])
    row_in = np.concatenate([np.arange(b - a) for a, b in cuts]) if cuts else np.zeros(0, np.int64)
    inv = np.empty(n, np.int64)
    inv[perm] = np.arange(n)
    placements = pa.table({
        "sample_id": table.column("sample_id"),
        "shard": pa.array(np.asarray(names, dtype=object)[shard_of[inv]] if n else [], pa.string()),
        "row": pa.array(row_in[inv] if n else [], pa.int64()),
    }, schema=PLACEMENTS)
    return index, placements


class Shard(GlobalStage):
    """Write training shards + index.json from the kept samples (and mined pairs)."""

    key: ClassVar[str] = "shard"
    version: ClassVar[str] = "2"  # 2: stored PNGs with the Up filter
    inputs: ClassVar[tuple[str, ...]] = ("samples", "pairs", "adainf")
    needs_settled: ClassVar[tuple[str, ...]] = ("decisions",)
    outputs: ClassVar[tuple[str, ...]] = ("placements",)

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

    @staticmethod
    def _partner_images(ctx: StageContext, samples: pa.Table, pairs: pa.Table | None) -> pa.Table | None:
        """Images of positive partners missing from the kept set (removed copies), from the ingested samples."""
        if pairs is None or pairs.num_rows == 0:
            return None
        pos = pairs.filter(pc.is_valid(pairs.column("positive_kind"))).column("positive_id")
        want = pc.unique(pos.filter(pc.invert(pc.is_in(pos, value_set=samples.column("sample_id").combine_chunks()))))
        want = want.combine_chunks() if isinstance(want, pa.ChunkedArray) else want
        if len(want) == 0:
            return None
        found = []
        for up in ctx.producers("samples"):
            for pid in io.list_partitions(ctx.run_dir, up.dirname, None if up.outputs[0] == "samples" else "samples"):
                t = io.read_parquet(io.part_path(ctx.run_dir, up.dirname, pid,
                                                 None if up.outputs[0] == "samples" else "samples"),
                                    columns=["sample_id", "image"])
                found.append(t.filter(pc.is_in(t.column("sample_id"), value_set=want)))
            if found and sum(f.num_rows for f in found) >= len(want):
                break
        if not found:
            return None
        t = pa.concat_tables(found)
        _, first = np.unique(np.asarray(t.column("sample_id").to_pylist(), object), return_index=True)
        return t.take(pa.array(np.sort(first)))

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, pa.Table]:
        cols = ["sample_id", "image", "label", "group_id", "is_synthetic", "height", "width", "channels"]
        parts, pids = [], []
        for pid in ctx.partitions:
            t = ctx.read("samples", pid, columns=cols)
            if t is None:
                t = pa.table({c: pa.array([], SHARD_SCHEMA.field(c).type if c in SHARD_SCHEMA.names else pa.string())
                              for c in cols})
            if not self.params.include_synthetic:
                t = t.filter(pc.invert(t.column("is_synthetic")))
            parts.append(t)
            pids.extend([pid] * t.num_rows)
        samples = pa.concat_tables(parts, promote_options="permissive") if parts else None
        if samples is None or samples.num_rows == 0:
            raise CurateError("shard: no samples to write; check that upstream stages kept any rows "
                              "(see `curate status RUN_DIR`)")
        # sample_id order before the seeded shuffle: the shards never depend on how the data were partitioned
        order = np.argsort(np.asarray(samples.column("sample_id").to_pylist(), dtype=object), kind="stable")
        samples, pids = samples.take(pa.array(order)), [pids[i] for i in order.tolist()]
        pairs = ctx.read_all("pairs") if ctx.has("pairs") else None
        adainf = self._adainf(ctx)
        rep = float(adainf["real_replication"]) if adainf else 1.0
        partners = self._partner_images(ctx, samples, pairs)
        table = build_shard_table(samples, pairs, rep, partners, self.params.inline_positives,
                                  self.params.inline_negatives, self.params.image_format)
        dup = pc.count_distinct(table.column("sample_id")).as_py()
        if dup != table.num_rows:
            raise CurateError(f"shard: {table.num_rows - dup} duplicate sample_ids across partitions; "
                              f"the samples table must have unique ids (rerun ingest)")
        out_dir = io.join(ctx.run_dir, ctx.stage, "shards")
        meta = {"name": self.params.dataset_name, "adainf": adainf,
                "augmentation": (adainf or {}).get("augmentation"), "source_stage": ctx.stage}
        p = self.params
        seed = ctx.seed if p.seed is None else p.seed
        index, placements = write_shards(
            table, out_dir, seed=seed, shuffle=p.shuffle, max_rows=p.max_rows, max_bytes=p.max_bytes,
            row_group_bytes=p.row_group_bytes, row_group_max_rows=p.row_group_max_rows,
            compression=p.compression, compression_level=p.compression_level,
            image_compression_level=p.image_compression_level, metadata=meta)
        ctx.count("shards", index["num_shards"])
        ctx.count("rows", index["num_samples"])
        ctx.count("bytes", sum(s["bytes"] for s in index["shards"]))
        ctx.count("synthetic", index["metadata"]["synthetic"])
        pid_arr = np.asarray(pids, dtype=object)
        out = {}
        for pid in ctx.partitions:
            mask = pa.array(pid_arr == pid)
            out[pid] = placements.filter(mask)
        return out
