"""``dedup.phash`` step 5, decide: greedy keep-first without chaining over the verified edges
(:func:`curate.ops.unionfind.greedy_keep_first`, the one helper every dedup method uses), so every
removed row is within the thresholds of the kept row it names."""

from __future__ import annotations

import numpy as np

from curate.ops import unionfind
from curate.stages.dedup.phash.candidates import candidate_edges
from curate.stages.dedup.phash.verify import pair_diff


def find_near_duplicates(h: np.ndarray, t: int, rank: np.ndarray, groups: np.ndarray | None = None,
                         thumbs: np.ndarray | None = None, max_diff: float | None = None,
                         mapper=None, splits: int = 1,
                         extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                         edge_filter=None) -> dict[str, np.ndarray]:
    """Near-duplicate decisions for hashes ``h`` (rows), keep-first by ``rank``.

    Edges: Hamming distance <= ``t`` (same group), optionally verified by the thumbnail
    difference <= ``max_diff``, plus the already verified row pairs ``extra`` (i, j, distance):
    crop-view matches; ``edge_filter`` is an optional strict check of every edge (see
    :func:`.candidates.candidate_edges`). ``cluster`` = union-find component (named by its first row);
    removal is greedy keep-first without chaining (:func:`unionfind.greedy_keep_first`), so every
    removed row is within ``t`` (and ``max_diff``) of its kept representative ``rep``.
    Returns per row: keep, rep, cluster, diff (thumbnail difference to rep; 0 when not verified).
    """
    n = h.size
    node, nfirst, ei, ej, ed = candidate_edges(h, t, groups, thumbs, max_diff, mapper, splits, extra,
                                               edge_filter)
    keep, rep, cluster = unionfind.keep_first_over_nodes(node, rank, ei, ej, -ed.astype(np.float64))
    diff = np.zeros(n)
    if thumbs is not None and max_diff is not None and n:
        diff = pair_diff(thumbs, np.arange(n), rep).astype(np.float64)
    return {"keep": keep, "rep": rep, "cluster": cluster, "diff": diff}
