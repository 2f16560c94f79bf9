"""Threshold help for dedup (`curate inspect RUN_DIR --dedup`): look, then pick t / eps.

From a finished run directory this writes PNG plots (matplotlib, Agg):

* ``hamming_nn_hist.png`` - nearest-neighbour Hamming distance of every 64-bit
  hash of the ``dedup.phash`` stage (its ``_map`` hashes table), exact (faiss
  ``IndexBinaryFlat``);
* ``hamming_keep_curve.png`` - share of samples kept vs threshold t, computed
  with the phash stage's own decision function on its ``_map`` table (same
  hash, scope, thumbnail check and keep-first order); for a bare ``hashes``
  table, one kept per connected component of "Hamming <= t" (an upper bound
  on removals);
* ``cosine_nn_hist.png`` - nearest-neighbour cosine of the embeddings;
* ``eps_keep_curve.png`` - share kept by SemDeDup (same rule, keep order,
  clusters and scope as the run's ``dedup.semantic`` stage) vs eps;
* ``hamming_montage.png`` / ``cosine_montage.png`` - example near-duplicate
  pairs in bands of distance, one row per band, so you can see where
  "same image" turns into "similar image".

and ``thresholds.json`` with the numbers behind every curve. Above
``max_items`` samples the plots use a deterministic subsample (smallest
blake2b(sample_id)); the title says so. A subsample is sparser than the
full set, so its kept shares are an upper bound for the full run.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import imaging, viz
from curate.card.build import RunView
from curate.errors import ConfigError
from curate.ops import semdedup as sd

EPS_GRID = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
HAMMING_MAX = 16
COSINE_BANDS = (0.01, 0.03, 0.05, 0.1, 0.2)  # eps bands for the montage
HAMMING_BANDS = ((0, 0), (1, 4), (5, 8), (9, 12), (13, 16))
PAIRS_PER_BAND = 4


def _subsample(ids: list[str], max_items: int) -> np.ndarray:
    if len(ids) <= max_items:
        return np.arange(len(ids))
    h = sd.id_hash(ids, 0)
    return np.sort(np.argsort(h, kind="stable")[:max_items])


def _nn(D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest *other* item from a k=2 self-search (the first hit may be an exact copy, not self)."""
    n = len(D)
    self_first = I[:, 0] == np.arange(n)
    return np.where(self_first, D[:, 1], D[:, 0]), np.where(self_first, I[:, 1], I[:, 0])


def _pairs_in_bands(score: np.ndarray, nn: np.ndarray, ids: list[str], bands: list[tuple[float, float]],
                    k: int) -> list[list[tuple[int, int, float]]]:
    """Up to ``k`` (i, nn(i), score) pairs per closed band [lo, hi], deterministic, no pair twice."""
    order = np.argsort(sd.id_hash(ids, 1), kind="stable")
    out = []
    for lo, hi in bands:
        seen, rows = set(), []
        for i in order:
            s = float(score[i])
            j = int(nn[i])
            if j < 0 or not (lo <= s <= hi):
                continue
            key = (min(i, j), max(i, j))
            if key in seen:
                continue
            seen.add(key)
            rows.append((int(i), j, s))
            if len(rows) == k:
                break
        out.append(rows)
    return out


