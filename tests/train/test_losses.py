import math

import pytest
import torch
from torch.nn import functional as F

from curate.train.losses import MoCHi, contrastive_loss


def _direct(z1, z2, t, decoupled, extra=None):
    """Per-anchor losses straight from the formulas (Python loops)."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    out = []
    for i in range(n2):
        p = (i + n) % n2
        s = lambda k: float(z[i] @ z[k]) / t  # noqa: E731
        terms = [math.exp(s(k)) for k in range(n2) if k != i and (not decoupled or k != p)]
        if extra is not None:
            e = F.normalize(extra.double(), dim=-1)
            rows = e[i % n] if e.ndim == 3 else e
            terms += [math.exp(float(z[i] @ r) / t) for r in rows]
        out.append(-s(p) + math.log(sum(terms)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("loss", ["ntxent", "dcl"])
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_losses_match_direct_formula(loss, t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    per = contrastive_loss(z1, z2, t, loss=loss, reduction="none")
    ref = _direct(z1, z2, t, decoupled=loss == "dcl")
    assert torch.allclose(per.double(), ref, atol=1e-5)
    assert contrastive_loss(z1, z2, t, loss=loss).item() == pytest.approx(ref.mean().item(), abs=1e-5)


def test_ntxent_equals_cross_entropy_form():
    # SimCLR's usual implementation: cross-entropy over similarities with self masked
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / 0.5).fill_diagonal_(float("-inf"))
    target = (torch.arange(10) + 5) % 10
    assert contrastive_loss(z1, z2, 0.5).item() == pytest.approx(F.cross_entropy(logits, target).item(), abs=1e-5)


def test_dcl_is_ntxent_without_positive_in_denominator():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # identical views: positive similarity 1; the only negative of each anchor... 2 negatives each
    per_n = contrastive_loss(z1, z1.clone(), 1.0, reduction="none")
    per_d = contrastive_loss(z1, z1.clone(), 1.0, loss="dcl", reduction="none")
    # anchor 0: pos s=1, negatives: anchors 1 and 3 with s=0 each
    assert per_n[0].item() == pytest.approx(-1 + math.log(math.e + 2), abs=1e-6)
    assert per_d[0].item() == pytest.approx(-1 + math.log(2), abs=1e-6)


@pytest.mark.parametrize("shape", ["per_sample", "shared"])
def test_extra_negatives_match_direct_formula(shape):
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    extra = torch.randn(3, 2, 4, generator=g) if shape == "per_sample" else torch.randn(5, 4, generator=g)
    per = contrastive_loss(z1, z2, 0.3, extra_negatives=extra, reduction="none")
    assert torch.allclose(per.double(), _direct(z1, z2, 0.3, False, extra), atol=1e-5)


def test_extra_mask_drops_padding_and_hard_negatives_raise_loss():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(3, 4, generator=g)
    z2 = z1 + 0.1 * torch.randn(3, 4, generator=g)
    extra = torch.randn(3, 2, 4, generator=g)
    masked = contrastive_loss(z1, z2, 0.5, extra_negatives=extra, extra_mask=torch.zeros(3, 2, dtype=torch.bool))
    assert masked.item() == pytest.approx(contrastive_loss(z1, z2, 0.5).item(), abs=1e-6)
    hard = z1[:, None, :].repeat(1, 2, 1)  # negatives identical to the anchor: the hardest possible
    assert contrastive_loss(z1, z2, 0.5, extra_negatives=hard) > contrastive_loss(z1, z2, 0.5, extra_negatives=extra)


def test_weights_weigh_anchors():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    per = contrastive_loss(z1, z2, 0.5, reduction="none")
    w = torch.tensor([1.0, 0.0, 2.0, 1.0])
    expect = (per * torch.cat([w, w])).sum() / (2 * w.sum())
    assert contrastive_loss(z1, z2, 0.5, weights=w).item() == pytest.approx(expect.item(), abs=1e-6)
    assert contrastive_loss(z1, z2, 0.5, weights=torch.ones(4)).item() == pytest.approx(per.mean().item(), abs=1e-6)


def test_mochi_adds_hard_synthetic_negatives():
    g = torch.Generator().manual_seed(5)
    z1 = torch.randn(8, 16, generator=g, requires_grad=True)
    z2 = torch.randn(8, 16, generator=g)
    base = contrastive_loss(z1, z2, 0.2)
    cfg = MoCHi(n_hard=4, s=6, s_prime=3)
    mixed = contrastive_loss(z1, z2, 0.2, mochi=cfg, generator=torch.Generator().manual_seed(0))
    assert mixed > base  # more (and hard) terms in every denominator
    again = contrastive_loss(z1, z2, 0.2, mochi=cfg, generator=torch.Generator().manual_seed(0))
    assert again.item() == pytest.approx(mixed.item())  # seeded
    mixed.backward()
    assert torch.isfinite(z1.grad).all()
    # works with per-sample extra negatives too, and s=s'=0 is the plain loss
    extra = torch.randn(8, 2, 16, generator=g)
    assert torch.isfinite(contrastive_loss(z1, z2, 0.2, extra_negatives=extra, mochi=cfg))
    none = contrastive_loss(z1, z2, 0.2, mochi=MoCHi(n_hard=4, s=0, s_prime=0))
    assert none.item() == pytest.approx(base.item(), abs=1e-6)


def test_mochi_query_mixes_have_beta_below_half():
    with pytest.raises(ValueError, match="beta_max"):
        MoCHi(beta_max=0.7)


def test_bad_inputs_raise_clear_errors():
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="unknown loss"):
        contrastive_loss(z, z, loss="infonce")
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(z, z, 0.0)
    with pytest.raises(ValueError, match="views"):
        contrastive_loss(z, torch.randn(2, 4))
