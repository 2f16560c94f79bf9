"""``mine.negatives``: hard negatives per kept sample from FAISS kNN, with false-negative guards.

For every anchor, its kNN over the kept embeddings (exact ``IndexFlatIP`` up to
``exact_max`` vectors, IVF/HNSW beyond with recall@10 measured and recorded in
stats as ``knn_recall``) gives candidates; the anchor itself is dropped and the
rest are ranked 0, 1, ... by similarity. Candidates in the rank window
``[range_min, range_max)`` pass these guards, each switchable and counted
(``rejected_<guard>``) because the nearest "negatives" are often the same thing:

* ``near_duplicate`` - same near-duplicate component (linked through dedup's
  ``decisions`` / ``removals``: sample_id -> representative_id edges);
* ``group`` - same ``group_id`` (same patient / volume);
* ``label`` - same label, when labels are known;
* ``positive`` - one of the anchor's mined positives (always on);
* ``margin`` - score above ``max_neg_ratio`` x the anchor's positive score
  (NV-Retriever, Moreira et al. 2024, TopK-PercPos with 95%: ``max_neg_ratio
  0.95``). The positive score is the anchor's best upstream positive
  (mine.positives) of a ``margin_positive_kinds`` kind (cosine-scored: nn,
  adjacent_slice, same_label), else ``positive_score_default`` (1.0: the
  anchor's own augmented view). With ``margin_calibrate`` (default) scores are
  measured from the median cosine ``b`` of 20,000 seeded random pairs (clipped at
  0): reject s - b > max_neg_ratio x (positive - b). On centred embeddings (pixels
  PCA) b ~ 0 and nothing changes; on encoders whose cosines all crowd near 1
  (ReLU-pooled ``ssl`` features: b = 0.77 on Fashion-MNIST) the plain margin
  rejected most candidates and left 24% of the anchors short (served 76% -> 100%).
* ``manifold`` - label-free, on by default: same fine k-means cluster
  neighbourhood on the data manifold as the anchor (Mining on Manifolds,
  Iscen et al. 2018; see :mod:`manifold`). Measured with labels hidden
  (``benchmarks/mining_quality.py``, Fashion-MNIST 70k, pixels encoder) against
  fine-cluster exclusion, HCL sampling (Robinson et al. 2021), a debiased
  class-prior band (Chuang et al. 2020) and false-negative cancellation with a
  nearest-neighbour support set (Huynh et al. 2022), it is the hardest at a
  false-negative share <= 25% (naive top-k: ~82%): 20% at the 85th percentile of
  random-pair cosine in raw pixels, where the debiased band needs tau+ 0.1 for 26%
  at the 74th; the others stay above 60%. None reached the 90th at <= 25% there.

Of the survivors, ``num_negatives`` are taken: ``top`` (the hardest) or
``semi_hard`` (uniformly from the ``semi_hard_pool`` hardest survivors, as in
InterCLR, Xie et al. 2022). Guards can leave an anchor short (with labels,
most of a class's nearest neighbours share its label): such anchors search on
to rank ``range_extend`` and fill up with the hardest survivors there
(counted: ``anchors_extended``, ``negatives_from_extension``); what is still
missing is counted in ``anchors_short`` / ``anchors_without_negatives``. One ``pairs`` row per anchor: ``negative_ids`` /
``negative_scores`` (hardest first), ``positive_id`` / ``positive_score`` =
the reference positive. Query blocks of ``block_size`` anchors are
independent tasks (``ctx.map``) that return only the selected negatives, so
memory stays O(n x num_negatives) at 1M anchors.
"""

from __future__ import annotations

import hashlib
import os
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate import schemas
from curate.ops import faiss_knn
from curate.stage import GlobalStage, StageContext
from curate.stages.mine import _common as C
from curate.stages.mine import manifold, tradeoff

GUARDS = ("near_duplicate", "group", "label", "positive", "margin", "manifold")


