"""Frozen-feature evaluation: linear probe and weighted kNN accuracy.

* **Linear probe** (the SimCLR / Kolesnikov et al. 2019 protocol): features of
  the frozen encoder, standardised with the training split's mean and std, and
  an L2-regularised multinomial logistic regression fitted full-batch with
  L-BFGS (strong-Wolfe line search) in torch: deterministic, no extra
  dependency. Defaults: ``l2 = 1e-4`` (on the mean loss), 200 iterations.
* **kNN** (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric
  Instance Discrimination"): cosine similarity of L2-normalised features, the
  ``k = 20`` nearest training samples vote with weight ``exp(s / 0.07)``.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn import functional as F


def _labels(y) -> torch.Tensor:
    y = torch.as_tensor(y).long().flatten()
    if (y < 0).any():
        raise ValueError("probe labels must be >= 0 (unlabelled samples cannot be used for the probe)")
    return y


def linear_probe(train_x: torch.Tensor, train_y, test_x: torch.Tensor, test_y, l2: float = 1e-4,
                 max_iter: int = 200, num_classes: int | None = None) -> float:
    """Top-1 accuracy of a logistic regression trained on frozen ``train_x`` features."""
    ytr, yte = _labels(train_y), _labels(test_y)
    xtr, xte = train_x.double(), test_x.double()
    mean, std = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp_min(1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    c = num_classes or int(max(ytr.max(), yte.max()).item()) + 1
    w = torch.zeros(xtr.shape[1], c, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, ytr) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xte @ w + b).argmax(1) == yte).double().mean())


def knn_accuracy(train_x: torch.Tensor, train_y, test_x: torch.Tensor, test_y, k: int = 20,
                 temperature: float = 0.07, chunk: int = 1024) -> float:
    """Top-1 accuracy of the weighted cosine kNN classifier (Wu et al. 2018; k=20, T=0.07)."""
    ytr, yte = _labels(train_y), _labels(test_y)
    xtr = F.normalize(train_x.float(), dim=1)
    xte = F.normalize(test_x.float(), dim=1)
    c = int(max(ytr.max(), yte.max()).item()) + 1
    k = min(k, xtr.shape[0])
    correct = 0
    for s in range(0, xte.shape[0], chunk):
        sim = xte[s: s + chunk] @ xtr.T
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], c).scatter_add_(1, ytr[idx], (top / temperature).exp())
        correct += int((votes.argmax(1) == yte[s: s + chunk]).sum())
    return correct / max(1, xte.shape[0])


@torch.no_grad()
def encode(encoder: torch.nn.Module, images: torch.Tensor, image_size: int | None = None, batch_size: int = 512,
           device: str | torch.device = "cpu") -> torch.Tensor:
    """Frozen features (N, D) float32 of uint8 (N, C, H, W) images (scaled to [0, 1], resized if needed)."""
    device = torch.device(device)
    encoder = encoder.to(device).eval()
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = images[s: s + batch_size].to(device).float().div_(255.0)
        if image_size is not None and x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext():
            out.append(encoder(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
