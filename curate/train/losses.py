"""Contrastive losses on two views: NT-Xent, DCL, extra hard negatives, MoCHi mixing.

* **NT-Xent** (SimCLR, Chen et al. 2020): for anchor ``i`` with positive ``p``
  among the 2N views of a batch, ``l_i = -log exp(s_ip/t) / sum_{k != i} exp(s_ik/t)``
  with cosine similarities ``s``; SimCLR's CIFAR setting is ``t = 0.5``.
* **DCL** (decoupled contrastive learning, Yeh et al. 2022): the positive is
  removed from the denominator, ``l_i = -s_ip/t + log sum_{k != i, p} exp(s_ik/t)``,
  which removes the negative-positive coupling that makes NT-Xent need large
  batches.
* **Extra negatives**: mined hard negatives (``mine.negatives`` ids, encoded in
  the same step) are appended to the in-batch negatives, either per anchor
  ``(N, K, d)`` (with an optional validity mask) or shared by all anchors ``(M, d)``.
* **MoCHi** (Kalantidis et al. 2020, "Hard Negative Mixing"): per anchor the
  ``n_hard`` most similar negatives are mixed into ``s`` synthetic negatives
  ``normalize(a n_i + (1-a) n_j)``, ``a ~ U(0, 1)``, and ``s_prime`` harder ones
  mixed with the query ``normalize(b q + (1-b) n_j)``, ``b ~ U(0, beta_max)``
  with ``beta_max = 0.5`` so the query contributes less than half. Synthetic
  points carry no gradient (as in the paper). Paper setting on a 16k queue:
  N=1024, s=512, s'=256; the in-batch defaults here are scaled down.

Per-sample weights (AdaInf replication / real-vs-synthetic weights) weigh each
anchor's loss: ``sum(w_i l_i) / sum(w_i)``; both views of a sample share its weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

LOSSES = ("ntxent", "dcl")


@dataclass(frozen=True)
class MoCHi:
    """Feature-level hard negative mixing settings (Kalantidis et al. 2020)."""

    n_hard: int = 128
    s: int = 64
    s_prime: int = 32
    beta_max: float = 0.5

    def __post_init__(self):
        if self.n_hard < 2:
            raise ValueError(f"MoCHi n_hard must be >= 2, got {self.n_hard}")
        if self.s < 0 or self.s_prime < 0:
            raise ValueError("MoCHi s and s_prime must be >= 0")
        if not 0.0 < self.beta_max <= 0.5:
            raise ValueError(f"MoCHi beta_max must be in (0, 0.5] so the query contributes less than half, "
                             f"got {self.beta_max}")


def _mochi_logits(q: torch.Tensor, neg_logits: torch.Tensor, neg_feats, cfg: MoCHi, temperature: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Logits of the synthetic negatives of every anchor: (A, s + s_prime).

    ``neg_logits`` (A, M) are the anchors' logits against their candidate negatives
    (-inf where not a negative); ``neg_feats(idx)`` gathers the (A, n, d) features of
    negatives ``idx`` (A, n).
    """
    a_count = q.shape[0]
    n_avail = int(torch.isfinite(neg_logits).sum(1).min().item())
    n_hard = min(cfg.n_hard, n_avail)
    if n_hard < 2 or (cfg.s + cfg.s_prime) == 0:
        return neg_logits.new_zeros((a_count, 0))
    dev = q.device
    hard_idx = neg_logits.topk(n_hard, dim=1).indices  # (A, n_hard)
    hard = neg_feats(hard_idx).detach()  # (A, n_hard, d), unit norm
    qd = q.detach()
    out = []
    if cfg.s:
        i = torch.randint(0, n_hard, (a_count, cfg.s), generator=generator, device="cpu").to(dev)
        j = torch.randint(0, n_hard, (a_count, cfg.s), generator=generator, device="cpu").to(dev)
        a = torch.rand((a_count, cfg.s, 1), generator=generator, device="cpu").to(dev)
        ni = torch.gather(hard, 1, i[..., None].expand(-1, -1, hard.shape[2]))
        nj = torch.gather(hard, 1, j[..., None].expand(-1, -1, hard.shape[2]))
        out.append(F.normalize(a * ni + (1 - a) * nj, dim=-1))
    if cfg.s_prime:
        j = torch.randint(0, n_hard, (a_count, cfg.s_prime), generator=generator, device="cpu").to(dev)
        b = torch.rand((a_count, cfg.s_prime, 1), generator=generator, device="cpu").to(dev) * cfg.beta_max
        nj = torch.gather(hard, 1, j[..., None].expand(-1, -1, hard.shape[2]))
        out.append(F.normalize(b * qd[:, None, :] + (1 - b) * nj, dim=-1))
    synth = torch.cat(out, dim=1)  # (A, s + s', d)
    return torch.einsum("ad,asd->as", q, synth) / temperature


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, *, loss: str = "ntxent",
                     weights: torch.Tensor | None = None, extra_negatives: torch.Tensor | None = None,
                     extra_mask: torch.Tensor | None = None, mochi: MoCHi | None = None,
                     generator: torch.Generator | None = None, reduction: str = "mean") -> torch.Tensor:
    """Two-view contrastive loss over the 2N anchors of a batch.

    ``z1``, ``z2``: (N, d) projections of the two views (normalised here).
    ``loss``: ``"ntxent"`` or ``"dcl"``. ``weights``: (N,) per-sample weights.
    ``extra_negatives``: (N, K, d) per-sample or (M, d) shared extra negatives;
    ``extra_mask``: (N, K) bool, False marks padding. ``mochi``: mixing settings.
    ``reduction``: ``"mean"`` (weighted mean) or ``"none"`` ((2N,) per-anchor losses).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}'; choose one of {LOSSES}")
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"views must both be (N, d); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, d)
    dev = z.device
    logits = z @ z.T / temperature  # (2N, 2N)
    idx = torch.arange(2 * n, device=dev)
    pos_idx = (idx + n) % (2 * n)
    pos = logits[idx, pos_idx]
    neg_mask = torch.ones_like(logits, dtype=torch.bool)
    neg_mask[idx, idx] = False
    neg_mask[idx, pos_idx] = False
    neg_logits = logits.masked_fill(~neg_mask, float("-inf"))
    shared = per_sample = None  # extra negatives' features, for MoCHi's gather
    if extra_negatives is not None:
        e = F.normalize(extra_negatives.float(), dim=-1)
        if e.ndim == 2:  # shared by all anchors
            if extra_mask is not None:
                raise ValueError("extra_mask applies only to per-sample extra negatives (N, K, d)")
            shared = e
            el = z @ e.T / temperature  # (2N, M)
        elif e.ndim == 3 and e.shape[0] == n:
            per_sample = torch.cat([e, e])  # anchors i and i+N share sample i's negatives
            el = torch.einsum("ad,akd->ak", z, per_sample) / temperature  # (2N, K)
            if extra_mask is not None:
                el = el.masked_fill(~torch.cat([extra_mask, extra_mask]).to(dev).bool(), float("-inf"))
        else:
            raise ValueError(f"extra_negatives must be (N, K, d) or (M, d); got {tuple(extra_negatives.shape)}")
        neg_logits = torch.cat([neg_logits, el], dim=1)
    if mochi is not None:
        def gather(ix: torch.Tensor) -> torch.Tensor:  # (A, n) candidate columns -> (A, n, d)
            if shared is not None:
                return torch.cat([z, shared])[ix]
            out = z[ix.clamp(max=2 * n - 1)]
            if per_sample is None:
                return out
            k = (ix - 2 * n).clamp(min=0)
            extra = torch.gather(per_sample, 1, k[..., None].expand(-1, -1, per_sample.shape[2]))
            return torch.where((ix < 2 * n)[..., None], out, extra)

        neg_logits = torch.cat([neg_logits, _mochi_logits(z, neg_logits, gather, mochi, temperature, generator)], 1)
    if loss == "ntxent":
        denom = torch.logsumexp(torch.cat([pos[:, None], neg_logits], dim=1), dim=1)
    else:
        denom = torch.logsumexp(neg_logits, dim=1)
    per_anchor = denom - pos
    if reduction == "none":
        return per_anchor
    if weights is None:
        return per_anchor.mean()
    w = torch.cat([weights, weights]).to(per_anchor)
    if (w < 0).any():
        raise ValueError("sample weights must be >= 0")
    return (per_anchor * w).sum() / w.sum().clamp_min(1e-12)
