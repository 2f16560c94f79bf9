"""``dedup.phash``: near-duplicate images by perceptual hash, Hamming distance <= t, exact search.

``map`` (per partition) decodes the canonical images and computes both 64-bit
hashes batched (:mod:`curate.ops.phash`, bit-identical to ``imagehash.phash`` /
``imagehash.dhash``); they are written as the ``hashes`` table. ``reduce``
finds every pair within Hamming distance ``threshold`` of the chosen hash
(:mod:`curate.ops.hamming`: multi-index hashing, exact, fanned out as Dask tasks
with ``ctx.map``), groups them by union-find and keeps the first row of each
group in source order (``source_uri``, ``source_index``, ``sample_id``). A
removed row names its representative, ``score = 1 - d / 64`` and the distance
``d`` to the representative in ``reason`` (groups are connected components, so
``d`` may exceed ``threshold`` when a row joined through a chain; the reason says so).

Defaults from the literature: ``hash: phash`` with ``threshold: 10``
(imagededup's ``PHash.find_duplicates`` default ``max_distance_threshold=10``);
with ``hash: dhash`` the default is ``6`` (the per-CT-volume dHash reduction of
"Less is More", Fang et al.). ``scope: per_group`` compares rows only within
the same ``group_id`` (patient / series / volume); a row whose ``group_id`` is
null has no group to compare within and is never removed in that scope.

YAML::

    - stage: dedup.phash
      hash: phash          # phash | dhash
      threshold: null      # max Hamming distance; null = 10 (phash) / 6 (dhash)
      scope: global        # global | per_group
      splits: 4            # Dask tasks per hash band in the all-pairs search
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curate import imaging, schemas
from curate.config import StageParams
from curate.errors import SampleError
from curate.ops import hamming, phash, unionfind
from curate.stage import GlobalStage, StageContext
from curate.stages.dedup._decisions import concat_mapped, decisions_table, source_rank, split_by_partition

DEFAULT_THRESHOLD = {"phash": 10, "dhash": 6}
HASH_BATCH = 4096


class PHashParams(StageParams):
    hash: Literal["phash", "dhash"] = Field("phash", description="which 64-bit hash decides near-duplicates")
    threshold: int | None = Field(None, ge=0, le=64, description="max Hamming distance (of 64 bits) for a "
                                  "near-duplicate; default 10 for phash (imagededup), 6 for dhash (Less is More)")
    scope: Literal["global", "per_group"] = Field("global", description="compare all rows, or only rows with "
                                                  "the same group_id (rows without group_id are never removed)")
    splits: int = Field(4, ge=1, le=256, description="Dask tasks per hash band for the all-pairs search")

    @property
    def t(self) -> int:
        return DEFAULT_THRESHOLD[self.hash] if self.threshold is None else self.threshold


class PHashDedup(GlobalStage):
    key = "dedup.phash"
    version = "1"
    Params = PHashParams
    inputs = ("samples",)
    outputs = ("decisions", "hashes")
    map_schema = pa.schema([
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("phash", pa.uint64()),
        pa.field("dhash", pa.uint64()),
        pa.field("group_id", pa.string()),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_index", pa.int64(), nullable=False),
    ])

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        n = table.num_rows
        ph = np.zeros(n, np.uint64)
        dh = np.zeros(n, np.uint64)
        ok = np.zeros(n, bool)
        images = table.column("image")
        for lo in range(0, n, HASH_BATCH):
            arrays, rows = [], []
            for i in range(lo, min(n, lo + HASH_BATCH)):
                try:
                    arrays.append(imaging.decode_png(images[i].as_py()))
                    rows.append(i)
                except Exception as err:  # noqa: BLE001 - one bad image must not stop the stage
                    if ctx.on_error == "raise":
                        raise SampleError("undecodable", f"{table['source_uri'][i].as_py()}"
                                          f"[{table['source_index'][i].as_py()}]: {err}") from None
                    ctx.count("undecodable")  # quarantined by reduce (null hash), so apply sees it
            if rows:
                ph[rows], dh[rows] = phash.hash_arrays(arrays)
                ok[rows] = True
        ctx.count("hashed", int(ok.sum()))
        return pa.table({
            "sample_id": table.column("sample_id"),
            "phash": pa.array(ph, pa.uint64(), mask=~ok),
            "dhash": pa.array(dh, pa.uint64(), mask=~ok),
            "group_id": table.column("group_id"),
            "source_uri": table.column("source_uri"),
            "source_index": table.column("source_index"),
        }, schema=self.map_schema)

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, dict[str, pa.Table]]:
        p: PHashParams = self.params
        t = p.t
        table, part = concat_mapped(ctx, mapped, self.map_schema)
        n = table.num_rows
        col = table.column(p.hash)
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
        h = np.asarray(col.fill_null(0).to_numpy(), dtype=np.uint64)
        rows = np.flatnonzero(valid)
        for i in np.flatnonzero(~valid).tolist():
            ctx.sample_error(SampleError("undecodable", "image bytes do not decode; no perceptual hash"),
                             table["source_uri"][i].as_py(), table["source_index"][i].as_py(),
                             table["sample_id"][i].as_py())
        groups = None
        if p.scope == "per_group":
            gid = table.column("group_id").to_pylist()
            # a row without group_id is its own group: a unique label never shared
            groups = np.array([g if g is not None else f"\x00row{i}" for i, g in enumerate(gid)], dtype=object)
            groups = groups[rows].astype(str)
        labels = np.arange(n, dtype=np.int64)
        sub = hamming.components(h[rows], t, groups=groups, mapper=ctx.map, splits=p.splits)
        labels[rows] = rows[sub]
        rep, keep, size = unionfind.keep_first(labels, source_rank(table))
        dist = np.bitwise_count(h ^ h[rep]).astype(np.int64)
        score = 1.0 - dist / 64.0
        reasons = np.array([
            f"{p.hash} hamming {d} <= {t} to representative" if d <= t else
            f"{p.hash} hamming {d} to representative, linked within {t} through other near-duplicates"
            for d in dist.tolist()], dtype=object)
        ctx.count("removed", int((~keep).sum()))
        ctx.count("duplicate_groups", int(((size > 1) & keep).sum()))
        ctx.count("no_hash", int((~valid).sum()))
        decisions = decisions_table(ctx, table, part, f"{p.hash}", rep, keep, size, score, reasons,
                                    "near-duplicates", undecided=~valid, undecided_reason="no_hash: image not decodable")
        hashes = self._hashes(ctx, table, part)
        return {pid: {"decisions": decisions[pid], "hashes": hashes[pid]} for pid in ctx.partitions}

    @staticmethod
    def _hashes(ctx: StageContext, table: pa.Table, part: np.ndarray) -> dict[str, pa.Table]:
        """The hashes table; a MinHash signature an earlier stage stored is carried over."""
        minhash = pa.nulls(table.num_rows, pa.list_(pa.uint64()))
        if ctx.has("hashes"):
            prev = ctx.read_all("hashes", columns=["sample_id", "minhash"])
            if prev.num_rows:
                lookup = dict(zip(prev.column("sample_id").to_pylist(), prev.column("minhash").to_pylist()))
                minhash = pa.array([lookup.get(s) for s in table.column("sample_id").to_pylist()],
                                   pa.list_(pa.uint64()))
        out = pa.table({"sample_id": table.column("sample_id"), "phash": table.column("phash"),
                        "dhash": table.column("dhash"), "minhash": minhash}, schema=schemas.HASHES)
        return split_by_partition(ctx, out, part)