class NegativesParams(C.KnnParams):
    num_negatives: int = Field(8, ge=1, le=1024, description="hard negatives per anchor")
    range_min: int = Field(0, ge=0, description="skip the range_min nearest neighbours (rank window start)")
    range_max: int = Field(50, ge=1, description="consider neighbours ranked below range_max (kNN k = range_max + 1)")
    range_extend: int | None = Field(1000, ge=2, description="anchors the guards leave short of num_negatives "
                                                            "search on to this rank (hardest first); null: off")
    sampling: Literal["top", "semi_hard", "hcl"] = Field(
        "top", description="top: hardest survivors; semi_hard: uniform from the semi_hard_pool hardest (InterCLR); "
                           "hcl: from the pool with probability ~ exp(hcl_beta * score) (Robinson et al. 2021)")
    semi_hard_pool: int = Field(32, ge=1, description="semi_hard / hcl: size M of the top-M pool")
    hcl_beta: float = Field(2.0, ge=0, description="hcl: concentration beta/tau (HCL: beta 1, tau 0.5)")
    guard_near_duplicate: bool = Field(True, description="reject candidates in the anchor's near-duplicate group")
    guard_group: bool = Field(True, description="reject candidates with the anchor's group_id (patient / volume)")
    guard_label: bool = Field(True, description="reject candidates with the anchor's label (when labels exist)")
    guard_margin: bool = Field(True, description="reject candidates scoring above max_neg_ratio x positive score")
    guard_manifold: bool = Field(True, description="reject candidates in the anchor's neighbourhood on the data "
                                                   "manifold (label-free; Iscen et al. 2018, see manifold.py)")
    manifold_clusters: int | None = Field(None, ge=1, description="fine k-means clusters (default n/70, <= 4096)")
    manifold_graph_k: int = Field(10, ge=1, description="neighbours per centroid in the cluster graph")
    manifold_alpha: float = Field(0.9, ge=0, lt=1, description="diffusion alpha (0: exclude the own cluster only)")
    manifold_exclude: float = Field(0.15, ge=0, le=1, description="share of clusters, nearest to the anchor's on the "
                                                                 "manifold, whose members are rejected")
    max_neg_ratio: float = Field(0.95, gt=0, le=1.0, description="TopK-PercPos: negatives must score <= this "
                                                                 "share of the positive's score (NV-Retriever: 0.95)")
    margin_calibrate: bool = Field(True, description="measure the margin from the median cosine of random pairs "
                                                     "(clipped at 0) instead of from 0")
    positive_score_default: float = Field(1.0, description="positive score when the anchor has no mined positive")
    margin_positive_kinds: list[str] = Field(
        default_factory=lambda: ["nn", "adjacent_slice", "same_label"],
        description="positive kinds whose (cosine) score may serve as the margin reference; near_duplicate scores "
                    "are not always cosines and cross_class partners are deliberately far")

    @model_validator(mode="after")
    def _window(self) -> "NegativesParams":
        if self.range_min >= self.range_max:
            raise ValueError(f"range_min ({self.range_min}) must be < range_max ({self.range_max})")
        return self


# ------------------------------------------------------------------ block task
_AUX: dict[tuple, dict] = {}


def _aux(path: str) -> dict:
    key = (path, os.path.getmtime(path))
    hit = _AUX.get(key)
    if hit is None:
        _AUX.clear()
        with np.load(path, allow_pickle=False) as z:
            hit = {k: z[k] for k in z.files}
        _AUX[key] = hit
    return hit


def anchor_seeds(ids: np.ndarray, seed: int) -> np.ndarray:
    """A uint64 per anchor from blake2b(seed|anchor_id): sampling never depends on how the work is chunked."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}|{s}".encode(), digest_size=8).digest(), "little")
                     for s in ids.tolist()], dtype=np.uint64)


def _uniforms(seeds: np.ndarray, k: int) -> np.ndarray:
    """(B, k) uniforms, row i from its anchor's own generator."""
    return np.stack([np.random.default_rng(int(s)).random(k) for s in seeds]) if len(seeds) else np.zeros((0, k))


