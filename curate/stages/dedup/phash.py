"""``dedup.phash``: near-duplicate images by perceptual hash, Hamming distance <= t, exact search.

``map`` (per partition) decodes the canonical images and computes both 64-bit
hashes batched (:mod:`curate.ops.phash`, bit-identical to ``imagehash.phash`` /
``imagehash.dhash``) plus a 16x16 thumbnail; the hashes are written as the
``hashes`` table. ``reduce`` finds every pair within Hamming distance
``threshold`` of the chosen hash (:mod:`curate.ops.hamming`: multi-index
hashing, exact, fanned out as Dask tasks with ``ctx.map``). In ``global`` scope
each pair is then verified on the thumbnails (mean absolute difference after
removing the mean brightness <= ``max_diff``): on small images such as
Fashion-MNIST, distinct garments with the same silhouette are within 10 bits
of pHash, and this check takes precision from 0.46 to 0.99 at equal recall
(benchmarks/results/dedup_hash.md).

Groups: union-find components of the verified pairs give ``cluster_id``;
removal is keep-first without chaining (imagededup's and SemDeDup's rule):
rows are walked in source order (``source_uri``, ``source_index``,
``sample_id``) and a row is removed when it is within the thresholds of an
already kept row - the closest one becomes its ``representative_id``, with
``score = 1 - d / 64`` and the distance ``d`` in ``reason``. So every removed
row is within ``t`` of the row it names, and a chain a~b~c keeps c when a and
c are far apart.

Default thresholds: ``6`` for both hashes. For dHash that is the per-CT-volume
reduction of "Less is More" (Fang et al.); for pHash, imagededup's default
(``max_distance_threshold=10``) was measured too loose even with the thumbnail
check (precision 0.968 on Fashion-MNIST + copies), while 6 meets precision
>= 0.98 with recall >= 0.96 on re-encoded, resized and brightened copies
(benchmarks/results/dedup_hash.md); ``threshold: 10`` restores imagededup's.

``scope: per_group`` compares rows only within
the same ``group_id`` (patient / series / volume) and, like Less is More, uses
the hash alone (adjacent slices differ more than re-encoded copies); a row
whose ``group_id`` is null has no group to compare within and is never removed
in that scope.

YAML::

    - stage: dedup.phash
      hash: phash          # phash | dhash
      threshold: null      # max Hamming distance; null = 6 (phash and dhash)
      scope: global        # global | per_group
      verify: null         # thumbnail check; null = on in global, off in per_group scope
      max_diff: 8.0        # max mean |thumbnail difference| (0..255) when verifying
      splits: 4            # Dask tasks per hash band in the all-pairs search
      crop_views: null     # border shares also hashed; null = [0.04, 0.08] in global scope, [] per_group

Crop views: pHash is not crop invariant (a 1-px border trim of a 28-px image is a 7 % zoom and
moves the hash by ~15 bits), so every image is also hashed with ``crop_views`` shares trimmed
from each side, and a row whose hash is within ``t`` of another row's view (verified on the
thumbnails) is a near-duplicate of it (reason "... (crop view)"). On Fashion-MNIST + copies this
takes recall on 1- and 2-px border crops from 0.02 to 1.0 at unchanged precision; one-sided crops
(shifts) are still missed (benchmarks/results/dedup_hash.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curate import imaging, schemas
from curate.config import StageParams, execution_field
from curate.errors import SampleError
from curate.ops import hamming, phash, unionfind
from curate.stage import GlobalStage, StageContext
from curate.stages.dedup._decisions import concat_mapped, decisions_table, source_rank, split_by_partition

DEFAULT_THRESHOLD = {"phash": 6, "dhash": 6}  # see the module docstring
HASH_BATCH = 4096


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
    splits: int = execution_field(4, ge=1, le=256, description="Dask tasks per hash band for the all-pairs search")
    crop_views: list[float] | None = Field(None, description="border shares: every image is also hashed with "
                                           "each share trimmed from every side, so a copy trimmed by about that "
                                           "much matches (perceptual hashes are not crop invariant); null = "
                                           "[0.04, 0.08] in global scope (copies), [] in per_group scope (slices)")

    @property
    def verifying(self) -> bool:
        return self.scope == "global" if self.verify is None else self.verify

    @property
    def views(self) -> list[float]:
        if self.crop_views is not None:
            return list(self.crop_views)
        return [0.04, 0.08] if self.scope == "global" else []

    @property
    def t(self) -> int:
        return DEFAULT_THRESHOLD[self.hash] if self.threshold is None else self.threshold


class PHashDedup(GlobalStage):
    key = "dedup.phash"
    version = "2"
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
    ])

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        n = table.num_rows
        ph = np.zeros(n, np.uint64)
        dh = np.zeros(n, np.uint64)
        th = np.zeros((n, 256), np.uint8)
        ok = np.zeros(n, bool)
        nv = len(self.params.views)
        vph = np.zeros((n, nv), np.uint64)
        vdh = np.zeros((n, nv), np.uint64)
        vth = np.zeros((n, nv, 256), np.uint8)
        vok = np.zeros((n, nv), bool)
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
                ph[rows], dh[rows], thumbs = phash.hash_arrays(arrays, thumbnails=True)
                th[rows] = thumbs.reshape(len(rows), 256)
                ok[rows] = True
                a, b, c, d = crop_view_hashes(arrays, self.params.views)
                vph[rows], vdh[rows], vth[rows], vok[rows] = a, b, c, d
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
        thumbs = None
        max_diff = p.max_diff if p.verifying else None
        if max_diff is not None:
            thumbs = np.frombuffer(b"".join(table.column("thumb").filter(pa.array(valid)).to_pylist()),
                                   np.uint8).reshape(rows.size, 256)
        rank = source_rank(table)
        views = self._view_arrays(table, p.hash, rows)
        extra = None
        if views is not None:
            hv, tv, vok = views
            extra = crop_view_pairs(h[rows], hv, vok, t, groups, thumbs, tv, max_diff, ctx.map, p.splits)
            ctx.count("crop_view_pairs", int(extra[0].size))
        found = find_near_duplicates(h[rows], t, rank[rows], groups=groups, thumbs=thumbs, max_diff=max_diff,
                                     mapper=ctx.map, splits=p.splits, extra=extra)
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
            better = (vd < dist[rows]) & ~found["keep"]
            by_view[rows] = better
            dist[rows] = np.where(better, vd, dist[rows])
            if thumbs is not None:
                diff[rows] = np.where(better, vx, diff[rows])
        score = 1.0 - dist / 64.0
        check = f"; thumbnail diff {{:.1f}} <= {max_diff}" if max_diff is not None else ""
        reasons = np.array([f"{p.hash} hamming {d} <= {t} to representative" + (" (crop view)" if v else "")
                            + check.format(x) for d, x, v in zip(dist.tolist(), diff.tolist(), by_view.tolist())],
                           dtype=object)
        ctx.count("removed", int((~keep).sum()))
        ctx.count("removed_by_crop_view", int((by_view & ~keep).sum()))
        ctx.count("duplicate_clusters", int(np.unique(cluster[(np.bincount(cluster, minlength=n)[cluster] > 1)]).size))
        ctx.count("no_hash", int((~valid).sum()))
        decisions = decisions_table(ctx, table, part, f"{p.hash}", rep, keep, cluster, score, reasons,
                                    "near-duplicates", undecided=~valid, undecided_reason="no_hash: image not decodable")
        hashes = self._hashes(ctx, table, part)
        return {pid: {"decisions": decisions[pid], "hashes": hashes[pid]} for pid in ctx.partitions}

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


VERIFY_BLOCK = 65536  # pairs per thumbnail comparison step (bounds memory: ~130 MiB)


def thumb_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference of brightness-normalised thumbnails (rows of 256 uint8)."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    return np.abs(a - b).mean(axis=1)


def pair_diff(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, bound: float | None = None) -> np.ndarray:
    """:func:`thumb_diff` of rows ``thumbs[i]`` vs ``thumbs[j]``, in blocks (millions of pairs fit).

    With ``bound``, pairs are first screened on 4x4 block means: their mean absolute difference is
    a lower bound of the full one (averaging is a contraction), so a pair above ``bound`` there is
    above it in full and gets that lower bound (> ``bound``) instead of the exact value.
    """
    t = thumbs.reshape(-1, 256).astype(np.float32)
    t -= t.mean(axis=1, keepdims=True)
    coarse = t.reshape(-1, 4, 4, 4, 4).mean(axis=(2, 4)).reshape(-1, 16)
    out = np.empty(i.size, np.float32)
    for lo in range(0, i.size, VERIFY_BLOCK):
        a, b = i[lo:lo + VERIFY_BLOCK], j[lo:lo + VERIFY_BLOCK]
        d = np.abs(coarse[a] - coarse[b]).mean(axis=1)
        if bound is not None:
            close = np.flatnonzero(d <= bound)
            d[close] = np.abs(t[a[close]] - t[b[close]]).mean(axis=1)
        else:
            d = np.abs(t[a] - t[b]).mean(axis=1)
        out[lo:lo + VERIFY_BLOCK] = d
    return out


def crop_view_hashes(arrays: list[np.ndarray], shares: list[float]):
    """pHash, dHash, thumbnail and validity (N, V[, 256]) of every image's crop views: ``share`` of
    the shorter side (at least 1 px) trimmed from each side; an image left under 8 px has no view."""
    n, nv = len(arrays), len(shares)
    vph, vdh = np.zeros((n, nv), np.uint64), np.zeros((n, nv), np.uint64)
    vth, vok = np.zeros((n, nv, 256), np.uint8), np.zeros((n, nv), bool)
    for k, share in enumerate(shares):
        views, at = [], []
        for r, a in enumerate(arrays):
            h, w = a.shape[:2]
            b = max(1, int(round(share * min(h, w))))
            if h - 2 * b >= 8 and w - 2 * b >= 8:
                views.append(np.ascontiguousarray(a[b:h - b, b:w - b]))
                at.append(r)
        if at:
            vph[at, k], vdh[at, k], t = phash.hash_arrays(views, thumbnails=True)
            vth[at, k] = t.reshape(len(at), 256)
            vok[at, k] = True
    return vph, vdh, vth, vok


MAX_PER_VALUE = 64  # rows of one hash value taking part in crop-view pairs (bounds k^2 blow-ups)


def crop_view_pairs(h: np.ndarray, hv: np.ndarray, vok: np.ndarray, t: int, groups: np.ndarray | None,
                    thumbs: np.ndarray | None, tv: np.ndarray, max_diff: float | None, mapper=None,
                    splits: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row pairs (i, j, d) where row i's hash is within ``t`` of a crop view of row j (``hv[j, k]``).

    Exact, like the main search: all pairs within ``t`` among the distinct values of both sets
    (:func:`hamming.pairs`), then expanded to (row, view) pairs of different rows in the same group,
    verified on the row's thumbnail vs the view's when ``max_diff`` is set. At most
    ``MAX_PER_VALUE`` rows (first by index) per hash value take part; the others are identical
    copies that the main search links anyway.
    """
    m = h.size
    vi, vk = np.nonzero(vok)
    empty = np.zeros(0, np.int64)
    if m == 0 or vi.size == 0:
        return empty, empty, empty
    vals, inv = np.unique(np.concatenate([h, hv[vi, vk]]), return_inverse=True)
    a_val, b_val = inv[:m], inv[m:]
    pi, pj, pd = hamming.pairs(vals, t, mapper=mapper, splits=splits)
    same = np.arange(vals.size)
    va = np.concatenate([pi, pj, same])  # value of the row side
    vb = np.concatenate([pj, pi, same])  # value of the view side
    vd = np.concatenate([pd, pd, np.zeros(vals.size, np.int64)])

    def buckets(v: np.ndarray):
        order = np.argsort(v, kind="stable")
        start = np.searchsorted(v[order], np.arange(vals.size))
        count = np.minimum(np.bincount(v, minlength=vals.size), MAX_PER_VALUE)
        return order, start, count

    ao, ast, ac = buckets(a_val)
    bo, bst, bc = buckets(b_val)
    sizes = ac[va] * bc[vb]
    live = np.flatnonzero(sizes)
    va, vb, vd, sizes = va[live], vb[live], vd[live], sizes[live]
    pair = np.repeat(np.arange(va.size), sizes)
    local = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    cb = bc[vb][pair]
    ri = ao[ast[va][pair] + local // cb]  # row (its own hash)
    e = bo[bst[vb][pair] + local % cb]  # view entry
    rj, d = vi[e], vd[pair]
    keep = ri != rj
    if groups is not None:
        keep &= groups[ri] == groups[rj]
    ri, rj, d, e = ri[keep], rj[keep], d[keep], e[keep]
    if thumbs is not None and max_diff is not None and ri.size:
        both = np.concatenate([thumbs.reshape(m, 256), tv[vi, vk].reshape(-1, 256)])
        ok = pair_diff(both, ri, m + e, bound=max_diff) <= max_diff
        ri, rj, d = ri[ok], rj[ok], d[ok]
    return ri.astype(np.int64), rj.astype(np.int64), d.astype(np.int64)


def view_distance(h: np.ndarray, hv: np.ndarray, vok: np.ndarray, rep: np.ndarray,
                  thumbs: np.ndarray | None, tv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the least Hamming distance between it and its representative through a crop view
    (its hash vs the rep's views, or its views vs the rep's hash), and the thumbnail difference of
    that match."""
    m = h.size
    best = np.full(m, 65, np.int64)
    diff = np.zeros(m)
    for k in range(hv.shape[1]):
        for mine, theirs, ok, ta, tb in ((h, hv[rep, k], vok[rep, k], None, (rep, k)),
                                         (hv[:, k], h[rep], vok[:, k], (slice(None), k), None)):
            d = np.where(ok, np.bitwise_count(mine ^ theirs), 65).astype(np.int64)
            better = d < best
            best = np.where(better, d, best)
            if thumbs is not None and better.any():
                a = thumbs.reshape(m, 256) if ta is None else tv[:, k]
                b = thumbs.reshape(m, 256)[rep] if tb is None else tv[rep, k]
                diff = np.where(better, thumb_diff(a, b), diff)
    return best, diff


def find_near_duplicates(h: np.ndarray, t: int, rank: np.ndarray, groups: np.ndarray | None = None,
                         thumbs: np.ndarray | None = None, max_diff: float | None = None,
                         mapper=None, splits: int = 1,
                         extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Near-duplicate decisions for hashes ``h`` (rows), keep-first by ``rank``.

    Edges: Hamming distance <= ``t`` (same group), optionally verified by the thumbnail
    difference <= ``max_diff``, plus the already verified row pairs ``extra`` (i, j, distance):
    crop-view matches. ``cluster`` = union-find component (named by its first row);
    removal is greedy keep-first without chaining (:func:`unionfind.greedy_keep_first`), so every
    removed row is within ``t`` (and ``max_diff``) of its kept representative ``rep``.
    Returns per row: keep, rep, cluster, diff (thumbnail difference to rep; 0 when not verified).
    """
    n = h.size
    hnode, hfirst, hi, hj, hd = hamming.unique_pairs(h, t, groups, mapper, splits)
    if thumbs is not None and max_diff is not None and n:
        # nodes = distinct (group, hash, thumbnail); pairs between them verified on thumbnails
        tview = np.ascontiguousarray(thumbs).view(np.dtype((np.void, thumbs.shape[1]))).ravel()
        tid = np.unique(tview, return_inverse=True)[1].reshape(-1)
        order = np.lexsort((np.arange(n), tid, hnode))
        hs, ts = hnode[order], tid[order]
        new = np.ones(n, bool)
        new[1:] = (hs[1:] != hs[:-1]) | (ts[1:] != ts[:-1])
        node = np.empty(n, np.int64)
        node[order] = np.cumsum(new) - 1
        nfirst = order[new]
        node_h = hnode[nfirst]  # hash node of every node (sorted)
        hstart = np.searchsorted(node_h, np.arange(hfirst.size))
        hcount = np.diff(np.r_[hstart, node_h.size])
        ei, ej, ed = _expand_node_pairs(hstart, hcount, hi, hj, hd)
        parts_i, parts_j = [ei], [ej]
        for k in np.flatnonzero(hcount > 1).tolist():  # one hash, several thumbnails: pairs at distance 0
            a, b = np.triu_indices(int(hcount[k]), 1)
            parts_i.append(hstart[k] + a)
            parts_j.append(hstart[k] + b)
        same_hash = sum(x.size for x in parts_i[1:])
        ei, ej = np.concatenate(parts_i).astype(np.int64), np.concatenate(parts_j).astype(np.int64)
        ed = np.concatenate([ed, np.zeros(same_hash, np.int64)])
        ediff = pair_diff(thumbs, nfirst[ei], nfirst[ej], bound=max_diff)
        ok = ediff <= max_diff
        ei, ej, ed = ei[ok], ej[ok], ed[ok]
    else:
        node, nfirst, ei, ej, ed = hnode, hfirst, hi, hj, hd
    if extra is not None and extra[0].size:
        xi, xj = node[extra[0]], node[extra[1]]
        other = xi != xj
        ei = np.concatenate([ei, xi[other]]).astype(np.int64)
        ej = np.concatenate([ej, xj[other]]).astype(np.int64)
        ed = np.concatenate([ed, extra[2][other]]).astype(np.int64)
    m = nfirst.size
    node_rank = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(node_rank, node, np.asarray(rank, np.int64))
    keep_n, rep_n = unionfind.greedy_keep_first(m, ei, ej, -ed.astype(np.float64), node_rank)
    # the first row (by rank) of each node stands for it; other rows of a node are its copies
    head = np.full(m, -1, np.int64)
    by_rank = np.lexsort((np.arange(n), rank))
    head[node[by_rank][::-1]] = by_rank[::-1]
    is_head = head[node] == np.arange(n)
    keep = is_head & keep_n[node]
    rep = np.where(keep_n[node], head[node], head[rep_n[node]])
    rep = np.where(keep, np.arange(n), rep)
    labels_n = unionfind.components(m, ei, ej)
    cluster_n = unionfind.representatives(labels_n, node_rank)
    cluster = head[cluster_n[node]]
    diff = np.zeros(n)
    if thumbs is not None and max_diff is not None and n:
        diff = pair_diff(thumbs, np.arange(n), rep).astype(np.float64)
    return {"keep": keep, "rep": rep, "cluster": cluster, "diff": diff}


def _expand_node_pairs(hstart, hcount, hi, hj, hd):
    """Node pairs for hash-node pairs (every node of one hash x every node of the other)."""
    if hi.size == 0:
        z = np.zeros(0, np.int64)
        return z, z, z
    c1, c2 = hcount[hi], hcount[hj]
    if (c1 == 1).all() and (c2 == 1).all():
        return hstart[hi], hstart[hj], hd
    sizes = c1 * c2
    bp = np.repeat(np.arange(hi.size), sizes)
    local = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return hstart[hi][bp] + local // c2[bp], hstart[hj][bp] + local % c2[bp], hd[bp]
