"""``dedup.apply``: resolve every upstream decision table into one kept set and a removal log.

Finding duplicates and removing them are separate steps (datatrove #370:
users could not tell what was removed and why). Each dedup method (exact,
phash, minhash, semantic) decides on its own, so their choices can disagree:
exact may remove A for B while pHash removes B for C. Taking the union of
their removals would then remove a group's every member. This stage therefore
treats every removal decision ``sample -> representative`` as an undirected
*duplicate edge* (the pair was within that method's threshold) and resolves
all edges at once, keep-first without chaining
(:func:`curate.ops.unionfind.greedy_keep_first`):

1. samples are walked in priority order: first those no method removed (each
   method's own keepers), then the others; ties in source order
   (``source_uri``, ``source_index``, ``sample_id``);
2. a sample is removed when a duplicate edge joins it to an already *kept*
   sample, which becomes its ``representative_id``; among several, the edge of
   the earliest method in pipeline order wins, then a method's own direction,
   then the higher score.

Filters (``quality:<check>``, ``outliers``, ``decontaminate:<set>``; see
``schemas.is_filter``) remove a sample for what it is, with no representative:
such a sample is removed first (its first filter decision in pipeline order is
logged, representative_id null), and its duplicate edges are dropped, so its
duplicates are resolved among the remaining samples.

So every removed sample names a kept sample it is itself within a method's
threshold of (no chaining), no duplicate group loses all its members (the
first sample of each group is always kept), and where the methods agree the
result is exactly theirs. The stage checks both properties and fails the run
if either is broken. Samples a stage quarantined after ingest are neither kept
nor removed (``curate.stats`` counts them as quarantined).

``map`` (per partition, on workers) reduces the decision tables to edges;
``reduce`` resolves the (small) edge graph; ``finish`` (per partition, on
workers) writes the kept ``samples`` and the ``removals`` log, so images never
pass through the driver.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate import schemas
from curate.config import StageParams
from curate.errors import StageError
from curate.ops import unionfind
from curate.stage import GlobalStage, StageContext
from curate.stages.dedup._decisions import concat_mapped, source_rank

SWAPPED = "; resolved across methods: kept in its place, since its representative was removed by another method"


class ApplyParams(StageParams):
    methods: list[str] | None = Field(None, description="apply only decisions whose method is listed "
                                                        "(e.g. [exact, phash]); default: all")


EDGE_SCHEMA = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string()),
    pa.field("source_index", pa.int64()),
    pa.field("order", pa.int32(), nullable=False),  # producer position in the pipeline; -1: the sample itself
    pa.field("producer", pa.string()),
    pa.field("method", pa.string()),
    pa.field("representative_id", pa.string()),
    pa.field("score", pa.float64()),
    pa.field("cluster_id", pa.string()),
    pa.field("reason", pa.string()),
])


class ApplyDedup(GlobalStage):
    key = "dedup.apply"
    version = "2"
    Params = ApplyParams
    inputs = ("samples", "decisions")
    settles = ("decisions",)
    outputs = ("samples", "removals")
    map_schema = EDGE_SCHEMA

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        """One row per sample (``order`` -1) plus one per removal decision about it (its edges)."""
        p: ApplyParams = self.params
        ids = table.column("sample_id").combine_chunks()
        parts = [pa.table({"sample_id": ids, "source_uri": table.column("source_uri"),
                           "source_index": table.column("source_index"),
                           "order": pa.array(np.full(table.num_rows, -1, np.int32))})]
        for k, up in enumerate(ctx.producers("decisions")):
            dec = ctx.read_from(up, "decisions")
            if dec is None:
                continue
            dec = dec.filter(pc.and_(pc.invert(dec.column("keep")), pc.is_in(dec.column("sample_id"), ids)))
            dec = dec.filter(pc.or_(pc.is_valid(dec.column("representative_id")), _filter_mask(dec.column("method"))))
            if p.methods is not None:
                dec = dec.filter(pc.is_in(dec.column("method"), pa.array(p.methods, pa.string())))
            parts.append(pa.table({
                "sample_id": dec.column("sample_id"), "order": pa.array(np.full(dec.num_rows, k, np.int32)),
                "producer": pa.array([up.dirname] * dec.num_rows, pa.string()),
                **{c: dec.column(c) for c in ("method", "representative_id", "score", "cluster_id", "reason")}}))
        return pa.concat_tables([_widen(t) for t in parts])

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, dict]:
        table, part = concat_mapped(ctx, mapped, EDGE_SCHEMA)
        order = table.column("order").to_numpy()
        node_rows = np.flatnonzero(order < 0)
        nodes = table.take(pa.array(node_rows))
        ids = np.array(nodes.column("sample_id").to_pylist(), dtype=object)
        n = ids.size
        uniq, first = np.unique(ids.astype(str), return_index=True) if n else (np.zeros(0, str), np.zeros(0, np.int64))
        if uniq.size != n:
            raise StageError("dedup.apply", "(all)", f"{n - uniq.size} sample_id(s) occur twice; list each source once")
        quarantined = ctx.quarantined_sample_ids()
        is_q = np.fromiter((s in quarantined for s in ids), bool, n)

        def node_of(values: list) -> np.ndarray:
            v = np.array(["" if x is None else x for x in values], dtype=str)
            pos = np.searchsorted(uniq, v)
            pos = np.minimum(pos, max(uniq.size - 1, 0))
            hit = (uniq[pos] == v) if uniq.size else np.zeros(v.size, bool)
            return np.where(hit, first[pos] if uniq.size else 0, -1)

        erow = np.flatnonzero(order >= 0)
        edges = table.take(pa.array(erow))
        src = node_of(edges.column("sample_id").to_pylist())
        dst = node_of(edges.column("representative_id").to_pylist())
        # filters (quality, outliers, decontaminate) remove a sample with no representative: not an edge
        is_filter_edge = (np.asarray(_filter_mask(edges.column("method")), bool)
                          & np.asarray(pc.is_null(edges.column("representative_id")), bool))
        filter_edge = np.full(n, -1, np.int64)  # the first filter decision (pipeline order) of each node
        f_rows = np.flatnonzero(is_filter_edge & (src >= 0))
        if f_rows.size:
            f_rows = f_rows[np.lexsort((f_rows, order[erow][f_rows]))]
            f_src = src[f_rows]
            _, lead = np.unique(f_src, return_index=True)
            filter_edge[f_src[lead]] = f_rows[lead]
        is_f = (filter_edge >= 0) & ~is_q
        ctx.count("filtered", int(is_f.sum()))
        live = (src >= 0) & (dst >= 0) & (src != dst)
        live[live] &= ~is_q[src[live]] & ~is_q[dst[live]] & ~is_f[src[live]] & ~is_f[dst[live]]
        ctx.count("edges", int(erow.size - is_filter_edge.sum()))
        ctx.count("edges_to_missing_or_quarantined", int((~live & ~is_filter_edge).sum()))
        e_order = order[erow].astype(np.int64)
        e_score = np.nan_to_num(np.asarray(edges.column("score").fill_null(0.0).to_numpy(), np.float64))
        src, dst, e_order, e_score, e_idx = src[live], dst[live], e_order[live], e_score[live], np.flatnonzero(live)

        removed_any = np.zeros(n, bool)
        removed_any[src] = True
        base = source_rank(nodes)
        rank = np.argsort(np.lexsort((base, removed_any)), kind="stable").astype(np.int64)
        # preference among a sample's kept neighbours; the greedy walk picks the highest
        pref_fwd = -10.0 * e_order + np.clip(e_score, -1, 1)  # the method's own direction
        pref_rev = pref_fwd - 3.0  # the method removed the *other* sample in favour of this one
        g_src = np.concatenate([src, dst])
        g_dst = np.concatenate([dst, src])
        g_pref = np.concatenate([pref_fwd, pref_rev])
        g_edge = np.concatenate([e_idx, e_idx])
        g_swap = np.concatenate([np.zeros(src.size, bool), np.ones(src.size, bool)])
        # greedy_keep_first orients every edge from the earlier to the later node itself; keep only the
        # orientation whose "later" end is g_src so each preference belongs to the sample it removes
        later_is_src = rank[g_src] > rank[g_dst]
        g_src, g_dst, g_pref, g_edge, g_swap = (x[later_is_src] for x in (g_src, g_dst, g_pref, g_edge, g_swap))
        keep, rep = unionfind.greedy_keep_first(n, g_src, g_dst, g_pref, rank)
        keep &= ~is_q & ~is_f

        # the chosen edge of every removed node: the best-preferred edge between it and its representative
        chosen = np.full(n, -1, np.int64)
        swapped = np.zeros(n, bool)
        if g_src.size:
            by = np.lexsort((-g_pref, g_dst, g_src))
            s_sorted, d_sorted = g_src[by], g_dst[by]
            head = np.r_[True, (s_sorted[1:] != s_sorted[:-1]) | (d_sorted[1:] != d_sorted[:-1])]
            hs, hd, he, hw = s_sorted[head], d_sorted[head], g_edge[by][head], g_swap[by][head]
            code = hs.astype(np.int64) * max(n, 1) + hd
            gone = np.flatnonzero(~keep & ~is_q & ~is_f)
            pos = np.searchsorted(code, gone.astype(np.int64) * max(n, 1) + rep[gone])
            chosen[gone], swapped[gone] = he[pos], hw[pos]
        self._check(ids, keep, rep, is_q | is_f, src, dst)

        removed = np.flatnonzero(~keep & ~is_q & ~is_f)
        first_method = np.full(n, -1, np.int64)  # the rep the first removing method named
        if src.size:
            o = np.lexsort((e_order, src))
            s_o = src[o]
            lead = np.r_[True, s_o[1:] != s_o[:-1]]
            first_method[s_o[lead]] = dst[o][lead]
        ctx.count("rescued", int((removed_any & keep).sum()))
        ctx.count("representative_changed", int((first_method[removed] != rep[removed]).sum()))
        labels = unionfind.components(n, src, dst)
        grouped = np.bincount(labels, minlength=n)[labels] > 1
        ctx.count("duplicate_groups", int(np.unique(labels[grouped]).size))
        ctx.count("groups_emptied", 0)

        cols = {c: edges.column(c).to_pylist() for c in ("producer", "method", "score", "cluster_id", "reason")}
        node_part = part[node_rows]
        states: dict[str, dict] = {pid: {"removed": {}, "quarantined": []} for pid in ctx.partitions}
        for i in removed.tolist():
            e = int(chosen[i])
            reason = (cols["reason"][e] or "") + (SWAPPED if swapped[i] else "")
            states[ctx.partitions[node_part[i]]]["removed"][ids[i]] = (
                cols["producer"][e], cols["method"][e], ids[rep[i]], cols["score"][e], cols["cluster_id"][e], reason)
        for i in np.flatnonzero(is_f).tolist():
            e = int(filter_edge[i])
            states[ctx.partitions[node_part[i]]]["removed"][ids[i]] = (
                cols["producer"][e], cols["method"][e], None, cols["score"][e], cols["cluster_id"][e],
                cols["reason"][e])
        for i in np.flatnonzero(is_q).tolist():
            states[ctx.partitions[node_part[i]]]["quarantined"].append(ids[i])
        return states

    @staticmethod
    def _check(ids, keep, rep, is_q, src, dst) -> None:
        """The invariant: every removed sample names a kept one; no duplicate group is emptied."""
        gone = np.flatnonzero(~keep & ~is_q)
        bad = gone[~keep[rep[gone]]]
        if bad.size:
            raise StageError("dedup.apply", "(all)", f"{bad.size} removed sample(s) name a representative that is "
                             f"not kept (e.g. {ids[bad[0]]}); this is a bug, please report it")
        n = ids.size
        labels = unionfind.components(n, src, dst)
        has_kept = np.zeros(n, bool)
        np.logical_or.at(has_kept, labels, keep | is_q)
        if not has_kept[labels].all():
            raise StageError("dedup.apply", "(all)", "a duplicate group lost all its members; this is a bug, "
                             "please report it")

    def finish(self, table: pa.Table, ctx: StageContext, state: dict) -> dict[str, pa.Table]:
        removed, quarantined = state["removed"], set(state["quarantined"])
        ids = table.column("sample_id").to_pylist()
        mask = np.fromiter((s not in removed and s not in quarantined for s in ids), bool, len(ids))
        kept = table.filter(pa.array(mask, pa.bool_()))
        rows = []
        for sid in ids:  # input order: deterministic
            if sid in removed:
                producer, method, rep, score, cluster, reason = removed[sid]
                ctx.count(f"removed_by_{producer}")
                rows.append({"sample_id": sid, "method": method, "keep": False, "representative_id": rep,
                             "score": score, "cluster_id": cluster, "reason": reason})
        ctx.count("kept", kept.num_rows)
        ctx.count("removed", len(rows))
        ctx.count("excluded_quarantined", len(quarantined))
        return {"samples": kept, "removals": pa.Table.from_pylist(rows, schema=schemas.DECISIONS)}


def _filter_mask(methods: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """True where a decision's method is a filter (``schemas.is_filter``): removal without a representative."""
    mask = None
    for prefix in schemas.FILTER_PREFIXES:
        m = pc.fill_null(pc.starts_with(methods, prefix), False)
        mask = m if mask is None else pc.or_(mask, m)
    return mask


def _widen(t: pa.Table) -> pa.Table:
    """Add the missing EDGE_SCHEMA columns as nulls and order them."""
    cols = {f.name: (t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type))
            for f in EDGE_SCHEMA}
    return pa.table(cols, schema=EDGE_SCHEMA)