def _survivors(S: np.ndarray, I: np.ndarray, anchors: np.ndarray, aux: dict, p: dict, lo: int, hi: int,
               counts: dict[str, int]) -> np.ndarray:
    """Candidates ranked in [lo, hi) (self excluded) that pass every enabled guard; guard hits are counted."""
    n = len(aux["dup"])
    valid = (I >= 0) & (I != anchors)
    rank = np.cumsum(valid, axis=1) - 1
    window = valid & (rank >= lo) & (rank < hi)
    J = np.where(I >= 0, I, 0)
    counts["candidates"] = counts.get("candidates", 0) + int(window.sum())
    reject = np.zeros_like(window)
    checks = []
    if p["guard_near_duplicate"]:
        checks.append(("near_duplicate", aux["dup"][J] == aux["dup"][anchors]))
    if p["guard_group"]:
        g = aux["group"]
        checks.append(("group", (g[anchors] >= 0) & (g[J] == g[anchors])))
    if p["guard_label"]:
        lab = aux["label"]
        checks.append(("label", (lab[anchors] >= 0) & (lab[J] == lab[anchors])))
    if len(aux["pos_keys"]):
        keys = anchors * n + J
        checks.append(("positive", np.isin(keys.ravel(), aux["pos_keys"]).reshape(keys.shape)))
    if p["guard_margin"]:
        b = aux["margin_base"] if "margin_base" in aux else np.zeros(1, np.float32)
        checks.append(("margin", S - b[0] > p["max_neg_ratio"] * (aux["pos_score"][anchors] - b[0])))
    if p["guard_manifold"] and "cluster" in aux:
        cl = aux["cluster"]
        checks.append(("manifold", aux["excluded"][cl[anchors], cl[J]]))
    for name, hit in checks:
        hit = hit & window
        counts[f"rejected_{name}"] = counts.get(f"rejected_{name}", 0) + int(hit.sum())
        reject |= hit
    counts["rejected_any"] = counts.get("rejected_any", 0) + int((window & reject).sum())
    return window & ~reject


def _select(ok: np.ndarray, S: np.ndarray, I: np.ndarray, m: int, p: dict,
            seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) (B, m), picks packed to the left in rank order (hardest first), -1 / NaN padding.

    ``top``: the first m survivors. ``semi_hard``: m uniformly from the first ``semi_hard_pool`` survivors
    (InterCLR, Xie et al. 2022). ``hcl``: m from that pool with probability ~ exp(hcl_beta * score), by
    Gumbel-top-k (hardness-concentrated sampling, Robinson et al. 2021). Each row draws from its anchor's seed.
    """
    k = ok.shape[1]
    sampling = p["sampling"]
    if sampling in ("semi_hard", "hcl"):
        pool = ok & (np.cumsum(ok, axis=1) <= p["semi_hard_pool"])
        u = _uniforms(seeds, k)
        if sampling == "hcl":  # Gumbel-max: argmax(beta s + G) samples ~ exp(beta s)
            u = -(p["hcl_beta"] * S.astype(np.float64) - np.log(-np.log(np.clip(u, 1e-300, 1.0 - 1e-16))))
        keys = np.where(pool, u, np.inf)
        pick = np.argsort(keys, axis=1, kind="stable")[:, :m]
        picked = np.take_along_axis(pool, pick, 1)
        pick = np.sort(np.where(picked, pick, k + 1), axis=1)  # back to rank order; unpicked last
        picked = pick <= k
        pick = np.minimum(pick, k - 1)
    else:
        pick = np.argsort(~ok, axis=1, kind="stable")[:, :m]  # survivors first, in rank order
        picked = np.take_along_axis(ok, pick, 1)
    if pick.shape[1] < m:  # fewer candidates than num_negatives (tiny data)
        pad = ((0, 0), (0, m - pick.shape[1]))
        pick, picked = np.pad(pick, pad), np.pad(picked, pad)
    ids = np.where(picked, np.take_along_axis(I, pick, 1), -1).astype(np.int64)
    scores = np.where(picked, np.take_along_axis(S, pick, 1), np.nan).astype(np.float32)
    return ids, scores


def _merge(ids: np.ndarray, scores: np.ndarray, ids2: np.ndarray, sc2: np.ndarray, m: int):
    """Fill each row's -1 slots with the new picks (earlier picks first), dropping ids already picked."""
    dup = (ids2[:, :, None] == ids[:, None, :]).any(2) & (ids2 >= 0)
    ids2, sc2 = np.where(dup, -1, ids2), np.where(dup, np.nan, sc2)
    both_ids = np.concatenate([ids, ids2], axis=1)
    both_sc = np.concatenate([scores, sc2], axis=1)
    order = np.argsort(both_ids < 0, axis=1, kind="stable")[:, :m]
    return np.take_along_axis(both_ids, order, 1), np.take_along_axis(both_sc, order, 1)