def _images(view: RunView, ids: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if not ids:
        return out
    want = pa.array(sorted(ids), pa.string())
    for d, _ in view.stages_of("ingest") or []:
        t = view.stage_table(d, None, ["sample_id", "image"])
        if t is not None:
            for r in t.filter(pc.is_in(t.column("sample_id"), want)).to_pylist():
                out[r["sample_id"]] = r["image"]
    missing = ids - set(out)
    if missing:
        for _, t in view.ctx.read_every("samples", ["sample_id", "image"]):
            for r in t.filter(pc.is_in(t.column("sample_id"), pa.array(sorted(missing), pa.string()))).to_pylist():
                out.setdefault(r["sample_id"], r["image"])
    return out


CELL = 64  # montage thumbnail size (px)
GAP = 6


def _thumb(data: bytes | None) -> np.ndarray:
    from PIL import Image

    if data is None:
        return np.full((CELL, CELL, 3), 255, np.uint8)
    img = Image.fromarray(imaging.decode_png(data)).convert("RGB").resize((CELL, CELL), Image.BILINEAR)
    return np.asarray(img)


def _montage(view: RunView, bands_pairs, row_titles: list[str], fmt: str, path: str, title: str) -> str | None:
    """One image per band row: pairs side by side, the pair's score above it (a single imshow: fast)."""
    keep = [i for i, band in enumerate(bands_pairs) if band]  # bands without any pair get no row
    if not keep:
        return None
    rows = [bands_pairs[i] for i in keep]
    row_titles = [row_titles[i] for i in keep]
    imgs = _images(view, {x for band in rows for a, b, _ in band for x in (a, b)})
    ncols = max(len(r) for r in rows)
    pair_w, row_h = 2 * CELL + 2 * GAP, CELL + 2 * GAP
    canvas = np.full((row_h * len(rows), pair_w * ncols, 3), 255, np.uint8)
    for r, band in enumerate(rows):
        for c, (a, b, _) in enumerate(band):
            y, x = r * row_h + GAP, c * pair_w + GAP // 2
            canvas[y:y + CELL, x:x + CELL] = _thumb(imgs.get(a))
            canvas[y:y + CELL, x + CELL + 2:x + 2 * CELL + 2] = _thumb(imgs.get(b))
    fig, ax = viz.figure(1.4 + canvas.shape[1] / 60, 0.6 + canvas.shape[0] / 60)
    ax.imshow(canvas, interpolation="nearest")
    for r, band in enumerate(rows):
        for c, (_, _, sc) in enumerate(band):
            ax.text(c * pair_w + pair_w / 2, r * row_h + GAP - 1, fmt.format(sc), ha="center", va="bottom", fontsize=7)
    ax.set_yticks([r * row_h + row_h / 2 for r in range(len(rows))], row_titles, fontsize=7)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=10)
    return viz.save(fig, path)


def _groups_for(view: RunView, ids: list[str]) -> list[str | None]:
    t = view.ingested(["sample_id", "group_id"])
    if t is None:
        return [None] * len(ids)
    g = dict(zip(t.column("sample_id").to_pylist(), t.column("group_id").to_pylist()))
    return [g.get(i) for i in ids]


# ------------------------------------------------------------------------- Hamming
def _hashes(view: RunView) -> tuple[str, dict, pa.Table] | None:
    for d, st in view.stages_of("dedup.phash"):
        for sub in ("_map", "hashes", None):
            try:
                t = view.stage_table(d, sub)
            except Exception:  # noqa: BLE001 - not a hashes table
                continue
            if t is not None and "phash" in t.column_names:
                return d, st, t
    if view.has("hashes"):
        return "hashes", {}, view.table("hashes")
    return None


def _stage_rule_curve(table: pa.Table, h: np.ndarray, params: dict, ts: list[int]) -> list[float] | None:
    """Kept share per t with ``dedup.phash``'s own decision function on its ``_map`` table."""
    needed = {"group_id", "source_uri", "source_index", "thumb"}
    if not needed <= set(table.column_names):
        return None
    try:
        from curate.stages.dedup._decisions import source_rank
        from curate.stages.dedup.phash import PHashParams, find_near_duplicates
    except ImportError:
        return None
    p = PHashParams(**{k: v for k, v in params.items() if k in PHashParams.model_fields and k != "name"})
    groups = None
    if p.scope == "per_group":
        gid = table.column("group_id").to_pylist()
        groups = np.array([g if g is not None else f"\x00row{i}" for i, g in enumerate(gid)], dtype=object).astype(str)
    thumbs = None
    if p.verifying:
        thumbs = np.frombuffer(b"".join(table.column("thumb").to_pylist()), np.uint8).reshape(table.num_rows, 256)
    rank = source_rank(table)
    return [float(find_near_duplicates(h, thr, rank, groups=groups, thumbs=thumbs,
                                       max_diff=p.max_diff if p.verifying else None)["keep"].mean()) for thr in ts]


def _component_curve(view, index, codes, ids, per_group: bool, ts: list[int]) -> list[float]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(codes)
    lims, RD, RI = index.range_search(codes, max(ts) + 1)
    src = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
    keep_pairs = src < RI
    src, dst, RD = src[keep_pairs], RI[keep_pairs].astype(np.int64), RD[keep_pairs]
    if per_group:
        g = _groups_for(view, ids)
        same = np.array([g[a] is not None and g[a] == g[b] for a, b in zip(src.tolist(), dst.tolist())], bool)
        src, dst, RD = src[same], dst[same], RD[same]
    kept = []
    for thr in ts:
        m = RD <= thr
        graph = coo_matrix((np.ones(int(m.sum())), (src[m], dst[m])), shape=(n, n))
        kept.append(connected_components(graph, directed=False)[0] / n)
    return kept


