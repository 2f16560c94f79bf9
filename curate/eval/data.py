"""Labelled probe splits for the frozen-encoder evaluation.

``load_probe(path)`` reads a dataset with both splits:

* a directory with IDX files (MNIST / Fashion-MNIST layout):
  ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``;
* an ``.npz`` in the MedMNIST layout (``train_images``/``train_labels`` and
  ``test_images``/``test_labels``) or with ``x_train``/``y_train``/``x_test``/``y_test``.

``load_probe(train, test)`` takes the two splits separately; each is an ``.npz``
(``images``/``labels`` or one MedMNIST split named with ``path.npz:split``) or a
curate run directory whose ingested samples carry labels.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np
import torch

from curate.errors import ConfigError


@dataclass
class ProbeData:
    """uint8 (N, C, H, W) images and int64 labels of the probe's train and test splits."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str = ""

    def subsample(self, max_train: int | None, max_test: int | None, seed: int = 0) -> "ProbeData":
        g = torch.Generator().manual_seed(seed)

        def pick(x, y, m):
            if not m or m >= x.shape[0]:
                return x, y
            idx = torch.randperm(x.shape[0], generator=g)[:m].sort().values
            return x[idx], y[idx]

        a, b = pick(self.train_images, self.train_labels, max_train)
        c, d = pick(self.test_images, self.test_labels, max_test)
        return ProbeData(a, b, c, d, self.source)


def _nchw(images: np.ndarray, where: str) -> torch.Tensor:
    a = np.asarray(images)
    if a.dtype != np.uint8:
        from curate.imaging import to_uint8

        a = to_uint8(a)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ConfigError(f"{where}: images of shape {a.shape} are not (N, H, W), (N, H, W, C) or (N, C, H, W)")
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _labels(y: np.ndarray, n: int, where: str) -> torch.Tensor:
    y = np.asarray(y).reshape(len(y), -1)
    if y.shape[1] != 1:
        raise ConfigError(f"{where}: labels of shape {y.shape} are multi-label; the probe needs one class per image")
    if len(y) != n:
        raise ConfigError(f"{where}: {n} images but {len(y)} labels")
    return torch.from_numpy(y[:, 0].astype(np.int64))


def _idx_split(d: str, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    from curate.sources.arrays import load_idx

    def find(kind: str) -> str:
        hits = sorted(glob.glob(os.path.join(d, f"{prefix}-{kind}-idx*-ubyte*")))
        if not hits:
            raise ConfigError(f"{d}: no {prefix}-{kind}-idx*-ubyte[.gz] file (MNIST / Fashion-MNIST layout)")
        return hits[0]

    x = load_idx(find("images"))
    return _nchw(x, d), _labels(load_idx(find("labels")), len(x), d)


def _npz_split(path: str, split: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    from curate.sources.arrays import load_npz

    z = load_npz(path)
    for xk, yk in ([(f"{split}_images", f"{split}_labels"), (f"x_{split}", f"y_{split}")] if split
                   else [("images", "labels"), ("x", "y")]):
        if xk in z and yk in z:
            return _nchw(z[xk], path), _labels(z[yk], len(z[xk]), path)
    raise ConfigError(f"{path}: no {'split ' + repr(split) if split else 'images/labels'} arrays; found {sorted(z)}")


def _run_split(run_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    from curate.train.data import images_tensor, run_samples

    t = run_samples(run_dir, "ingested", columns=["image", "label"])
    labels = t.column("label").to_pylist()
    if any(v is None for v in labels):
        raise ConfigError(f"run '{run_dir}': {sum(v is None for v in labels)} samples have no label; the probe "
                          f"needs labelled samples")
    return images_tensor(t.column("image").to_pylist()), torch.tensor(labels, dtype=torch.int64)


def load_split(spec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One labelled split: ``file.npz`` / ``file.npz:split`` / a run directory."""
    path, _, split = spec.partition(".npz:")
    if split:
        return _npz_split(path + ".npz", split)
    if spec.endswith(".npz"):
        return _npz_split(spec, None)
    if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "pipeline.json")):
        return _run_split(spec)
    raise ConfigError(f"probe split '{spec}': expected file.npz, file.npz:<split> or a curate run directory")


def load_probe(path: str, test: str | None = None) -> ProbeData:
    """Probe data from a two-split dataset (IDX dir / npz) or from separate train and test specs."""
    if test is not None:
        (a, b), (c, d) = load_split(path), load_split(test)
        return ProbeData(a, b, c, d, f"{path} | {test}")
    if os.path.isdir(path) and glob.glob(os.path.join(path, "*-idx*-ubyte*")):
        (a, b), (c, d) = _idx_split(path, "train"), _idx_split(path, "t10k")
        return ProbeData(a, b, c, d, path)
    if path.endswith(".npz") and os.path.isfile(path):
        from curate.sources.arrays import load_npz

        z = load_npz(path)
        for tr, te in (("train", "test"), ("train", "val")):
            if (f"{tr}_images" in z and f"{te}_images" in z) or (f"x_{tr}" in z and f"x_{te}" in z):
                (a, b), (c, d) = _npz_split(path, tr), _npz_split(path, te)
                return ProbeData(a, b, c, d, f"{path} ({tr}/{te})")
        raise ConfigError(f"{path}: needs train_images/train_labels + test_images/test_labels (or x_train/... ) "
                          f"for a probe; found {sorted(z)}")
    raise ConfigError(f"probe data '{path}' not found or not understood: give an IDX directory (Fashion-MNIST "
                      f"layout), a two-split .npz, or --probe-test with separate splits")


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray -> RGB by replication, RGB -> gray by ITU-R 601 luma (as PIL's convert('L'))."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ConfigError(f"cannot convert {c}-channel images to {channels} channels")
