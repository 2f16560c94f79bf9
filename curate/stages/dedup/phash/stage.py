"""``dedup.phash`` stage: parameters, ``map`` (:mod:`.hash`) and ``reduce`` (:mod:`.views`,
:mod:`.candidates`, :mod:`.decide`); see the package docstring for the method."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curate import schemas
from curate.config import StageParams, execution_field
from curate.errors import SampleError
from curate.stage import GlobalStage, StageContext
from curate.stages.dedup._decisions import (
    concat_mapped,
    decisions_table,
    source_rank,
    split_by_partition,
)
from curate.stages.dedup._images import sample_files, verify_row_pairs
from curate.stages.dedup.phash.decide import find_near_duplicates
from curate.stages.dedup.phash.hash import hash_rows
from curate.stages.dedup.phash.spectral import DIM as SPECTRAL_DIM
from curate.stages.dedup.phash.spectral import candidate_pairs as spectral_pairs
from curate.stages.dedup.phash.views import crop_view_pairs, view_distance

DEFAULT_THRESHOLD = {"phash": 6, "dhash": 6}  # see the package docstring


class PHashParams(StageParams):
    hash: Literal["phash", "dhash"] = Field("phash", description="which 64-bit hash decides near-duplicates")
    threshold: int | None = Field(None, ge=0, le=64, description="max Hamming distance (of 64 bits) for a "
                                  "near-duplicate; default 6 (Less is More; measured best for pHash with the thumbnail check)")
    scope: Literal["global", "per_group"] = Field("global", description="compare all rows, or only rows with "
                                                  "the same group_id (rows without group_id are never removed)")
    verify: bool | None = Field(None, description="also require the thumbnail difference <= max_diff for a "
                                "pair; null = on in global scope (copies), off in per_group scope (slices)")
    max_diff: float = Field(8.0, ge=0.0, le=255.0, description="max mean absolute difference of the "
                            "brightness-normalised 16x16 thumbnails (0..255) when verifying")
    verify_geometry: bool | None = Field(None, description="also require a verified alignment of the two "
                                         "images (curate.ops.geometry: a mild warp leaves only noise-level "
                                         "residue) for every pair; null = on in global scope, off per_group "
                                         "(adjacent slices of one series are meant to pair there)")
    splits: int = execution_field(4, ge=1, le=256, description="Dask tasks per hash band for the all-pairs search")
    crop_views: list[float] | None = Field(None, description="border shares: every image is also hashed with "
                                           "each share trimmed from every side, so a copy trimmed by about that "
                                           "much matches (perceptual hashes are not crop invariant); null = "
                                           "[0.04, 0.08] in global scope (copies), [] in per_group scope (slices)")
    spectral: bool | None = Field(None, description="also propose pairs by Fourier-magnitude neighbours "
                                  "(shift / crop / rotation tolerant, :mod:`.spectral`) for the geometric check; "
                                  "null = on whenever verify_geometry is")
    spectral_k: int = Field(2, ge=1, le=20, description="neighbours per row and descriptor proposed as candidates")
    spectral_ratio: float = Field(0.7, gt=0.0, le=1.0, description="a neighbour is a candidate when its cosine "
                                  "distance <= ratio x the mean distance of the row's neighbours ranked 6-20")

    @property
    def verifying(self) -> bool:
        return self.scope == "global" if self.verify is None else self.verify

    @property
    def verifying_geometry(self) -> bool:
        return self.scope == "global" if self.verify_geometry is None else self.verify_geometry

    @property
    def views(self) -> list[float]:
        if self.crop_views is not None:
            return list(self.crop_views)
        return [0.04, 0.08] if self.scope == "global" else []

    @model_validator(mode="after")
    def _spectral_needs_geometry(self) -> "PHashParams":
        if self.spectral and not self.verifying_geometry:
            raise ValueError("spectral candidates are not within the Hamming threshold, so they need "
                             "verify_geometry: true (or set spectral: false)")
        return self

    @property
    def spectral_on(self) -> bool:
        return self.verifying_geometry if self.spectral is None else self.spectral

    @property
    def t(self) -> int:
        return DEFAULT_THRESHOLD[self.hash] if self.threshold is None else self.threshold


class PHashDedup(GlobalStage):
    key = "dedup.phash"
    version = "4"
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
        pa.field("thumb", pa.binary(256)),
        pa.field("view_phash", pa.list_(pa.uint64())),  # one per crop view; null where the image is too small
        pa.field("view_dhash", pa.list_(pa.uint64())),
        pa.field("view_thumb", pa.list_(pa.binary(256))),
        pa.field("spectrum", pa.binary(2 * SPECTRAL_DIM)),  # float16 descriptors (:mod:`.spectral`); null if off
    ])

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        n = table.num_rows
        nv = len(self.params.views)
        ph, dh, th, ok, vph, vdh, vth, vok, spec = hash_rows(table, self.params.views, ctx,
                                                             spectral=self.params.spectral_on)
        ctx.count("hashed", int(ok.sum()))
        ctx.count("crop_views", int(vok.sum()))

        def lists(values: np.ndarray, typ: pa.DataType) -> pa.Array:
            flat = pa.array(values.reshape(-1), typ, mask=~vok.reshape(-1))
            return pa.ListArray.from_arrays(pa.array(np.arange(n + 1) * nv, pa.int32()), flat, mask=pa.array(~ok))

        return pa.table({
            "sample_id": table.column("sample_id"),
            "phash": pa.array(ph, pa.uint64(), mask=~ok),
            "dhash": pa.array(dh, pa.uint64(), mask=~ok),
            "group_id": table.column("group_id"),
            "source_uri": table.column("source_uri"),
            "source_index": table.column("source_index"),
            "thumb": pa.array([bytes(x) for x in th], pa.binary(256), mask=~ok),
            "view_phash": lists(vph, pa.uint64()),
            "view_dhash": lists(vdh, pa.uint64()),
            "view_thumb": lists(np.array([bytes(x) for x in vth.reshape(-1, 256)], dtype=object).reshape(n, nv)
                                if nv else np.zeros((n, 0), object), pa.binary(256)),
            "spectrum": pa.array([x.tobytes() for x in spec] if spec is not None else [None] * n,
                                 pa.binary(2 * SPECTRAL_DIM), mask=~ok if spec is not None else None),
        }, schema=self.map_schema)

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, dict[str, pa.Table]]:
        p: PHashParams = self.params
        t = p.t
        table, part = concat_mapped(ctx, mapped, self.map_schema)
        n = table.num_rows
        col = table.column(p.hash)
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
        h = np.asarray(col.fill_null(0).to_numpy(), dtype=np.uint64)
        rank = source_rank(table)
        # rows in source order: node representatives, neighbour ties and pair orientation then do not
        # depend on how the partitions were cut (the geometric verifier is not symmetric)
        rows = np.flatnonzero(valid)
        rows = rows[np.argsort(rank[rows], kind="stable")]
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
        thumbs = None
        max_diff = p.max_diff if p.verifying else None
        if max_diff is not None:
            thumbs = np.frombuffer(b"".join(table.column("thumb").take(pa.array(rows)).to_pylist()),
                                   np.uint8).reshape(rows.size, 256)
        views = self._view_arrays(table, p.hash, rows)
        extra = None
        if views is not None:
            hv, tv, vok = views
            extra = crop_view_pairs(h[rows], hv, vok, t, groups, thumbs, tv, max_diff, ctx.map, p.splits)
            ctx.count("crop_view_pairs", int(extra[0].size))
        spectral = self._spectral_pairs(ctx, table, rows, h[rows], groups) if p.spectral_on else None
        if spectral is not None:
            ctx.count("spectral_pairs", int(spectral[0].size))
            extra = spectral if extra is None else tuple(np.concatenate([a, b]) for a, b in zip(extra, spectral))
        edge_filter = self._geometry_filter(ctx, part, rows) if p.verifying_geometry else None
        found = find_near_duplicates(h[rows], t, rank[rows], groups=groups, thumbs=thumbs, max_diff=max_diff,
                                     mapper=ctx.map, splits=p.splits, extra=extra, edge_filter=edge_filter)
        rep = np.arange(n, dtype=np.int64)
        keep = np.ones(n, bool)
        cluster = np.arange(n, dtype=np.int64)
        rep[rows], keep[rows], cluster[rows] = rows[found["rep"]], found["keep"], rows[found["cluster"]]
        dist = np.bitwise_count(h ^ h[rep]).astype(np.int64)
        diff = np.zeros(n)
        diff[rows] = found["diff"]
        by_view = np.zeros(n, bool)
        if views is not None:  # a copy matched through a crop view: report that distance and difference
            vd, vx = view_distance(h[rows], hv, vok, found["rep"], thumbs, tv)
            better = (vd < dist[rows]) & (vd <= t) & ~found["keep"]
            by_view[rows] = better
            dist[rows] = np.where(better, vd, dist[rows])
            if thumbs is not None:
                diff[rows] = np.where(better, vx, diff[rows])
        # only a spectral candidate links it to its representative (not within t, or not the thumbnail check)
        by_spectrum = ~keep & ~by_view & ((dist > t) | ((diff > max_diff) if max_diff is not None else False))
        score = 1.0 - np.minimum(dist, 64) / 64.0
        check = f"; thumbnail diff {{:.1f}} <= {max_diff}" if max_diff is not None else ""
        check += "; alignment verified" if p.verifying_geometry else ""
        reasons = np.array([(f"{p.hash} hamming {d} to representative: Fourier-magnitude neighbour (shift / crop / "
                             f"rotation candidate); alignment verified" if s else
                             f"{p.hash} hamming {d} <= {t} to representative" + (" (crop view)" if v else "")
                             + check.format(x))
                            for d, x, v, s in zip(dist.tolist(), diff.tolist(), by_view.tolist(), by_spectrum.tolist())],
                           dtype=object)
        ctx.count("removed", int((~keep).sum()))
        ctx.count("removed_by_crop_view", int((by_view & ~keep).sum()))
        ctx.count("removed_by_spectrum", int(by_spectrum.sum()))
        ctx.count("duplicate_clusters", int(np.unique(cluster[(np.bincount(cluster, minlength=n)[cluster] > 1)]).size))
        ctx.count("no_hash", int((~valid).sum()))
        decisions = decisions_table(ctx, table, part, f"{p.hash}", rep, keep, cluster, score, reasons,
                                    "near-duplicates", undecided=~valid, undecided_reason="no_hash: image not decodable")
        hashes = self._hashes(ctx, table, part)
        return {pid: {"decisions": decisions[pid], "hashes": hashes[pid]} for pid in ctx.partitions}

    def _spectral_pairs(self, ctx: StageContext, table: pa.Table, rows: np.ndarray, h: np.ndarray,
                        groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(i, j, Hamming distance) of the Fourier-magnitude candidates among ``rows`` (:mod:`.spectral`)."""
        from curate.ops import faiss_knn
        from curate.stages.mine._common import work_dir

        col = table.column("spectrum").combine_chunks().take(pa.array(rows))
        if rows.size < 3 or col.null_count:  # map outputs without descriptors
            return None
        desc = np.frombuffer(b"".join(col.to_pylist()), np.float16).reshape(rows.size, SPECTRAL_DIM)
        folder = work_dir(ctx, "spectral")

        def knn(x: np.ndarray, k: int):
            scores, ids, _ = faiss_knn.knn(x, k, folder, mapper=ctx.map)
            return scores, ids

        i, j = spectral_pairs(desc, self.params.spectral_k, self.params.spectral_ratio, knn, groups)
        return i, j, np.bitwise_count(h[i] ^ h[j]).astype(np.int64)

    @staticmethod
    def _geometry_filter(ctx: StageContext, part: np.ndarray, rows: np.ndarray):
        """The strict edge check: row pairs (indices into ``rows``, in source order) verified on
        their images, as tasks; each pair oriented earlier row first (the verifier is not symmetric)."""
        paths = sample_files(ctx, ctx.partitions)
        start = np.searchsorted(part, np.arange(len(ctx.partitions)))
        trows = np.arange(part.size)
        loc = np.column_stack([part, trows - start[part]]).astype(np.int64)[rows]

        def check(i: np.ndarray, j: np.ndarray) -> np.ndarray:
            i, j = np.minimum(i, j), np.maximum(i, j)
            ok, _ = verify_row_pairs(ctx, paths, loc, i, j)
            ctx.count("geometry_checked", int(i.size))
            ctx.count("geometry_rejected", int((~ok).sum()))
            return ok

        return check

    def _view_arrays(self, table: pa.Table, which: str, rows: np.ndarray):
        """(hashes (m, V), thumbnails (m, V, 256), valid (m, V)) of the crop views of ``rows``; None if none."""
        nv = len(self.params.views)
        if nv == 0 or rows.size == 0:
            return None
        col = table.column(f"view_{which}").combine_chunks().take(pa.array(rows))
        flat = col.flatten()
        if len(flat) != rows.size * nv:  # map outputs of another crop_views setting
            return None
        vok = ~np.asarray(flat.is_null().to_numpy(zero_copy_only=False), bool).reshape(rows.size, nv)
        if not vok.any():
            return None
        hv = np.asarray(flat.fill_null(0).to_numpy(), np.uint64).reshape(rows.size, nv)
        tflat = table.column("view_thumb").combine_chunks().take(pa.array(rows)).flatten()
        raw = [b if b is not None else bytes(256) for b in tflat.to_pylist()]
        tv = np.frombuffer(b"".join(raw), np.uint8).reshape(rows.size, nv, 256)
        return hv, tv, vok

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
