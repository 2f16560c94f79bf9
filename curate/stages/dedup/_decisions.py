"""Shared plumbing of the hash dedup stages: gather map outputs, order rows, write decision tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import schemas
from curate.stage import StageContext


def concat_mapped(ctx: StageContext, mapped: dict[str, pa.Table], schema: pa.Schema) -> tuple[pa.Table, np.ndarray]:
    """All map outputs in ``ctx.partitions`` order, and the partition index of every row."""
    tables = [mapped.get(pid, schema.empty_table()) for pid in ctx.partitions]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    part = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables]).astype(np.int64)
    return table, part


def source_rank(table: pa.Table) -> np.ndarray:
    """Rank of every row in source order (source_uri, source_index, sample_id): who is "first"."""
    order = pc.sort_indices(table, sort_keys=[("source_uri", "ascending"), ("source_index", "ascending"),
                                              ("sample_id", "ascending")]).to_numpy()
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    return rank


def decisions_table(ctx: StageContext, table: pa.Table, part: np.ndarray, method: str, rep: np.ndarray,
                    keep: np.ndarray, size: np.ndarray, score: np.ndarray, reasons: np.ndarray,
                    what: str, undecided: np.ndarray | None = None, undecided_reason: str = "") -> dict[str, pa.Table]:
    """Per-partition decision tables.

    Rows in a group of one are kept with reason "unique"; in larger groups the
    representative is kept ("representative of N <what>") and the others are
    removed naming it, with ``score`` and ``reasons[i]``. ``undecided`` rows
    (e.g. no text) are kept with ``undecided_reason`` and no cluster.
    """
    n = table.num_rows
    ids = np.array(table.column("sample_id").to_pylist(), dtype=object)
    undecided = np.zeros(n, bool) if undecided is None else undecided
    grouped = (size > 1) & ~undecided
    removed = grouped & ~keep
    rep_ids = np.where(removed, ids[rep], None)
    cluster = np.where(grouped, np.char.add(f"{method}:", ids[rep].astype(str)).astype(object), None)
    out_score = np.where(removed, score, np.nan)
    reason = np.full(n, "unique", dtype=object)
    reason[grouped & keep] = [f"representative of {int(s) - 1} {what}" for s in size[grouped & keep]]
    reason[removed] = reasons[removed]
    reason[undecided] = undecided_reason
    full = pa.table({
        "sample_id": pa.array(ids.tolist(), pa.string()),
        "method": pa.array([method] * n, pa.string()),
        "keep": pa.array((~removed).tolist(), pa.bool_()),
        "representative_id": pa.array(rep_ids.tolist(), pa.string()),
        "score": pa.array(out_score, pa.float64(), mask=~removed),
        "cluster_id": pa.array(cluster.tolist(), pa.string()),
        "reason": pa.array(reason.tolist(), pa.string()),
    }, schema=schemas.DECISIONS)
    return {pid: full.filter(pa.array(part == k)) for k, pid in enumerate(ctx.partitions)}


def split_by_partition(ctx: StageContext, table: pa.Table, part: np.ndarray) -> dict[str, pa.Table]:
    return {pid: table.filter(pa.array(part == k)) for k, pid in enumerate(ctx.partitions)}
