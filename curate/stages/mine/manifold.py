"""Label-free false-negative guard for mine.negatives: exclude the anchor's neighbourhood on the data manifold.

Mining on Manifolds (Iscen, Tolias, Avrithis, Chum, CVPR 2018): a hard
negative is close to the anchor in Euclidean (cosine) space but far on the
manifold; samples reachable through a chain of close neighbours are probably
the same thing (same class, same anatomy) even when they are not the nearest.
Their manifold similarity is diffusion on a kNN graph (Iscen et al. CVPR 2017,
Zhou et al. 2004 ranking): F = (I - alpha W)^-1, W the symmetrically
normalised affinity.

At 1M samples a sample-level graph is too big, so the graph is over *fine
clusters*: seeded spherical k-means (faiss) with many small clusters
(``clusters``: about one per 70 samples, at most 4096), trained on the
embeddings in sample_id order, so cluster ids do not depend on partitioning.
Centroid graph: each centroid's ``graph_k`` (10) nearest centroids, weights
max(0, cos)^3 (Iscen et al.), mutual edges plus each centroid's nearest
neighbour (so no cluster is isolated), alpha 0.9. For every cluster the
``exclude`` share of clusters with the largest diffusion score (always its
own; default 0.15) is *excluded*: a candidate in one of the anchor cluster's excluded
clusters is rejected as a likely false negative. With ``alpha: 0`` only the
anchor's own fine cluster is excluded (plain fine-cluster exclusion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from curate.ops import semdedup

MAX_CLUSTERS = 4096
MIN_SAMPLES = 64  # below this the guard is inactive (counted): too few samples for a cluster graph


@dataclass
class ManifoldClusters:
    cluster: np.ndarray  # (n,) int32 fine cluster of each kept row
    centroids: np.ndarray  # (k, d) float32
    excluded: np.ndarray  # (k, k) bool: excluded[a, b] = cluster b is on cluster a's manifold neighbourhood


def auto_clusters(n: int, per_cluster: int = 70) -> int:
    return int(max(2, min(MAX_CLUSTERS, n // per_cluster)))


def diffusion(centroids: np.ndarray, graph_k: int, alpha: float) -> np.ndarray:
    """(k, k) diffusion scores F = (I - alpha W)^-1 over the mutual kNN graph of the centroids."""
    k = len(centroids)
    if alpha <= 0 or k < 2:
        return np.eye(k)
    kc = int(min(graph_k, k - 1))
    S = centroids @ centroids.T
    np.fill_diagonal(S, -np.inf)
    nn = np.argsort(-S, axis=1, kind="stable")[:, :kc]
    rows = np.repeat(np.arange(k), kc)
    w = np.maximum(np.take_along_axis(S, nn, 1).ravel(), 0.0) ** 3
    A = sp.csr_matrix((w, (rows, nn.ravel())), shape=(k, k))
    first = sp.csr_matrix((w.reshape(k, kc)[:, 0], (np.arange(k), nn[:, 0])), shape=(k, k))
    A = A.minimum(A.T).maximum(first).maximum(first.T)  # mutual edges + each node's nearest neighbour
    deg = np.asarray(A.sum(1)).ravel()
    dm = sp.diags(1.0 / np.sqrt(np.maximum(deg, 1e-12)))
    W = (dm @ A @ dm).toarray()
    return np.linalg.solve(np.eye(k) - alpha * W, np.eye(k))


def excluded_clusters(F: np.ndarray, exclude: float) -> np.ndarray:
    """excluded[a, b]: b is among the ceil(exclude k) clusters with the largest F[a, :] (a itself always)."""
    k = len(F)
    m = max(1, int(np.ceil(exclude * k)))
    F = F.copy()
    np.fill_diagonal(F, np.inf)
    order = np.argsort(-F, axis=1, kind="stable")[:, :m]
    out = np.zeros((k, k), bool)
    np.put_along_axis(out, order, True, 1)
    return out & (F > 0)  # a cluster the diffusion never reaches is not excluded by a tie


def fit(x: np.ndarray, ids: np.ndarray, clusters: int | None, graph_k: int, alpha: float, exclude: float,
        seed: int, niter: int = 20) -> ManifoldClusters:
    """Fine clusters of the rows of ``x`` (unit vectors) and each cluster's excluded neighbourhood."""
    n = len(x)
    k = auto_clusters(n) if clusters is None else int(max(1, min(clusters, n)))
    order = np.argsort(ids.astype(str), kind="stable")  # canonical order: independent of partitioning
    lab, _, cent = semdedup.spherical_kmeans(np.ascontiguousarray(x[order]), k, niter, seed,
                                             max_points_per_centroid=256)
    cluster = np.empty(n, np.int32)
    cluster[order] = lab
    cent = np.ascontiguousarray(cent, np.float32)
    return ManifoldClusters(cluster, cent, excluded_clusters(diffusion(cent, graph_k, alpha), exclude))
