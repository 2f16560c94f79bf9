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
                    keep: np.ndarray, cluster: np.ndarray, score: np.ndarray, reasons: np.ndarray,
                    what: str, undecided: np.ndarray | None = None, undecided_reason: str = "") -> dict[str, pa.Table]:
    """Per-partition decision tables.

    ``cluster[i]`` is the row naming row i's group (its first row); rows in a group of one are kept
    with reason "unique". A removed row names ``rep[i]``, ``score[i]`` and ``reasons[i]``; a kept
    row of a larger group says how many rows were removed in its favour. ``undecided`` rows (no
    hash / no text) are kept with ``undecided_reason`` and no cluster.
    """
    n = table.num_rows
    ids = np.array(table.column("sample_id").to_pylist(), dtype=object)
    undecided = np.zeros(n, bool) if undecided is None else undecided
    size = np.bincount(cluster, minlength=n)[cluster] if n else np.zeros(0, np.int64)
    grouped = (size > 1) & ~undecided
    removed = grouped & ~keep
    n_for = np.bincount(rep[removed], minlength=n) if n else np.zeros(0, np.int64)
    rep_ids = np.where(removed, ids[rep], None)
    cluster_ids = np.where(grouped, np.char.add(f"{method}:", ids[cluster].astype(str)).astype(object), None)
    reason = np.full(n, "unique", dtype=object)
    kept_grouped = np.flatnonzero(grouped & keep)
    reason[kept_grouped] = [f"representative of {int(k)} {what}" if k else
                            f"kept: in a {what} cluster but not within the threshold of a kept row"
                            for k in n_for[kept_grouped]]
    reason[removed] = reasons[removed]
    reason[undecided] = undecided_reason
    full = pa.table({
        "sample_id": pa.array(ids.tolist(), pa.string()),
        "method": pa.array([method] * n, pa.string()),
        "keep": pa.array((~removed).tolist(), pa.bool_()),
        "representative_id": pa.array(rep_ids.tolist(), pa.string()),
        "score": pa.array(np.where(removed, score, np.nan), pa.float64(), mask=~removed),
        "cluster_id": pa.array(cluster_ids.tolist(), pa.string()),
        "reason": pa.array(reason.tolist(), pa.string()),
    }, schema=schemas.DECISIONS)
    return {pid: full.filter(pa.array(part == k)) for k, pid in enumerate(ctx.partitions)}


def first_by_rank(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For every row, the row of its label with the smallest rank (the group's "first" row)."""
    from curate.ops.unionfind import representatives

    return representatives(labels, rank)


def split_by_partition(ctx: StageContext, table: pa.Table, part: np.ndarray) -> dict[str, pa.Table]:
    return {pid: table.filter(pa.array(part == k)) for k, pid in enumerate(ctx.partitions)}
