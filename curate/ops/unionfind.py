"""Union-find / connected components over pair lists, vectorised (scipy.sparse.csgraph).

Every dedup method ends the same way: a list of "these two are duplicates" edges
becomes groups (connected components), and one member per group is kept. The
helpers here do that deterministically: component labels are the smallest
member index, and the representative of a group is its member ranked first by
a caller-given order (e.g. source order).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes joined by edges ``src[k] -- dst[k]``.

    Returns ``labels`` (int64, shape (n,)): the smallest node index of each
    node's component, so labels do not depend on edge order.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    if n == 0:
        return np.zeros(0, np.int64)
    if src.size == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(src.size, np.int8), (src, dst)), shape=(n, n)).tocsr()
    _, lab = connected_components(graph, directed=False)
    smallest = np.full(lab.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, lab, np.arange(n, dtype=np.int64))
    return smallest[lab]


def components_by_key(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining every row to the first row with the same key (for exact-match grouping).

    Returns ``(src, dst)``; rows whose key is unique produce no edge. ``keys``
    may be any 1-d array that ``np.unique`` can sort (strings, ints).
    """
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    head = first[inverse]
    idx = np.arange(keys.size, dtype=np.int64)
    dup = head != idx
    return idx[dup], head[dup].astype(np.int64)


def representatives(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For every node, the member of its component with the smallest ``rank`` (ties: smallest index)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), np.asarray(rank)))  # by rank, then index
    best = np.full(n, -1, dtype=np.int64)
    # walk nodes from best to worst rank; the first one seen per label wins
    lab_sorted = labels[order]
    _, first = np.unique(lab_sorted, return_index=True)
    best[lab_sorted[first]] = order[first]
    return best[labels]


class UnionFind:
    """Incremental union-find with path halving, for callers that add edges one batch at a time."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return int(x)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo

    def union_many(self, src: np.ndarray, dst: np.ndarray) -> None:
        for a, b in zip(np.asarray(src).tolist(), np.asarray(dst).tolist()):
            self.union(a, b)

    def labels(self) -> np.ndarray:
        """Smallest member index of every node's set (same convention as :func:`components`)."""
        return np.array([self.find(i) for i in range(self.parent.size)], dtype=np.int64)


def keep_first(labels: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep-first decisions for groups ``labels``: ``(rep, keep, size)`` per node.

    ``rep`` is the member of the node's group with the smallest ``rank``; it is
    kept, every other member is removed in its favour; ``size`` is the group size.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rep = representatives(labels, rank)
    keep = rep == np.arange(labels.size)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return rep, keep, counts[inverse]


def greedy_keep_first(n: int, src: np.ndarray, dst: np.ndarray, sim: np.ndarray,
                      rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep-first without chaining: walk nodes by ``rank``; a node is removed when an edge joins
    it to an already *kept* node, in favour of the most similar such node (ties: earliest).

    This is the rule of imagededup's ``find_duplicates_to_remove`` and of SemDeDup: every removed
    node is within the threshold of its representative, and a chain a~b~c with a, c far apart
    keeps c. Returns ``(keep, rep)`` per node (``rep[i] == i`` for kept nodes).
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    sim = np.asarray(sim, dtype=np.float64)
    rank = np.asarray(rank)
    keep = np.ones(n, bool)
    rep = np.arange(n, dtype=np.int64)
    if src.size == 0:
        return keep, rep
    # orient every edge from the earlier node to the later one
    later = np.where(rank[src] > rank[dst], src, dst)
    earlier = np.where(rank[src] > rank[dst], dst, src)
    # candidates per later node, best first: most similar, then earliest
    order = np.lexsort((rank[earlier], -sim, rank[later]))
    later, earlier = later[order], earlier[order]
    starts = np.flatnonzero(np.r_[True, later[1:] != later[:-1]])
    ends = np.r_[starts[1:], later.size]
    for s, e in zip(starts.tolist(), ends.tolist()):
        node = int(later[s])
        for k in range(s, e):
            cand = int(earlier[k])
            if keep[cand]:
                keep[node] = False
                rep[node] = cand
                break
    return keep, rep


def keep_first_over_nodes(node: np.ndarray, rank: np.ndarray, src: np.ndarray, dst: np.ndarray,
                          sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-level keep-first decisions when rows collapse into nodes (identical hashes / signatures).

    ``node[row]`` is the node of every row, ``rank[row]`` its source-order rank, and
    ``(src, dst, sim)`` the verified edges between nodes. The first row (by rank) of each node
    stands for it and its other rows are its copies; nodes are decided by
    :func:`greedy_keep_first` (no chaining). Returns per row ``(keep, rep, cluster)``: ``rep`` is
    the kept row it is removed in favour of (itself when kept), ``cluster`` the first row of its
    connected component. Used by ``dedup.phash`` and ``dedup.minhash``.
    """
    node = np.asarray(node, np.int64)
    rank = np.asarray(rank, np.int64)
    n = node.size
    m = int(node.max()) + 1 if n else 0
    node_rank = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(node_rank, node, rank)
    keep_n, rep_n = greedy_keep_first(m, src, dst, sim, node_rank)
    head = np.full(m, -1, np.int64)
    by_rank = np.lexsort((np.arange(n), rank))
    head[node[by_rank][::-1]] = by_rank[::-1]
    is_head = head[node] == np.arange(n)
    keep = is_head & keep_n[node]
    rep = np.where(keep_n[node], head[node], head[rep_n[node]])
    rep = np.where(keep, np.arange(n), rep)
    cluster_n = representatives(components(m, src, dst), node_rank)
    return keep, rep, head[cluster_n[node]]