def hamming_report(view: RunView, out_dir: str, max_items: int) -> dict[str, Any]:
    found = _hashes(view)
    if found is None:
        return {"skipped": "no dedup.phash stage (or hashes table) in this run"}
    stage_dir, st, t = found
    params = st.get("params", {})
    col = params.get("hash", "phash") if params.get("hash") in ("phash", "dhash") else "phash"
    t = t.filter(pc.is_valid(t.column(col)))
    ids_all = t.column("sample_id").to_pylist()
    sel = _subsample(ids_all, max_items)
    ids = [ids_all[i] for i in sel]
    h = t.column(col).to_numpy()[sel].astype("<u8")
    n = len(h)
    if n < 2:
        return {"skipped": "fewer than 2 hashes"}
    codes = np.ascontiguousarray(h.view(np.uint8).reshape(n, 8))
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    D, I = index.search(codes, 2)
    dist, nn = _nn(D.astype(np.int64), I)
    per_group = params.get("scope") == "per_group"
    ts = list(range(HAMMING_MAX + 1))
    kept = _stage_rule_curve(t.take(pa.array(sel)), h, params, ts)
    rule = "the stage's rule (keep-first, thumbnail check as configured)"
    if kept is None:  # not the phash stage's map table: connected components, an upper bound on removals
        rule = "connected components (one kept per component)"
        kept = _component_curve(view, index, codes, ids, per_group, ts)
    configured = params.get("threshold")
    sub = f" (subsample {n:,} of {len(ids_all):,})" if n < len(ids_all) else f" ({n:,} samples)"
    files = {}
    fig, ax = viz.figure()
    ax.bar(np.arange(65), np.bincount(np.clip(dist, 0, 64), minlength=65), color="#4C72B0")
    if configured is not None:
        ax.axvline(configured + 0.5, color="#C44E52", ls="--", label=f"configured t = {configured}")
        ax.legend()
    ax.set_xlabel(f"Hamming distance to nearest other {col} (bits of 64)")
    ax.set_ylabel("samples")
    ax.set_title(f"Nearest-neighbour Hamming distance{sub}")
    files["hamming_nn_hist"] = viz.save(fig, os.path.join(out_dir, "hamming_nn_hist.png"))
    fig, ax = viz.figure()
    ax.plot(ts, kept, marker="o")
    if configured is not None and configured <= HAMMING_MAX:
        ax.axvline(configured, color="#C44E52", ls="--", label=f"configured t = {configured}: keeps {kept[configured]:.1%}")
        ax.legend()
    ax.set_xlabel("threshold t (Hamming distance <= t is a duplicate)")
    ax.set_ylabel("share of samples kept")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{col} dedup ({'per group' if per_group else 'global'}): kept share vs t{sub}\n{rule}",
                 fontsize=10)
    files["hamming_keep_curve"] = viz.save(fig, os.path.join(out_dir, "hamming_keep_curve.png"))
    bands = [(float(a), float(b)) for a, b in HAMMING_BANDS]
    pairs = _pairs_in_bands(dist.astype(float), nn, ids, bands, PAIRS_PER_BAND)
    pairs = [[(ids[i], ids[j], s) for i, j, s in band] for band in pairs]
    m = _montage(view, pairs, [f"d = {a}" if a == b else f"d {a}-{b}" for a, b in HAMMING_BANDS], "d={:.0f}",
                 os.path.join(out_dir, "hamming_montage.png"), "Nearest-neighbour pairs by Hamming distance")
    if m:
        files["hamming_montage"] = m
    return {"stage": stage_dir, "hash": col, "n": n, "configured_t": configured, "curve_rule": rule,
            "nn_hist": np.bincount(np.clip(dist, 0, 64), minlength=65).tolist(),
            "keep_curve": dict(zip(ts, [round(k, 6) for k in kept])), "files": files}


