"""Real-vs-generated distribution gap in an embedding space.

* :func:`frechet_distance` - Fréchet distance between Gaussians fitted to the two
  feature sets (Heusel et al. 2017, "GANs trained by a two time-scale update
  rule ..."; FID when the features are Inception pool3). The matrix square root
  follows pytorch-fid: ``scipy.linalg.sqrtm`` with an ``eps * I`` offset when
  the product is singular, imaginary round-off dropped.
* :func:`precision_recall` - improved precision and recall (Kynkäänniemi et al.
  2019, "Improved Precision and Recall Metric for Assessing Generative
  Models"): each set's manifold is the union of balls reaching every sample's
  k-th nearest neighbour (k = 3, the paper's default); precision = share of
  generated samples inside the real manifold (fidelity), recall = share of real
  samples inside the generated manifold (diversity).

Features are used as given (pass L2-normalised embeddings for a cosine
geometry). Both functions subsample to ``max_samples`` rows with a seeded RNG.
"""

from __future__ import annotations

import warnings

import numpy as np


def _subsample(x: np.ndarray, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d), got shape {x.shape}")
    if max_samples is not None and len(x) > max_samples:
        x = x[np.sort(rng.choice(len(x), max_samples, replace=False))]
    return x


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``x`` (n, d)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        raise ValueError("need at least 2 samples to fit a Gaussian")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products (few samples) are handled below, as pytorch-fid does
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(max(0.0, diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)))


def frechet_distance(real: np.ndarray, fake: np.ndarray, max_samples: int | None = 20000, seed: int = 0) -> float:
    """Fréchet distance between Gaussian fits of ``real`` and ``fake`` (n, d) features."""
    rng = np.random.default_rng(seed)
    a, b = _subsample(real, max_samples, rng), _subsample(fake, max_samples, rng)
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def knn_radii(x: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Squared distance from each row of ``x`` to its k-th nearest other row."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} samples for k-NN radii, got {len(x)}")
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        d = _sq_dists(x[i:i + chunk], x)
        # index k: the 0-th smallest is the point itself
        out[i:i + chunk] = np.partition(d, k, axis=1)[:, k]
    return out


def _coverage(query: np.ndarray, ref: np.ndarray, radii: np.ndarray, chunk: int = 2048) -> np.ndarray:
    inside = np.zeros(len(query), bool)
    for i in range(0, len(query), chunk):
        inside[i:i + chunk] = (_sq_dists(query[i:i + chunk], ref) <= radii[None, :]).any(1)
    return inside


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, max_samples: int | None = 10000,
                     seed: int = 0) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds (k = 3)."""
    rng = np.random.default_rng(seed)
    a, b = _subsample(real, max_samples, rng), _subsample(fake, max_samples, rng)
    precision = float(_coverage(b, a, knn_radii(a, k)).mean())
    recall = float(_coverage(a, b, knn_radii(b, k)).mean())
    return precision, recall


def gap_report(real: np.ndarray, fake: np.ndarray, k: int = 3, max_samples: int | None = 10000,
               seed: int = 0) -> dict:
    """Fréchet distance, precision and recall of ``fake`` against ``real``, plus the real-vs-real baseline.

    ``fd_real_split`` is the Fréchet distance between two random halves of ``real`` - the
    sampling-noise floor, so a reader can tell a small gap from none.
    """
    rng = np.random.default_rng(seed)
    a, b = _subsample(real, max_samples, rng), _subsample(fake, max_samples, rng)
    p, r = precision_recall(a, b, k=k, max_samples=None)
    perm = rng.permutation(len(a))
    half = len(a) // 2
    floor = frechet_from_stats(*gaussian_stats(a[perm[:half]]), *gaussian_stats(a[perm[half:]])) if half >= 2 else None
    return {"fd": frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b)), "fd_real_split": floor,
            "precision": p, "recall": r, "k": k, "n_real": len(a), "n_fake": len(b)}
