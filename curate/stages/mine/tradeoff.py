"""The false-negative versus hardness trade-off of label-free mining settings, measured where labels exist.

When the kept samples carry labels, ``mine.negatives`` re-mines a seeded
sample of anchors (the 1000 with the smallest blake2b(seed|id), so the sample
does not depend on partitioning) at several label-free operating points, with
the label guard off, and records for each (stage counters
``tradeoff_<point>_{fn_share,hardness_pct,served}``):

* ``fn_share`` - share of the negatives that have the anchor's label;
* ``hardness_pct`` - percentile of the negatives' mean cosine to their anchor
  among the cosines of random pairs (embedding space; 100 = as close as the
  closest pairs, 50 = random negatives);
* ``served`` - share of anchors that got ``num_negatives``.

``chosen`` is the stage's own settings (label guard off). The card plots them.
"""

from __future__ import annotations

import numpy as np

from curate.ops import faiss_knn
from curate.stages.mine import manifold

SAMPLE = 1000


def _points(p: dict, has_manifold: bool) -> dict[str, tuple[dict, float | None, float | None]]:
    """name -> (param overrides, manifold alpha, manifold exclude); None: keep the fitted exclusion."""
    off = dict(guard_near_duplicate=False, guard_group=False, guard_margin=False, guard_manifold=False)
    pts = {"naive_topk": (off, None, None), "topk_percpos": (dict(guard_manifold=False), None, None),
           "semi_hard": (dict(guard_manifold=False, sampling="semi_hard"), None, None)}
    if has_manifold:
        pts["fine_cluster"] = ({}, 0.0, 0.0)
        for f in (0.05, 0.1, 0.2):
            pts[f"manifold_{int(f * 100)}"] = ({}, p["manifold_alpha"], f)
    pts["chosen"] = ({}, None, None)
    return pts


def operating_points(vec_path: str, index_path: str, aux: dict, p: dict, ids: np.ndarray,
                     seed: int) -> dict[str, float]:
    """Counters ``tradeoff_<point>_*`` (see the module docstring); empty when too few labelled anchors."""
    from curate.stages.mine.negatives import mine_rows

    x, index = faiss_knn._load(vec_path, index_path)
    faiss_knn.set_search_params(index, p["knn"])
    lab = aux["label"]
    n = len(x)
    labelled = np.flatnonzero(lab >= 0)
    if len(labelled) < 2:
        return {}
    rows = labelled[np.argsort(aux["seeds"][labelled], kind="stable")[:SAMPLE]]
    rows = np.sort(rows)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, 20000), rng.integers(0, n, 20000)
    rand = np.sort(np.einsum("ij,ij->i", x[a], x[b]))
    has_manifold = "cluster" in aux
    F = manifold.diffusion(aux["centroids"], p.get("manifold_graph_k", 20), p["manifold_alpha"]) \
        if has_manifold else None
    out: dict[str, float] = {}
    for name, (over, alpha, frac) in _points(p, has_manifold).items():
        q = dict(p, guard_label=False, **over)
        ax = aux
        if frac is not None:
            Fp = F if alpha == p["manifold_alpha"] else np.eye(len(aux["centroids"]))
            ax = dict(aux, excluded=manifold.excluded_clusters(Fp, frac))
        neg, _, _ = mine_rows(x, index, ax, rows, q)
        ok = neg >= 0
        if not ok.any():
            continue
        fn = float((lab[np.where(ok, neg, 0)] == lab[rows][:, None])[ok].mean())
        cos = np.einsum("bkd,bd->bk", x[np.where(ok, neg, 0)], x[rows])[ok].mean()
        out[f"tradeoff_{name}_fn_share"] = round(fn, 4)
        out[f"tradeoff_{name}_hardness_pct"] = round(100.0 * np.searchsorted(rand, cos) / len(rand), 2)
        out[f"tradeoff_{name}_served"] = round(float((ok.sum(1) == p["num_negatives"]).mean()), 4)
    return out
