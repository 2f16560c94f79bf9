"""``pixels``: resize + flatten + PCA, the weight-free baseline encoder.

Every image is resized to ``image_size`` (default 32, bilinear), flattened and
projected on the top ``dim`` (default 64) principal components fitted with
``faiss.PCAMatrix`` on a seeded sample of the whole dataset; ``whiten: true``
scales each component by eigenvalue^-1/2 (eigen_power -0.5). On small images
(MNIST-like, 28 px) PCA of raw pixels is the classic near-duplicate baseline
(Turk & Pentland 1991 "eigenfaces"); it needs no weights and is deterministic.
If the fit sample has fewer than ``dim + 1`` images, the trailing components
are zero (cosine is unaffected) and ``components`` in the metadata says so.
"""

from __future__ import annotations

import hashlib

import faiss
import numpy as np
import torch
from torch import nn

from curate.encoders.base import Encoder, EncoderOptions


class ProjectionEncoder(Encoder):
    """A fixed feature map followed by a fitted linear projection (``y = A f(x) + b``): the state
    that ``pixels`` and ``gradpix`` share (options, name, the projection layer and its saved state)."""

    needs_fit = True
    kind = "pixels"
    default_dim = 64

    def __init__(self, opts: EncoderOptions):
        super().__init__()
        self.image_size = opts.image_size or 32
        self.channels = opts.channels or 1
        self.dim = opts.dim or self.default_dim
        self.whiten = opts.whiten
        self.mean = (0.0,) * self.channels
        self.std = (1.0,) * self.channels
        self.features = self.feature_map(opts)
        self.name = f"{self.kind}-{self.image_size}px-{'c' if self.channels == 3 else 'g'}-pca{self.dim}" + \
            ("-white" if self.whiten else "")
        self.components = 0
        self.fit_samples = 0

    def feature_map(self, opts: EncoderOptions) -> nn.Module:
        return nn.Flatten()

    def set_state(self, A: np.ndarray, b: np.ndarray, components: int) -> None:
        lin = nn.Linear(A.shape[1], A.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(A, np.float32)))
            lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(b, np.float32)))
        self.module = nn.Sequential(self.features, lin).eval()
        self.components = int(components)
        self.weights_digest = hashlib.sha256(A.tobytes() + b.tobytes()).hexdigest()[:12]

    def state(self) -> dict[str, np.ndarray]:
        lin = self.module[1]
        return {"A": lin.weight.detach().cpu().numpy(), "b": lin.bias.detach().cpu().numpy(),
                "components": np.array(self.components), "fit_samples": np.array(self.fit_samples)}


class PixelsEncoder(ProjectionEncoder):
    def preprocessing(self) -> dict:
        d = super().preprocessing()
        d.update(pca_dim=self.dim, components=self.components, whiten=self.whiten, fit="faiss.PCAMatrix",
                 fit_samples=self.fit_samples)
        return d

    def fit(self, images: np.ndarray) -> None:
        d_in = self.channels * self.image_size * self.image_size
        x = np.ascontiguousarray(images.reshape(len(images), d_in), dtype=np.float32)
        n, d_in = x.shape
        k = max(0, min(self.dim, n - 1, d_in))
        A = np.zeros((self.dim, d_in), np.float32)
        b = np.zeros(self.dim, np.float32)
        if k > 0:
            pca = faiss.PCAMatrix(d_in, k, -0.5 if self.whiten else 0.0, False)
            pca.epsilon = 1e-6
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)  # the covariance's rounding depends on the thread count: one thread,
            try:  # so a Dask worker (OMP_NUM_THREADS=1) and an in-process run fit the same components
                pca.train(x)
            finally:
                faiss.omp_set_num_threads(threads)
            A[:k] = faiss.vector_to_array(pca.A).reshape(k, d_in)
            b[:k] = faiss.vector_to_array(pca.b)
        self.set_state(A, b, k)
        self.fit_samples = int(n)


def build(arg: str | None, opts: EncoderOptions) -> Encoder:
    return PixelsEncoder(opts)