def _from_clusters(x: np.ndarray, rows: np.ndarray, aux: dict, p: dict, want: int, counts: dict[str, int]):
    """Last resort for anchors still short: members of the nearest clusters the manifold guard allows,
    (B, L) candidates sorted by cosine, every guard applied again."""
    cent, cl, excl = aux["centroids"], aux["cluster"], aux["excluded"]
    members, starts = aux["members"], aux["member_starts"]
    q = np.ascontiguousarray(x[rows], dtype=np.float32)
    cs = q @ cent.T
    cs[excl[cl[rows]]] = -np.inf
    order = np.argsort(-cs, axis=1, kind="stable")
    lists = []
    for r in range(len(rows)):
        got, cand = 0, []
        for c in order[r]:
            if not np.isfinite(cs[r, c]):
                break
            mem = members[starts[c]:starts[c + 1]]
            cand.append(mem)
            got += len(mem)
            if got >= want:
                break
        lists.append(np.concatenate(cand) if cand else np.zeros(0, np.int64))
    L = max([len(v) for v in lists] + [1])
    I = np.full((len(rows), L), -1, np.int64)
    S = np.full((len(rows), L), -np.inf, np.float32)
    for r, v in enumerate(lists):
        s = x[v] @ q[r] if len(v) else np.zeros(0, np.float32)
        o = np.argsort(-s, kind="stable")
        I[r, :len(v)], S[r, :len(v)] = v[o], s[o]
    return S, I, _survivors(S, I, rows[:, None].astype(np.int64), aux, p, 0, L, counts)


