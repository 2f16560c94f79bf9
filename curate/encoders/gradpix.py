"""``gradpix``: multi-scale pixels + signed gradient-orientation histograms + PCA, weight-free.

The default of ``encoder: auto`` when no checkpoint is named. Per image (gray
luma for the gradients, every channel for the pixels), resized to
``image_size`` S (default 32):

* gradient-orientation histograms in the manner of HOG (Dalal & Triggs 2005):
  **signed** orientation (0-2pi, so bright-on-dark and dark-on-bright edges
  differ, which tells MR contrasts apart), 8 directions as half-wave
  rectified steerable derivatives, pooled in cells of
  S/8 and S/4 px, square-rooted (Hellinger / power normalisation, Perronnin et
  al. 2010).
  No per-block normalisation: it amplifies noise in flat background, which
  hurts on medical slices (measured in ``benchmarks/encoder_quality.py``);
* pixels at S/2 (2x2 area pooling); pixels at full S are off by default
  (block weight 0).

Each of the blocks is scaled to unit mean squared norm on the fit sample
(so no block dominates by its width), blocks are weighted, concatenated and
projected on the top ``dim`` principal components (float64 covariance + ``eigh``) of the
same seeded fit sample the ``pixels`` encoder uses (896 features at 32 px). The per-block scale is
folded into the PCA matrix, so the fitted state is one linear map, like
``pixels``. Everything is plain float32 torch / faiss: deterministic, no
weights, ~10k img/s of features on one CPU core at 32 px.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from curate.encoders.base import Encoder, EncoderOptions
from curate.encoders.pixels import ProjectionEncoder

BINS = 8
# block weights (gradients at fine cells, coarse cells, pixels at S, pixels at S/2); chosen on
# Fashion-MNIST and MNI152 slices in benchmarks/encoder_quality.py: pixels at full S (weight 0.7)
# gave no gain there (0.7964 vs 0.7963 FMNIST, 0.662 vs 0.668 MNI152) and cost a 1,920-d PCA fit
WEIGHTS = (1.0, 1.0, 0.0, 0.7)
LUMA = (0.299, 0.587, 0.114)


class GradPixFeatures(nn.Module):
    """(N, C, S, S) in [0, 1] -> (N, F) raw features (before scaling and PCA).

    The orientation histogram is computed as half-wave rectified oriented
    derivatives: the derivative along direction theta_k is the steerable
    combination cos(theta_k) dx + sin(theta_k) dy of the two central
    differences (Freeman & Adelson 1991), so ``BINS`` weighted sums + ReLU give
    each pixel's signed-orientation votes, which are then
    pooled in cells as in HOG (Dalal & Triggs 2005).
    """

    def __init__(self, channels: int, size: int, weights: tuple[float, ...] = WEIGHTS):
        super().__init__()
        if size % 8:
            raise ValueError(f"gradpix: image_size must be a multiple of 8, got {size}")
        self.channels, self.size, self.weights = channels, size, tuple(weights)
        self.cells = (size // 8, size // 4)
        th = torch.arange(BINS, dtype=torch.float32) * (2 * math.pi / BINS)
        self.register_buffer("cos", torch.cos(th).reshape(1, BINS, 1, 1))
        self.register_buffer("sin", torch.sin(th).reshape(1, BINS, 1, 1))
        self.register_buffer("luma", torch.tensor(LUMA).reshape(1, 3, 1, 1))

    def widths(self) -> tuple[int, ...]:
        s, c = self.size, self.channels
        return tuple(BINS * (s // cell) ** 2 for cell in self.cells) + (c * s * s if self.weights[2] else 0,
                                                                          c * (s // 2) ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        g = (x * self.luma).sum(1, keepdim=True) if self.channels == 3 else x
        gp = F.pad(g, (1, 1, 1, 1), mode="replicate")
        dx = gp[:, :, 1:-1, 2:] - gp[:, :, 1:-1, :-2]  # central differences (elementwise: faster than a conv
        dy = gp[:, :, 2:, 1:-1] - gp[:, :, :-2, 1:-1]  # with one input channel on CPU)
        # one direction at a time keeps the working set in cache (2x faster than all 8 maps at once)
        fine = torch.cat([F.avg_pool2d(F.relu(dx * self.cos[:, k:k + 1] + dy * self.sin[:, k:k + 1]), self.cells[0])
                          for k in range(BINS)], 1)
        coarse = F.avg_pool2d(fine, 2)
        parts = [fine.sqrt().flatten(1), coarse.sqrt().flatten(1)]
        parts += [x.flatten(1) if self.weights[2] else x.new_zeros(len(x), 0), F.avg_pool2d(x, 2).flatten(1)]
        return torch.cat(parts, 1)


class GradPixEncoder(ProjectionEncoder):
    kind = "gradpix"
    default_dim = 128

    def feature_map(self, opts: EncoderOptions) -> nn.Module:
        return GradPixFeatures(self.channels, self.image_size, opts.extra.get("block_weights", WEIGHTS))

    def preprocessing(self) -> dict:
        d = super().preprocessing()
        d.update(features="gradpix", cells=list(self.features.cells), bins=BINS, block_weights=list(self.features.weights),
                 pca_dim=self.dim, components=self.components, whiten=self.whiten, fit="numpy.linalg.eigh",
                 fit_samples=self.fit_samples)
        return d

    def _raw(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for b0 in range(0, len(images), batch):
                out.append(self.features(torch.from_numpy(np.ascontiguousarray(images[b0:b0 + batch]))).numpy())
        return np.concatenate(out) if out else np.zeros((0, sum(self.features.widths())), np.float32)

    def fit(self, images: np.ndarray) -> None:
        f = self._raw(images.astype(np.float32, copy=False))
        n, d_in = f.shape
        scale = np.empty(d_in, np.float32)
        o = 0
        for w, wt in zip(self.features.widths(), self.features.weights):
            blk = f[:, o:o + w]
            ms = float(((blk - blk.mean(0)) ** 2).sum(1).mean()) if n else 0.0
            scale[o:o + w] = wt / math.sqrt(ms) if ms > 0 else 0.0
            o += w
        x = np.ascontiguousarray(f * scale, dtype=np.float32)
        k = max(0, min(self.dim, n - 1, d_in))
        A = np.zeros((self.dim, d_in), np.float32)
        b = np.zeros(self.dim, np.float32)
        if k > 0:
            A[:k], b[:k] = _pca(x, k, self.whiten)
        self.set_state(A * scale[None, :], b, k)  # PCA(scale * f) = (A * scale) f + b
        self.fit_samples = int(n)


def _pca(x: np.ndarray, k: int, whiten: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` principal axes of ``x`` as ``y = A x + b`` (b = -A mean); whitening scales by eigenvalue^-1/2.

    Covariance by one float64 GEMM and ``numpy.linalg.eigh`` (about 10x faster than
    ``faiss.PCAMatrix.train`` at 896-d); each axis' sign is fixed so that its largest-magnitude
    coordinate is positive, so the result does not depend on the eigen-solver's sign choice.
    """
    x64 = x.astype(np.float64)
    mean = x64.mean(0)
    xc = x64 - mean
    cov = xc.T @ xc / max(1, len(x) - 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:k]
    vals, vecs = vals[order], vecs[:, order].T
    vecs *= np.sign(vecs[np.arange(k), np.abs(vecs).argmax(1)])[:, None]
    if whiten:
        vecs /= np.sqrt(np.maximum(vals, 1e-6))[:, None]
    return vecs.astype(np.float32), (-(vecs @ mean)).astype(np.float32)


def build(arg: str | None, opts: EncoderOptions) -> Encoder:
    return GradPixEncoder(opts)
