"""``dedup.minhash``: near-duplicate texts (reports, captions) by MinHash + LSH.

``map`` (per partition) shingles the ``text`` column and computes MinHash
signatures vectorised, identical to ``datasketch.MinHash`` for the same
``seed`` / ``num_perm`` / ``scheme`` (:mod:`curate.ops.minhash`); they go to the
``hashes`` table. ``reduce`` collapses identical signatures, cuts the rest into
LSH bands (``bands`` x ``rows``; default datasketch ``MinHashLSH``'s optimum for
the threshold), joins equal band values across all partitions as independent
``ctx.map`` tasks (groups of bands) and verifies every candidate pair by its
estimated Jaccard ``>= threshold``. Union-find components of the verified
pairs give ``cluster_id``; removal is keep-first without chaining, as in
``dedup.phash``: in source order, a row is removed when it is a verified
near-duplicate of an already kept row (the most similar one is named as
``representative_id``, its estimated Jaccard is the ``score``). Rows with no text (null, or empty
after normalisation) are kept with reason ``no_text``.

Shingles: normalised text (NFKC, lower case, punctuation removed, whitespace
collapsed), then character 5-grams by default - robust to small edits in short
captions and reports, where one changed word breaks several word n-grams;
``shingle: word, ngram: 5`` is Lee et al.'s setting for long documents. The
Jaccard threshold 0.8 follows Lee et al., "Deduplicating Training Data Makes
Language Models Better" (ACL 2022), also NeMo Curator's and datatrove's default
regime; MinHash is Broder (1997).

YAML::

    - stage: dedup.minhash
      threshold: 0.8       # estimated Jaccard for a near-duplicate
      num_perm: 128
      shingle: char        # char | word
      ngram: 5
      seed: 1
      scheme: affine32     # datasketch's default scheme; legacy = datasketch < 2.0
      bands: null          # LSH bands x rows; null = datasketch's optimum (9 x 13 at 0.8 / 128)
      rows: null
      splits: 4            # Dask tasks over the bands
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curate import schemas
from curate.config import StageParams, execution_field
from curate.ops import minhash as mh
from curate.ops import unionfind
from curate.stage import GlobalStage, StageContext
from curate.stages.dedup._decisions import (
    concat_mapped,
    decisions_table,
    source_rank,
    split_by_partition,
)

METHOD = "minhash"


class MinHashParams(StageParams):
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="estimated Jaccard similarity for a near-duplicate")
    num_perm: int = Field(128, ge=2, le=4096, description="MinHash permutations (signature length)")
    shingle: Literal["char", "word"] = Field("char", description="character or word n-grams")
    ngram: int = Field(5, ge=1, le=64, description="n-gram length")
    seed: int = Field(1, description="datasketch MinHash seed (same seed, same signatures)")
    scheme: Literal["affine32", "legacy"] = Field("affine32", description="datasketch permutation scheme")
    bands: int | None = Field(None, ge=1, description="LSH bands; null: datasketch's optimum for the threshold")
    rows: int | None = Field(None, ge=1, description="signature rows per band (with `bands`)")
    splits: int = execution_field(4, ge=1, le=256, description="Dask tasks over the LSH bands")

    @model_validator(mode="after")
    def _bands(self) -> "MinHashParams":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both `bands` and `rows`, or neither (datasketch's optimum is used)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}; "
                             f"lower them or raise num_perm")
        return self

    def band_layout(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return mh.optimal_bands(self.threshold, self.num_perm)


class MinHashDedup(GlobalStage):
    key = "dedup.minhash"
    version = "1"
    Params = MinHashParams
    inputs = ("samples",)
    outputs = ("decisions", "hashes")
    map_schema = pa.schema([
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("minhash", pa.list_(pa.uint64())),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_index", pa.int64(), nullable=False),
    ])

    def setup(self) -> None:
        p: MinHashParams = self.params
        self.hasher = mh.MinHasher(p.num_perm, p.seed, p.scheme)

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        p: MinHashParams = self.params
        texts = table.column("text").to_pylist()
        sh = [mh.shingles(t, p.ngram, p.shingle) if t else [] for t in texts]
        has = np.array([len(s) > 0 for s in sh], bool)
        sigs = self.hasher.signatures(sh)
        ctx.count("signatures", int(has.sum()))
        ctx.count("no_text", int((~has).sum()))
        offsets = pa.array(np.arange(len(sh) + 1, dtype=np.int32) * p.num_perm, pa.int32())
        lists = pa.ListArray.from_arrays(offsets, pa.array(sigs.reshape(-1), pa.uint64()),
                                         mask=pa.array(~has, pa.bool_()))
        return pa.table({"sample_id": table.column("sample_id"), "minhash": lists,
                         "source_uri": table.column("source_uri"), "source_index": table.column("source_index")},
                        schema=self.map_schema)

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, dict[str, pa.Table]]:
        p: MinHashParams = self.params
        table, part = concat_mapped(ctx, mapped, self.map_schema)
        n = table.num_rows
        col = table.column("minhash")
        has = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
        rows = np.flatnonzero(has)
        sigs = np.zeros((rows.size, p.num_perm), np.uint64)
        if rows.size:
            flat = pa.concat_arrays([c.flatten() for c in col.filter(pa.array(has)).chunks]) \
                if col.num_chunks else pa.array([], pa.uint64())
            sigs = np.asarray(flat.to_numpy(), np.uint64).reshape(rows.size, p.num_perm)
        rank = source_rank(table)
        rep = np.arange(n, dtype=np.int64)
        keep = np.ones(n, bool)
        cluster = np.arange(n, dtype=np.int64)
        if rows.size:
            r_keep, r_rep, r_cluster = self._decide(ctx, sigs, rank[rows], p)
            rep[rows], keep[rows], cluster[rows] = rows[r_rep], r_keep, rows[r_cluster]
        full = np.zeros((n, p.num_perm), np.uint64)
        full[rows] = sigs
        jac = mh.jaccard(full, full[rep])
        reasons = np.array([f"minhash jaccard~{j:.3f} >= {p.threshold} to representative" for j in jac.tolist()],
                           dtype=object)
        ctx.count("removed", int((~keep).sum()))
        ctx.count("no_text", int((~has).sum()))
        decisions = decisions_table(ctx, table, part, METHOD, rep, keep, cluster, jac, reasons, "near-duplicate texts",
                                    undecided=~has, undecided_reason="no_text")
        hashes = self._hashes(ctx, table, part)
        return {pid: {"decisions": decisions[pid], "hashes": hashes[pid]} for pid in ctx.partitions}

    @staticmethod
    def _decide(ctx: StageContext, sigs: np.ndarray, rank: np.ndarray, p: MinHashParams):
        """(keep, rep, cluster) per signature row: LSH candidates verified >= threshold, greedy keep-first."""
        # identical signatures (exact duplicate texts) are one node for LSH
        _, first, inverse = np.unique(sigs, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        uniq = sigs[first]
        b, r = p.band_layout()
        groups = [x for x in np.array_split(np.arange(b), min(p.splits, b)) if len(x)]
        # each task gets only its bands' signature columns; candidates are verified here
        items = [(np.ascontiguousarray(uniq[:, int(g[0]) * r:(int(g[-1]) + 1) * r]), r) for g in groups]
        results = ctx.map(mh.lsh_candidates, items)
        u = uniq.shape[0]
        code = np.unique(np.concatenate([x[0] * u + x[1] for x in results])) if results else np.zeros(0, np.int64)
        i, j, jac = mh.verify_pairs(uniq, code // max(u, 1), code % max(u, 1), p.threshold)
        return unionfind.keep_first_over_nodes(inverse, rank, i, j, jac)

    @staticmethod
    def _hashes(ctx: StageContext, table: pa.Table, part: np.ndarray) -> dict[str, pa.Table]:
        """The hashes table; pHash / dHash an earlier stage stored are carried over."""
        n = table.num_rows
        ph = pa.nulls(n, pa.uint64())
        dh = pa.nulls(n, pa.uint64())
        if ctx.has("hashes"):
            prev = ctx.read_all("hashes", columns=["sample_id", "phash", "dhash"])
            if prev.num_rows:
                pos = {s: k for k, s in enumerate(prev.column("sample_id").to_pylist())}
                idx = pa.array([pos.get(s) for s in table.column("sample_id").to_pylist()], pa.int64())
                ph = prev.column("phash").take(idx)
                dh = prev.column("dhash").take(idx)
        out = pa.table({"sample_id": table.column("sample_id"), "phash": ph, "dhash": dh,
                        "minhash": table.column("minhash")}, schema=schemas.HASHES)
        return split_by_partition(ctx, out, part)