def mine_rows(x: np.ndarray, index, aux: dict, rows: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """Negatives of the anchors ``rows``: (ids (B, m) with -1 padding, scores (B, m), counters).

    Each anchor's result depends only on the anchor (its row and its seed), never on the rows beside it."""
    n, m = len(x), p["num_negatives"]
    seeds = aux["seeds"]
    counts: dict[str, int] = {}
    S, I = index.search(np.ascontiguousarray(x[rows], dtype=np.float32), min(p["range_max"] + 1, n))
    ok = _survivors(S, I, rows[:, None], aux, p, p["range_min"], p["range_max"], counts)
    ids, scores = _select(ok, S, I, m, p, seeds[rows])
    short = np.flatnonzero((ids >= 0).sum(1) < m)
    ext = p.get("range_extend")
    top = dict(p, sampling="top")
    if ext and ext > p["range_max"] and len(short) and n > p["range_max"] + 1:
        # fallback: anchors the guards left short search deeper, ranks [range_max, range_extend), hardest first
        before = int((ids[short] >= 0).sum())
        for c0 in range(0, len(short), 2048):  # bounded memory: 2048 x range_extend candidates at a time
            sub = short[c0:c0 + 2048]
            r = rows[sub]
            S2, I2 = index.search(np.ascontiguousarray(x[r], dtype=np.float32), min(ext + 1, n))
            ok2 = _survivors(S2, I2, r[:, None], aux, p, max(p["range_min"], p["range_max"]), ext, counts)
            ids2, sc2 = _select(ok2, S2, I2, m, top, seeds[r])
            ids[sub], scores[sub] = _merge(ids[sub], scores[sub], ids2, sc2, m)
        counts["anchors_extended"] = len(short)
        counts["negatives_from_extension"] = int((ids[short] >= 0).sum()) - before
    short = np.flatnonzero((ids >= 0).sum(1) < m)
    if len(short) and p["guard_manifold"] and "cluster" in aux:
        # still short: the nearest members of clusters outside the anchor's manifold neighbourhood
        r = rows[short]
        before = int((ids[short] >= 0).sum())
        S3, I3, ok3 = _from_clusters(x, r, aux, p, 4 * m + 16, counts)
        ids3, sc3 = _select(ok3, S3, I3, 2 * m, top, seeds[r])
        ids[short], scores[short] = _merge(ids[short], scores[short], ids3, sc3, m)
        counts["anchors_from_clusters"] = len(short)
        counts["negatives_from_clusters"] = int((ids[short] >= 0).sum()) - before
    got = (ids >= 0).sum(1)
    counts["negatives"] = int(got.sum())
    counts["anchors_short"] = int((got < m).sum())
    counts["anchors_without_negatives"] = int((got == 0).sum())
    return ids, scores, counts


def mine_block(item: tuple) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Task: negatives of anchors [a, b) (see :func:`mine_rows`)."""
    vec_path, index_path, aux_path, a, b, p = item
    x, index = faiss_knn._load(vec_path, index_path)
    faiss_knn.set_search_params(index, p["knn"])
    return mine_rows(x, index, _aux(aux_path), np.arange(a, b, dtype=np.int64), p)


def random_pair_median(x: np.ndarray, ids: np.ndarray, seed: int, pairs: int = 20000) -> float:
    """Median cosine of seeded random pairs (rows in sample_id order: independent of partitioning), >= 0."""
    if len(x) < 2:
        return 0.0
    order = np.argsort(ids.astype(str), kind="stable")
    rng = np.random.default_rng(seed)
    a, b = order[rng.integers(0, len(x), pairs)], order[rng.integers(0, len(x), pairs)]
    keep = a != b
    return max(0.0, float(np.median(np.einsum("ij,ij->i", x[a[keep]], x[b[keep]]))))


def block_params(p: NegativesParams, seed: int, spec: faiss_knn.KnnSpec) -> dict:
    """The settings :func:`mine_rows` reads, as the plain dict sent to the block tasks."""
    return dict(range_max=p.range_max, range_min=p.range_min, range_extend=p.range_extend,
                num_negatives=p.num_negatives,
                sampling=p.sampling, semi_hard_pool=p.semi_hard_pool, guard_near_duplicate=p.guard_near_duplicate,
                guard_group=p.guard_group, guard_label=p.guard_label, guard_margin=p.guard_margin,
                max_neg_ratio=p.max_neg_ratio, guard_manifold=p.guard_manifold, hcl_beta=p.hcl_beta,
                manifold_alpha=p.manifold_alpha, manifold_graph_k=p.manifold_graph_k,
                seed=seed, knn=spec)


def manifold_arrays(mc: "manifold.ManifoldClusters") -> dict[str, np.ndarray]:
    """The fitted manifold guard as aux arrays for the block tasks (members grouped by cluster)."""
    k = len(mc.centroids)
    members = np.argsort(mc.cluster, kind="stable").astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(np.bincount(mc.cluster, minlength=k))]).astype(np.int64)
    return dict(cluster=mc.cluster, excluded=mc.excluded, centroids=mc.centroids, members=members,
                member_starts=starts)


def list_column(idx: np.ndarray, values: np.ndarray, mask: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """Rows of ``values`` (B, m) where ``mask`` as a list<value_type> array (vectorised)."""
    lens = mask.sum(1)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    flat = values[mask]
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, value_type))


class MineNegatives(GlobalStage):
    key: ClassVar[str] = "mine.negatives"
    version: ClassVar[str] = "2"
    Params = NegativesParams
    inputs: ClassVar[tuple[str, ...]] = ("samples", "embeddings", "decisions", "removals", "pairs")
    requires: ClassVar[tuple[str, ...]] = ("samples", "embeddings")
    needs_settled: ClassVar[tuple[str, ...]] = ("decisions",)
    outputs: ClassVar[tuple[str, ...]] = ("pairs",)

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, pa.Table]:
        p: NegativesParams = self.params
        kept, missing = C.load_kept(ctx, self.key)
        if missing:
            ctx.count("no_embedding", missing)
        n = len(kept)
        seed = ctx.seed if p.seed is None else p.seed
        upstream = {pid: C.upstream_pairs(ctx, pid) for pid in ctx.partitions}
        if n == 0:
            return {pid: C.positive_rows(t) for pid, t in upstream.items()}
        # reference positives: best upstream positive per anchor; partners are excluded from negatives
        row = C.row_index(kept.ids)
        pos_score = np.full(n, p.positive_score_default, np.float32)
        best = np.full(n, np.nan, np.float32)
        best_id = np.full(n, None, object)
        pos_keys = []
        ref_kinds = pa.array(p.margin_positive_kinds, pa.string())
        for t in upstream.values():
            pr = C.positive_rows(t)
            if pr.num_rows == 0:
                continue
            a = np.array([row.get(s, -1) for s in pr.column("anchor_id").to_pylist()], np.int64)
            q = np.array([row.get(s, -1) for s in pr.column("positive_id").to_pylist()], np.int64)
            both = (a >= 0) & (q >= 0)
            pos_keys.append(a[both] * n + q[both])
            # reference positive (margin): the best cosine-scored positive of an allowed kind
            sc = pr.column("positive_score").fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float32)
            ref = np.asarray(pc.is_in(pr.column("positive_kind"), value_set=ref_kinds).to_numpy(
                zero_copy_only=False), bool) & (a >= 0) & np.isfinite(sc)
            idx = np.flatnonzero(ref)
            if len(idx) == 0:
                continue
            idx = idx[np.lexsort((-sc[idx], a[idx]))]
            first = idx[np.r_[True, a[idx][1:] != a[idx][:-1]]]  # highest score per anchor
            better = ~(sc[first] <= best[a[first]])  # NaN (unset) or higher than an earlier table's
            tgt, src = a[first][better], first[better]
            best[tgt] = sc[src]
            best_id[tgt] = np.asarray(pr.column("positive_id").take(pa.array(src)).to_pylist(), object)
        has = np.isfinite(best)
        pos_score[has] = best[has]
        ctx.count("anchors_with_positive_reference", int(has.sum()))
        work = C.work_dir(ctx)
        spec = p.knn_spec(seed)
        vec_path, index_path, index = faiss_knn.prepare(kept.x, work, spec)
        kind = spec.resolve(n)
        ctx.counters["knn_index_" + kind] = 1
        if kind != "flat" and n > 1:
            ctx.counters["knn_recall"] = round(faiss_knn.measure_recall(index, kept.x, min(10, n), 500, seed), 4)
        del index
        aux = dict(label=kept.label, group=kept.group, dup=kept.dup, pos_score=pos_score,
                   pos_keys=np.unique(np.concatenate(pos_keys)) if pos_keys else np.zeros(0, np.int64),
                   seeds=anchor_seeds(kept.ids, seed))
        if p.guard_manifold and n >= manifold.MIN_SAMPLES:
            mc = manifold.fit(kept.x, kept.ids, p.manifold_clusters, p.manifold_graph_k, p.manifold_alpha,
                              p.manifold_exclude, seed)
            aux.update(manifold_arrays(mc))
            ctx.count("manifold_clusters", len(mc.centroids))
        elif p.guard_manifold:
            ctx.count("manifold_guard_inactive_too_few_samples")
        if p.guard_margin and p.margin_calibrate:
            aux["margin_base"] = np.array([random_pair_median(kept.x, kept.ids, seed)], np.float32)
            ctx.counters["margin_base"] = round(float(aux["margin_base"][0]), 4)
        h = hashlib.blake2b(digest_size=12)
        for k_ in sorted(aux):
            h.update(k_.encode())
            h.update(np.ascontiguousarray(aux[k_]).data)
        aux_path = os.path.join(work, f"aux-{h.hexdigest()}.npz")  # content-addressed: safe to cache per worker
        if not os.path.isfile(aux_path):
            np.savez(aux_path + ".tmp.npz", **aux)
            os.replace(aux_path + ".tmp.npz", aux_path)
        if not kept.has_labels and p.guard_label:
            ctx.count("label_guard_inactive_no_labels")
        prm = block_params(p, seed, spec)
        items = [(vec_path, index_path, aux_path, a, min(a + p.block_size, n), prm) for a in range(0, n, p.block_size)]
        results = ctx.map(mine_block, items)
        ids = np.concatenate([r[0] for r in results])
        scores = np.concatenate([r[1] for r in results])
        for r in results:
            for k_, v in r[2].items():
                ctx.count(k_, v)
        ctx.count("anchors", n)
        if kept.has_labels:  # labels exist: measure the label-free operating points against them (for the card)
            for k_, v in tradeoff.operating_points(vec_path, index_path, aux, prm, kept.ids, seed).items():
                ctx.counters[k_] = v
        mask = ids >= 0
        neg_ids = kept.ids[np.where(mask, ids, 0)]
        out = {}
        for pid in ctx.partitions:
            sel = np.nonzero(kept.pids == pid)[0]
            if len(sel) == 0:
                out[pid] = C.positive_rows(upstream[pid])
                continue
            m = mask[sel]
            ref_has = has[sel]
            neg = pa.table({
                "anchor_id": pa.array(kept.ids[sel], pa.string()),
                "positive_id": pa.array(np.where(ref_has, best_id[sel], None), pa.string()),
                "positive_kind": pa.nulls(len(sel), pa.string()),
                "positive_score": pa.array(pos_score[sel], pa.float32()),
                "class_pair": pa.nulls(len(sel), pa.string()),
                "negative_ids": list_column(sel, neg_ids[sel], m, pa.string()),
                "negative_scores": list_column(sel, scores[sel], m, pa.float32()),
            }, schema=schemas.PAIRS)
            out[pid] = pa.concat_tables([C.positive_rows(upstream[pid]), neg])
        return out


def mined_negatives(pairs: pa.Table) -> pa.Table:
    """The negative rows of a pairs table (one per anchor)."""
    if pairs.num_rows == 0:
        return pairs
    return pairs.filter(pc.is_valid(pairs.column("negative_ids")))


