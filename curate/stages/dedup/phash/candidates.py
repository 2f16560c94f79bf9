"""``dedup.phash`` step 3, candidates: all pairs within Hamming distance ``t`` (exact, fanned out as
tasks), collapsed to nodes of identical hash and thumbnail, verified (:mod:`.verify`)."""

from __future__ import annotations

import numpy as np

from curate.ops import hamming
from curate.stages.dedup.phash.verify import pair_diff


def candidate_edges(h: np.ndarray, t: int, groups: np.ndarray | None = None,
                    thumbs: np.ndarray | None = None, max_diff: float | None = None, mapper=None, splits: int = 1,
                    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, edge_filter=None):
    """Verified near-duplicate edges between nodes (distinct group + hash [+ thumbnail]).

    Hamming distance <= ``t`` within a group (:func:`hamming.unique_pairs`, exact multi-index
    search), verified by the thumbnail difference <= ``max_diff`` when given, plus the already
    verified row pairs ``extra`` (i, j, distance) from crop views. ``edge_filter(rows_i, rows_j)``,
    when given, is the strict check every edge must also pass (geometric verification of the
    images, :mod:`curate.stages.dedup._images`). Returns ``(node of every row,
    first row of every node, edge i, edge j, edge distance)``.
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
    if edge_filter is not None and ei.size:
        ok = np.asarray(edge_filter(nfirst[ei], nfirst[ej]), bool)
        ei, ej, ed = ei[ok], ej[ok], ed[ok]
    return node, nfirst, ei, ej, ed


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
