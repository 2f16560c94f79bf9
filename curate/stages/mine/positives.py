"""``mine.positives``: positive partners per kept sample, one ``pairs`` row each, kind in ``positive_kind``.

Kinds (``kinds``):

* ``near_duplicate`` - the copies dedup removed in favour of the anchor (from
  dedup.apply's ``removals`` log, else the ``decisions`` tables; chains are
  followed to the kept representative). A removed copy is a natural second
  view; its image stays available from the ingested samples (the shard stage
  inlines it). Score: the dedup score (cosine, 1 - hamming/64, jaccard, 1.0).
* ``nn`` - the ``nn_k`` nearest kept neighbours in embedding space: offline
  NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends") with a
  fixed support set. Optional ``nn_min_score``.
* ``adjacent_slice`` - same ``group_id`` and ``|slice_index difference| <= slice_k``
  (neighbouring slices of one CT/MR volume, as in medical SSL).
* ``same_label`` - ``same_label_per_anchor`` random other samples with the
  anchor's label (supervised-contrastive style), when labels exist.
* ``cross_class`` - for each ``class_pairs`` entry ``[a, b]`` a random sample of
  class ``b`` for every anchor of class ``a`` (and the reverse when
  ``symmetric``), with ``class_pair = "a-b"`` (Hydra-style class-pair ids).

Scores other than near_duplicate are embedding cosines. A kind without the
data it needs (no labels, no slices, no dedup run) is skipped and counted
(``skipped_<kind>``). Upstream negative rows pass through unchanged.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curate import schemas
from curate.ops import faiss_knn
from curate.stage import GlobalStage, StageContext
from curate.stages.mine import _common as C

KINDS = ("near_duplicate", "nn", "adjacent_slice", "same_label", "cross_class")


class PositivesParams(C.KnnParams):
    kinds: list[Literal["near_duplicate", "nn", "adjacent_slice", "same_label", "cross_class"]] = Field(
        default_factory=lambda: ["near_duplicate", "nn", "adjacent_slice"],
        description="positive kinds to mine (same_label / cross_class use labels: off by default for SSL)")
    nn_k: int = Field(1, ge=1, le=256, description="nn: neighbours per anchor")
    nn_min_score: float | None = Field(None, description="nn: keep neighbours with cosine >= this")
    slice_k: int = Field(1, ge=1, description="adjacent_slice: max |slice_index difference|")
    same_label_per_anchor: int = Field(1, ge=1, le=64, description="same_label: partners per anchor")
    class_pairs: list[tuple[int, int]] = Field(default_factory=list, description="cross_class: [[a, b], ...] labels")
    symmetric: bool = Field(True, description="cross_class: also anchors of b get a partner of a")
    max_near_duplicates: int = Field(8, ge=1, description="near_duplicate: partners per anchor at most")

    @field_validator("kinds")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"kinds is empty; choose from {list(KINDS)}")
        return list(dict.fromkeys(v))


class _Rows:
    """Accumulates positive rows as arrays: anchor row index, partner id, kind, score, class pair."""

    def __init__(self):
        self.a: list[np.ndarray] = []
        self.p: list[np.ndarray] = []
        self.kind: list[np.ndarray] = []
        self.s: list[np.ndarray] = []
        self.cp: list[np.ndarray] = []

    def add(self, anchors: np.ndarray, partners: np.ndarray, kind: str, scores: np.ndarray,
            class_pair: np.ndarray | None = None) -> int:
        n = len(anchors)
        self.a.append(np.asarray(anchors, np.int64))
        self.p.append(np.asarray(partners, object))
        self.kind.append(np.full(n, kind, object))
        self.s.append(np.asarray(scores, np.float32))
        self.cp.append(np.full(n, None, object) if class_pair is None else np.asarray(class_pair, object))
        return n

    def table(self, kept: C.Kept, sel_anchor: np.ndarray) -> pa.Table:
        """Rows whose anchor is in ``sel_anchor`` (bool over kept rows)."""
        if not self.a:
            return schemas.PAIRS.empty_table()
        a, p, k, s, cp = (np.concatenate(x) for x in (self.a, self.p, self.kind, self.s, self.cp))
        m = sel_anchor[a]
        n = int(m.sum())
        return pa.table({
            "anchor_id": pa.array(kept.ids[a[m]], pa.string()),
            "positive_id": pa.array(p[m], pa.string()),
            "positive_kind": pa.array(k[m], pa.string()),
            "positive_score": pa.array(s[m], pa.float32()),
            "class_pair": pa.array(cp[m], pa.string()),
            "negative_ids": pa.nulls(n, pa.list_(pa.string())),
            "negative_scores": pa.nulls(n, pa.list_(pa.float32())),
        }, schema=schemas.PAIRS)


def _cos(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x[a], x[b]).astype(np.float32) if len(a) else np.zeros(0, np.float32)


def near_duplicate_pairs(kept: C.Kept, removed: pa.Table, max_per_anchor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor rows, removed ids, scores): removed copies resolved to their kept representative."""
    if removed.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, np.float32)
    removed = removed.filter(pc.is_valid(removed.column("representative_id")))
    sid = np.asarray(removed.column("sample_id").to_pylist(), object)
    rep = np.asarray(removed.column("representative_id").to_pylist(), object)
    score = removed.column("score").cast(pa.float32()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    first = {}
    for s_, r_ in zip(sid.tolist(), rep.tolist()):
        first.setdefault(s_, r_)  # first method's decision wins (pipeline order)
    row = C.row_index(kept.ids)
    target = []
    for r_ in rep.tolist():
        hops = 0
        while r_ not in row and r_ in first and hops < 16:  # follow chains of removed representatives
            r_, hops = first[r_], hops + 1
        target.append(row.get(r_, -1))
    target = np.asarray(target, np.int64)
    ok = (target >= 0) & (sid != kept.ids[np.maximum(target, 0)])
    # one row per (anchor, removed id); cap per anchor in score order
    a, p, s = target[ok], sid[ok], score[ok]
    key = np.char.add(a.astype(str), np.char.add("|", p.astype(str))) if len(a) else np.zeros(0, str)
    _, uniq = np.unique(key, return_index=True)
    a, p, s = a[uniq], p[uniq], s[uniq]
    order = np.lexsort((-np.nan_to_num(s, nan=-1.0), a))
    a, p, s = a[order], p[order], s[order]
    if len(a):
        start = np.r_[0, np.flatnonzero(np.diff(a)) + 1]
        rank = np.arange(len(a)) - np.repeat(start, np.diff(np.r_[start, len(a)]))
        keep = rank < max_per_anchor
        a, p, s = a[keep], p[keep], s[keep]
    return a, p, s


def adjacent_slice_pairs(kept: C.Kept, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(anchor rows, partner rows) with the same group and 0 < |slice difference| <= k, both directions."""
    has = np.flatnonzero((kept.group >= 0) & (kept.slice_index >= 0))
    if len(has) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = has[np.lexsort((kept.slice_index[has], kept.group[has]))]
    g, sl = kept.group[order], kept.slice_index[order]
    src, dst = [], []
    for off in range(1, len(order)):
        same = (g[off:] == g[:-off])
        if not same.any():
            break
        d = sl[off:] - sl[:-off]
        ok = same & (d <= k) & (d > 0)
        if not ok.any() and not (same & (d <= k)).any():
            break
        i = np.flatnonzero(ok)
        src += [order[i], order[i + off]]
        dst += [order[i + off], order[i]]
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(src), np.concatenate(dst)


def same_label_pairs(labels: np.ndarray, per_anchor: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(anchor rows, partner rows): random other members of the anchor's label."""
    lab = np.flatnonzero(labels >= 0)
    if len(lab) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = lab[np.argsort(labels[lab], kind="stable")]
    sl = labels[order]
    start = np.r_[0, np.flatnonzero(np.diff(sl)) + 1]
    size = np.diff(np.r_[start, len(order)])
    blk_start = np.repeat(start, size)
    blk_size = np.repeat(size, size)
    pos = np.arange(len(order)) - blk_start
    src, dst = [], []
    ok = blk_size > 1
    for _ in range(per_anchor):
        off = 1 + np.floor(rng.random(len(order)) * np.maximum(blk_size - 1, 1)).astype(np.int64)
        j = blk_start + (pos + off) % np.maximum(blk_size, 1)
        src.append(order[ok])
        dst.append(order[j[ok]])
    return np.concatenate(src), np.concatenate(dst)


def cross_class_pairs(labels: np.ndarray, pairs: list[tuple[int, int]], symmetric: bool,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src, dst, cp = [], [], []
    for a, b in pairs:
        pid = f"{a}-{b}"
        for x, y in ((a, b), (b, a)) if symmetric and a != b else ((a, b),):
            ia, ib = np.flatnonzero(labels == x), np.flatnonzero(labels == y)
            if len(ia) == 0 or len(ib) == 0:
                continue
            j = ib[np.floor(rng.random(len(ia)) * len(ib)).astype(np.int64)]
            ok = j != ia
            src.append(ia[ok])
            dst.append(j[ok])
            cp.append(np.full(int(ok.sum()), pid, object))
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object)
    return np.concatenate(src), np.concatenate(dst), np.concatenate(cp)


class MinePositives(GlobalStage):
    key: ClassVar[str] = "mine.positives"
    version: ClassVar[str] = "1"
    Params = PositivesParams
    inputs: ClassVar[tuple[str, ...]] = ("samples", "embeddings", "removals", "decisions", "pairs")
    requires: ClassVar[tuple[str, ...]] = ("samples", "embeddings")
    needs_settled: ClassVar[tuple[str, ...]] = ("decisions",)
    outputs: ClassVar[tuple[str, ...]] = ("pairs",)

    def _removed(self, ctx: StageContext) -> pa.Table | None:
        cols = ["sample_id", "representative_id", "score"]
        if ctx.has("removals"):
            return ctx.read_all("removals", columns=cols)
        if ctx.has("decisions"):
            parts = [t.filter(pc.invert(t.column("keep"))).select(cols)
                     for _, t in ctx.read_every("decisions", columns=cols + ["keep"])]
            return pa.concat_tables(parts) if parts else None
        return None

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, pa.Table]:
        p: PositivesParams = self.params
        kept, missing = C.load_kept(ctx, self.key)
        if missing:
            ctx.count("no_embedding", missing)
        seed = ctx.seed if p.seed is None else p.seed
        rng = np.random.default_rng([seed, 0x905])
        rows = _Rows()
        n = len(kept)
        for kind in p.kinds:
            if n == 0:
                break
            if kind == "near_duplicate":
                removed = self._removed(ctx)
                if removed is None:
                    ctx.count("skipped_near_duplicate_no_dedup")
                    continue
                a, pid_, s = near_duplicate_pairs(kept, removed, p.max_near_duplicates)
                ctx.count("near_duplicate", rows.add(a, pid_, kind, s))
            elif kind == "nn":
                if n < 2:
                    continue
                k = min(p.nn_k + 1, n)
                scores, ids, info = faiss_knn.knn(kept.x, k, C.work_dir(ctx), p.knn_spec(seed),
                                                  p.block_size, ctx.map)
                if "recall_at_k" in info:
                    ctx.counters["knn_recall"] = info["recall_at_k"]
                anchors = np.repeat(np.arange(n), ids.shape[1]).reshape(ids.shape)
                ok = (ids >= 0) & (ids != anchors)
                # keep the first nn_k non-self neighbours
                ok &= np.cumsum(ok, axis=1) <= p.nn_k
                if p.nn_min_score is not None:
                    ok &= scores >= p.nn_min_score
                ctx.count("nn", rows.add(anchors[ok], kept.ids[ids[ok]], kind, scores[ok]))
            elif kind == "adjacent_slice":
                a, b = adjacent_slice_pairs(kept, p.slice_k)
                if len(a) == 0 and not ((kept.group >= 0) & (kept.slice_index >= 0)).any():
                    ctx.count("skipped_adjacent_slice_no_slices")
                    continue
                ctx.count("adjacent_slice", rows.add(a, kept.ids[b], kind, _cos(kept.x, a, b)))
            elif kind == "same_label":
                if not kept.has_labels:
                    ctx.count("skipped_same_label_no_labels")
                    continue
                a, b = same_label_pairs(kept.label, p.same_label_per_anchor, rng)
                ctx.count("same_label", rows.add(a, kept.ids[b], kind, _cos(kept.x, a, b)))
            elif kind == "cross_class":
                if not kept.has_labels or not p.class_pairs:
                    ctx.count("skipped_cross_class_no_labels_or_pairs")
                    continue
                a, b, cp = cross_class_pairs(kept.label, p.class_pairs, p.symmetric, rng)
                ctx.count("cross_class", rows.add(a, kept.ids[b], kind, _cos(kept.x, a, b), cp))
        out = {}
        for pid in ctx.partitions:
            up = C.negative_rows(C.upstream_pairs(ctx, pid))
            mine = rows.table(kept, kept.pids == pid) if n else schemas.PAIRS.empty_table()
            out[pid] = pa.concat_tables([mine, up])
        ctx.count("anchors", n)
        return out
