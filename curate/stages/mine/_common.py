"""What both mining stages read: the kept samples with their embeddings, near-duplicate groups, pairs.

The ``pairs`` table holds positives and negatives in one schema (see
:mod:`curate.stages.mine`): a *positive row* has ``positive_kind`` set and
``negative_ids`` null; a *negative row* (one per anchor, from mine.negatives)
has ``negative_ids`` set (possibly empty), ``positive_kind`` null, and the
reference positive used for the margin guard in ``positive_id`` /
``positive_score``. Each mining stage passes the other kind's upstream rows
through, so the latest ``pairs`` table always holds both.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pydantic import Field

from curate import io, schemas
from curate.config import StageParams, execution_field
from curate.ops import faiss_knn
from curate.errors import CurateError
from curate.ops.unionfind import components
from curate.stage import StageContext


class KnnParams(StageParams):
    """FAISS kNN settings shared by the mining stages (see :mod:`curate.ops.faiss_knn`)."""

    index: str = Field("auto", pattern="^(auto|flat|ivf|hnsw)$",
                       description="auto: exact IndexFlatIP up to exact_max vectors, else ivf")
    exact_max: int = Field(50_000, ge=1, description="largest set searched exactly (IndexFlatIP)")
    nlist: int | None = Field(None, ge=1, description="ivf lists (default 2 sqrt(n))")
    nprobe: int = Field(8, ge=1, description="ivf lists probed per query (recall is measured and reported)")
    hnsw_m: int = Field(32, ge=4, description="hnsw graph degree")
    ef_search: int = Field(128, ge=8, description="hnsw search breadth")
    block_size: int = execution_field(16384, ge=64, description="anchors per kNN task (one Dask task each)")
    seed: int | None = Field(None, description="sampling / index seed (default: the pipeline seed)")

    def knn_spec(self, seed: int) -> faiss_knn.KnnSpec:
        return faiss_knn.KnnSpec(self.index, self.exact_max, self.nlist, self.nprobe, self.hnsw_m, self.ef_search, seed)


@dataclass
class Kept:
    """The kept samples (rows with an embedding), in sample_id order."""

    ids: np.ndarray  # object array of sample_id
    pids: np.ndarray  # object array: partition of each row
    x: np.ndarray  # (n, d) float32, L2-normalised
    label: np.ndarray  # int64, -1 unknown
    group: np.ndarray  # int64 code of group_id, -1 unknown
    slice_index: np.ndarray  # int64, -1 unknown
    dup: np.ndarray  # int64 near-duplicate component code (unique per row when it has no partner)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_labels(self) -> bool:
        return bool((self.label >= 0).any())


def _codes(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dictionary codes of a nullable column; null -> -1."""
    enc = pc.dictionary_encode(col)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks() if enc.num_chunks != 1 else enc.chunk(0)
        if isinstance(enc, pa.ChunkedArray):  # pragma: no cover
            enc = enc.combine_chunks()
    idx = enc.indices
    return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _int_col(t: pa.Table, name: str, n: int) -> np.ndarray:
    if name not in t.column_names:
        return np.full(n, -1, np.int64)
    return np.asarray(t.column(name).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def embeddings_matrix(emb: pa.Table) -> np.ndarray:
    col = emb.column("embedding").combine_chunks()
    d = col.type.list_size if pa.types.is_fixed_size_list(col.type) else None
    vals = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if d is None:
        d = len(vals) // max(1, len(col)) if len(col) else 0
    return vals.reshape(len(col), d)


def dup_edges(ctx: StageContext) -> tuple[np.ndarray, np.ndarray]:
    """(sample_id, representative_id) edges of every upstream decisions / removals table."""
    src, dst = [], []
    for table in ("decisions", "removals"):
        if not ctx.has(table):
            continue
        for _, t in ctx.read_every(table, columns=["sample_id", "representative_id"]):
            t = t.filter(pc.is_valid(t.column("representative_id")))
            src.append(t.column("sample_id").to_numpy(zero_copy_only=False))
            dst.append(t.column("representative_id").to_numpy(zero_copy_only=False))
    if not src:
        return np.zeros(0, object), np.zeros(0, object)
    return np.concatenate(src).astype(object), np.concatenate(dst).astype(object)


def dup_components(ids: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Near-duplicate component code of each of ``ids`` (connected through removed copies too)."""
    n = len(ids)
    if len(src) == 0:
        return np.arange(n, dtype=np.int64)
    allids, inv = np.unique(np.concatenate([ids.astype(str), src.astype(str), dst.astype(str)]), return_inverse=True)
    m = len(ids)
    s, d = inv[m:m + len(src)], inv[m + len(src):]
    lab = components(len(allids), s, d)
    return lab[inv[:m]].astype(np.int64)


def load_kept(ctx: StageContext, stage_key: str) -> tuple[Kept, int]:
    """Kept samples with embeddings across ``ctx.partitions``; returns (kept, rows without an embedding)."""
    if not ctx.has("embeddings"):
        raise CurateError(f"{stage_key}: needs the `embeddings` table; add `- stage: embed` before it in the pipeline")
    ids, pids, xs, meta = [], [], [], []
    missing = 0
    cols = ["sample_id", "group_id", "label", "slice_index"]
    for pid in ctx.partitions:
        s = ctx.read("samples", pid, columns=cols)
        if s is None or s.num_rows == 0:
            continue
        e = ctx.read("embeddings", pid)
        if e is None:
            missing += s.num_rows
            continue
        pos = pc.index_in(s.column("sample_id"), value_set=e.column("sample_id").combine_chunks())
        ok = pc.is_valid(pos)
        n_ok = int(pc.sum(ok.cast(pa.int64())).as_py() or 0)
        missing += s.num_rows - n_ok
        if n_ok < s.num_rows:
            s, pos = s.filter(ok), pos.filter(ok)
        xs.append(embeddings_matrix(e.take(pos)))
        ids.append(s.column("sample_id").to_numpy(zero_copy_only=False))
        pids.append(np.full(s.num_rows, pid, dtype=object))
        meta.append(s)
    if not ids:
        z = np.zeros(0, np.int64)
        return Kept(np.zeros(0, object), np.zeros(0, object), np.zeros((0, 1), np.float32), z, z, z, z), missing
    m = pa.concat_tables(meta, promote_options="permissive")
    ids_a = np.concatenate(ids).astype(object)
    # rows in sample_id order, so that no seeded draw or tie depends on how the data were partitioned
    order = np.argsort(ids_a, kind="stable")
    ids_a, m = ids_a[order], m.take(pa.array(order))
    pids = [np.concatenate(pids)[order]]
    x = np.concatenate(xs)[order]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)
    n = len(ids_a)
    src, dst = dup_edges(ctx)
    kept = Kept(ids=ids_a, pids=np.concatenate(pids), x=x, label=_int_col(m, "label", n),
                group=_codes(m.column("group_id")) if "group_id" in m.column_names else np.full(n, -1, np.int64),
                slice_index=_int_col(m, "slice_index", n), dup=dup_components(ids_a, src, dst))
    return kept, missing


def upstream_pairs(ctx: StageContext, pid: str) -> pa.Table:
    t = ctx.read("pairs", pid) if ctx.has("pairs") else None
    return schemas.PAIRS.empty_table() if t is None else schemas.check_schema(t, schemas.PAIRS, "upstream pairs")


def positive_rows(t: pa.Table) -> pa.Table:
    return t.filter(pc.is_valid(t.column("positive_kind")))


def negative_rows(t: pa.Table) -> pa.Table:
    return t.filter(pc.is_valid(t.column("negative_ids")))


def work_dir(ctx: StageContext, name: str = "knn") -> str:
    """The folder for the kNN index files the tasks share: ``ctx.scratch(name, shared=True)``, i.e.
    RUN_DIR/scratch/_shared/<name> (both mining stages reuse one index there), seen by every worker that
    sees the run directory. faiss and the block tasks read local files, so a run directory on object
    storage still falls back to a local temp folder (single-machine clusters only)."""
    d = ctx.scratch(name, shared=True)
    fs, p = io.fs_and_path(d)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if not ("file" in protocols or "local" in protocols):
        logging.getLogger("curate").warning("mining: the kNN index of a run dir on %s is kept in a local temp folder; "
                                            "workers on other machines cannot see it", protocols[0])
        p = os.path.join(tempfile.gettempdir(), "curate", os.path.basename(io.fs_and_path(ctx.run_dir)[1].rstrip("/")),
                         name)
    os.makedirs(p, exist_ok=True)
    return p


def row_index(ids: np.ndarray) -> dict:
    return {s: i for i, s in enumerate(ids.tolist())}
