"""Batched SimCLR augmentations in plain torch, on whatever device the batch is on.

The SimCLR set (Chen et al., 2020, "A Simple Framework for Contrastive Learning
of Visual Representations", appendix A): random resized crop (scale
[0.08, 1], ratio [3/4, 4/3]) + horizontal flip (p 0.5), colour jitter with
probability 0.8 and strength s = 1.0 (brightness 0.8s, contrast 0.8s,
saturation 0.8s, hue 0.2s, applied in a random order), random grayscale
(p 0.2). AdaInf's weak setting (Zhang et al., 2024, "AdaInf: Data inflation
for contrastive learning") is the same transform with ``crop_min_scale=0.2,
jitter_p=0.4, jitter_strength=0.5`` (:meth:`SimCLRAugment.weak`).

Every random parameter is drawn per image in one tensor op, the crop + flip is
one ``grid_sample`` over the whole batch, and colour ops are vectorised, so a
batch of 512 images costs a handful of kernels instead of 512 PIL calls.
Semantics follow torchvision's ``RandomResizedCrop`` / ``ColorJitter`` /
``RandomGrayscale`` (1-channel images: saturation, hue and grayscale are
identities, as in torchvision). Output keeps the input's channel count.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)


class SimCLRAugment:
    """Callable on a float (N, C, H, W) batch in [0, 1] (uint8 is accepted and scaled); returns (N, C, size, size).

    Args:
        size: output side in pixels.
        crop_min_scale: lower bound of the crop's area fraction (SimCLR 0.08; AdaInf weak 0.2).
        crop_ratio: aspect-ratio range of the crop (torchvision default 3/4 .. 4/3).
        flip_p: horizontal flip probability.
        jitter_p: probability that colour jitter is applied to an image (SimCLR 0.8; AdaInf weak 0.4).
        jitter_strength: s; brightness/contrast/saturation 0.8 s, hue 0.2 s (SimCLR 1.0; AdaInf weak 0.5).
        gray_p: random grayscale probability (SimCLR 0.2).
        generator: optional seeded ``torch.Generator``; parameters are drawn on its device.
    """

    def __init__(self, size: int, crop_min_scale: float = 0.08, jitter_p: float = 0.8, jitter_strength: float = 1.0,
                 gray_p: float = 0.2, flip_p: float = 0.5, crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 generator: torch.Generator | None = None):
        if size < 1:
            raise ValueError(f"SimCLRAugment: size must be >= 1, got {size}")
        if not 0 < crop_min_scale <= 1:
            raise ValueError(f"SimCLRAugment: crop_min_scale must be in (0, 1], got {crop_min_scale}")
        for name, p in (("jitter_p", jitter_p), ("gray_p", gray_p), ("flip_p", flip_p)):
            if not 0 <= p <= 1:
                raise ValueError(f"SimCLRAugment: {name} must be a probability in [0, 1], got {p}")
        if jitter_strength < 0:
            raise ValueError(f"SimCLRAugment: jitter_strength must be >= 0, got {jitter_strength}")
        self.size = int(size)
        self.crop_min_scale = float(crop_min_scale)
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.flip_p = float(flip_p)
        self.jitter_p = float(jitter_p)
        self.jitter_strength = float(jitter_strength)
        self.gray_p = float(gray_p)
        self.generator = generator

    # ---- presets ------------------------------------------------------------------
    @classmethod
    def weak(cls, size: int, **kw: Any) -> "SimCLRAugment":
        """AdaInf's weak augmentation: crop min scale 0.2, jitter p 0.4, strength 0.5."""
        return cls(size, **{"crop_min_scale": 0.2, "jitter_p": 0.4, "jitter_strength": 0.5, **kw})

    @classmethod
    def from_params(cls, size: int, params: dict[str, Any] | None = None, **kw: Any) -> "SimCLRAugment":
        """Build from a recommendation dict (e.g. index.json ``metadata.augmentation``); unknown keys are ignored."""
        names = ("crop_min_scale", "jitter_p", "jitter_strength", "gray_p", "flip_p")
        given = {k: v for k, v in (params or {}).items() if k in names}
        return cls(size, **{**given, **kw})

    def params(self) -> dict[str, float]:
        return {"size": self.size, "crop_min_scale": self.crop_min_scale, "jitter_p": self.jitter_p,
                "jitter_strength": self.jitter_strength, "gray_p": self.gray_p, "flip_p": self.flip_p}

    def __repr__(self) -> str:
        return "SimCLRAugment(" + ", ".join(f"{k}={v}" for k, v in self.params().items()) + ")"

    # ---- randomness -----------------------------------------------------------------
    def _rand(self, *shape: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        g = generator if generator is not None else self.generator
        if g is None:
            return torch.rand(*shape, device=device)
        return torch.rand(*shape, generator=g, device=g.device).to(device)

    # ---- the transform ----------------------------------------------------------------
    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim == 3:
            return self(x[None], generator)[0]
        if x.ndim != 4:
            raise ValueError(f"SimCLRAugment expects a (N, C, H, W) batch, got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        elif not x.is_floating_point():
            raise ValueError(f"SimCLRAugment expects float in [0, 1] or uint8, got {x.dtype}")
        if x.shape[1] not in (1, 3):
            raise ValueError(f"SimCLRAugment expects 1 or 3 channels, got {x.shape[1]}")
        n = x.shape[0]
        if n == 0:
            return x.new_zeros((0, x.shape[1], self.size, self.size))
        dev = x.device
        x = self._crop_flip(x, dev, generator)
        if self.jitter_p > 0 and self.jitter_strength > 0:
            x = self._jitter(x, dev, generator)
        if self.gray_p > 0 and x.shape[1] == 3:
            gray = _gray(x).expand_as(x)
            sel = (self._rand(n, device=dev, generator=generator) < self.gray_p).view(n, 1, 1, 1)
            x = torch.where(sel, gray, x)
        return x

    def _crop_flip(self, x: torch.Tensor, dev: torch.device, gen) -> torch.Tensor:
        """torchvision RandomResizedCrop (10 tries, centre-crop fallback) + flip, as one affine grid_sample."""
        n, _, h, w = x.shape
        tries = 10
        area = float(h * w)
        r = self._rand(n, tries, 4, device=dev, generator=gen)
        scale = self.crop_min_scale + (1.0 - self.crop_min_scale) * r[..., 0]
        lo, hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = torch.exp(lo + (hi - lo) * r[..., 1])
        cw = torch.round(torch.sqrt(area * scale * ratio))
        ch = torch.round(torch.sqrt(area * scale / ratio))
        ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1, device=dev))
        idx = first.clamp(min=0)[:, None]
        cw_s, ch_s = cw.gather(1, idx)[:, 0], ch.gather(1, idx)[:, 0]
        # top-left corner uniform over valid integer positions (torchvision: randint(0, H - h + 1))
        top = torch.floor(r[..., 2].gather(1, idx)[:, 0] * (h - ch_s + 1))
        left = torch.floor(r[..., 3].gather(1, idx)[:, 0] * (w - cw_s + 1))
        # fallback: centre crop at the clamped ratio
        in_ratio = w / h
        if in_ratio < self.crop_ratio[0]:
            fw, fh = w, int(round(w / self.crop_ratio[0]))
        elif in_ratio > self.crop_ratio[1]:
            fh, fw = h, int(round(h * self.crop_ratio[1]))
        else:
            fw, fh = w, h
        bad = first < 0
        cw_s = torch.where(bad, torch.full_like(cw_s, fw), cw_s)
        ch_s = torch.where(bad, torch.full_like(ch_s, fh), ch_s)
        top = torch.where(bad, torch.full_like(top, (h - fh) // 2), top)
        left = torch.where(bad, torch.full_like(left, (w - fw) // 2), left)
        flip = self._rand(n, device=dev, generator=gen) < self.flip_p
        # normalised coordinates (align_corners=False): pixel edges at -1 and 1
        sx = cw_s / w
        sy = ch_s / h
        cx = (left + cw_s / 2) / w * 2 - 1
        cy = (top + ch_s / 2) / h * 2 - 1
        theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
        theta[:, 0, 0] = torch.where(flip, -sx, sx).to(x.dtype)
        theta[:, 0, 2] = cx.to(x.dtype)
        theta[:, 1, 1] = sy.to(x.dtype)
        theta[:, 1, 2] = cy.to(x.dtype)
        grid = F.affine_grid(theta, [n, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: torch.Tensor, dev: torch.device, gen) -> torch.Tensor:
        """torchvision ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with probability p, ops in a random order per image."""
        n, c = x.shape[:2]
        s = self.jitter_strength
        r = self._rand(n, 9, device=dev, generator=gen)
        apply = r[:, 0] < self.jitter_p

        def factor(u: torch.Tensor, amount: float) -> torch.Tensor:
            lo = max(0.0, 1.0 - amount)
            f = lo + (1.0 + amount - lo) * u
            return torch.where(apply, f, torch.ones_like(f))

        bright = factor(r[:, 1], 0.8 * s)
        contrast = factor(r[:, 2], 0.8 * s)
        sat = factor(r[:, 3], 0.8 * s)
        hue_amt = min(0.2 * s, 0.5)
        hue = torch.where(apply, (2 * r[:, 4] - 1) * hue_amt, torch.zeros_like(r[:, 4]))
        order = torch.argsort(r[:, 5:9], dim=1)  # a random permutation of the 4 ops per image
        view = (n, 1, 1, 1)
        for step in range(4):
            op = order[:, step]
            m = (op == 0) & apply
            if m.any():
                x = torch.where(m.view(view), (x * bright.view(view)).clamp(0, 1), x)
            m = (op == 1) & apply
            if m.any():
                mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
                f = contrast.view(view)
                x = torch.where(m.view(view), (f * x + (1 - f) * mean).clamp(0, 1), x)
            if c == 3:
                m = (op == 2) & apply
                if m.any():
                    f = sat.view(view)
                    x = torch.where(m.view(view), (f * x + (1 - f) * _gray(x)).clamp(0, 1), x)
                m = (op == 3) & apply & (hue != 0)
                if m.any():
                    sel = m.nonzero()[:, 0]
                    x = x.index_copy(0, sel, _shift_hue(x.index_select(0, sel), hue.index_select(0, sel)))
        return x


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (_LUMA[0] * x[:, 0:1] + _LUMA[1] * x[:, 1:2] + _LUMA[2] * x[:, 2:3])


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV, h += shift (mod 1), HSV -> RGB (torchvision's tensor formulas)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    v = maxc
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    mask = i.unsqueeze(1) == torch.arange(6, device=x.device).view(1, -1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=1)
    a2 = torch.stack((t, v, v, q, p, p), dim=1)
    a3 = torch.stack((p, p, t, v, v, q), dim=1)
    a4 = torch.stack((a1, a2, a3), dim=1)  # (N, 3, 6, H, W)
    return torch.einsum("nijhw,njhw->nihw", a4.to(x.dtype), mask.to(x.dtype))