# -------------------------------------------------------------------------- cosine
def cosine_report(view: RunView, out_dir: str, max_items: int) -> dict[str, Any]:
    if not view.has("embeddings"):
        return {"skipped": "no embed stage in this run"}
    t = view.table("embeddings")
    if t.num_rows < 2:
        return {"skipped": "fewer than 2 embeddings"}
    ids_all = t.column("sample_id").to_pylist()
    col = t.column("embedding").combine_chunks()
    X_all = col.values.to_numpy(zero_copy_only=False).reshape(t.num_rows, col.type.list_size)
    sel = _subsample(ids_all, max_items)
    ids = [ids_all[i] for i in sel]
    X = np.ascontiguousarray(X_all[sel], dtype=np.float32)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    n, d = X.shape
    index = faiss.IndexFlatIP(d)
    index.add(X)
    D, I = index.search(X, 2)
    cos, nn = _nn(D, I)
    from curate.stages.dedup.semantic import SemanticParams, semdedup

    sem = view.stages_of("dedup.semantic")
    params = dict(sem[0][1].get("params", {})) if sem else {}
    params = {k: v for k, v in params.items() if k in SemanticParams.model_fields and k not in ("name", "on_error")}
    configured = None if params.get("target_fraction") else params.get("eps")
    base = SemanticParams(**{**params, "target_fraction": None})
    groups = _groups_for(view, ids) if base.scope == "per_group" else None
    kept = []
    with tempfile.TemporaryDirectory() as tmp:
        for e in EPS_GRID:
            res = semdedup(X.copy(), ids, base.model_copy(update={"eps": e}), os.path.join(tmp, "w"),
                           lambda f, items: [f(x) for x in items], groups)
            kept.append(float(res.keep.mean()))
    sub = f" (subsample {n:,} of {len(ids_all):,})" if n < len(ids_all) else f" ({n:,} samples)"
    files = {}
    fig, ax = viz.figure()
    ax.hist(cos, bins=100, range=(max(-1.0, float(cos.min())), 1.0), color="#4C72B0")
    if configured is not None:
        ax.axvline(1 - configured, color="#C44E52", ls="--", label=f"configured 1 - eps = {1 - configured:.3f}")
        ax.legend()
    ax.set_xlabel("cosine similarity to nearest other embedding")
    ax.set_ylabel("samples")
    ax.set_yscale("log")
    ax.set_title(f"Nearest-neighbour cosine{sub}")
    files["cosine_nn_hist"] = viz.save(fig, os.path.join(out_dir, "cosine_nn_hist.png"))
    fig, ax = viz.figure()
    ax.plot(EPS_GRID, kept, marker="o")
    ax.set_xscale("log")
    if configured is not None:
        ax.axvline(configured, color="#C44E52", ls="--", label=f"configured eps = {configured}")
        ax.legend()
    ax.set_xlabel("eps (removed if cosine to an earlier kept item > 1 - eps)")
    ax.set_ylabel("share of samples kept")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"SemDeDup ({base.scope}, keep {base.keep}): kept share vs eps{sub}")
    files["eps_keep_curve"] = viz.save(fig, os.path.join(out_dir, "eps_keep_curve.png"))
    edges = (0.0,) + COSINE_BANDS
    bands = [(1 - edges[i + 1], 1 - edges[i]) for i in range(len(COSINE_BANDS))]
    pairs = _pairs_in_bands(cos, nn, ids, bands, PAIRS_PER_BAND)
    pairs = [[(ids[i], ids[j], s) for i, j, s in band] for band in pairs]
    m = _montage(view, pairs, [f"cos {lo:.2f}-{hi:.2f}\n(eps {edges[i + 1]})" for i, (lo, hi) in enumerate(bands)],
                 "cos {:.3f}", os.path.join(out_dir, "cosine_montage.png"), "Nearest-neighbour pairs by cosine")
    if m:
        files["cosine_montage"] = m
    hist, edges_h = np.histogram(cos, bins=50, range=(-1.0, 1.0))
    return {"n": n, "configured_eps": configured, "nn_hist": {"counts": hist.tolist(), "edges": edges_h.round(4).tolist()},
            "keep_curve": dict(zip([str(e) for e in EPS_GRID], [round(k, 6) for k in kept])), "files": files}


def inspect_dedup(run_dir: str, out_dir: str | None = None, max_items: int = 20000) -> dict[str, Any]:
    """Write the threshold-help plots for ``run_dir``; return what was written and the curves."""
    view = RunView(run_dir)
    out_dir = out_dir or os.path.join(run_dir, "inspect", "dedup")
    if "://" in out_dir:
        raise ConfigError(f"--out '{out_dir}': plots are written to a local directory; pass a local path")
    os.makedirs(out_dir, exist_ok=True)
    report = {"run_dir": run_dir, "out_dir": out_dir, "hamming": hamming_report(view, out_dir, max_items),
              "cosine": cosine_report(view, out_dir, max_items)}
    with open(os.path.join(out_dir, "thresholds.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
