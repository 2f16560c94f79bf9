import pytest
import torch

from curate.load.augment import SimCLRAugment


def test_shapes_range_and_uint8_input():
    aug = SimCLRAugment(12, generator=torch.Generator().manual_seed(0))
    x = torch.rand(8, 3, 20, 30)
    y = aug(x)
    assert y.shape == (8, 3, 12, 12) and y.min() >= 0 and y.max() <= 1
    g = aug((x * 255).to(torch.uint8)[:, :1])
    assert g.shape == (8, 1, 12, 12) and g.dtype == torch.float32


def test_seeded_generator_reproducible_and_views_differ():
    x = torch.rand(6, 3, 16, 16)
    a = SimCLRAugment(16, generator=torch.Generator().manual_seed(3))(x)
    b = SimCLRAugment(16, generator=torch.Generator().manual_seed(3))(x)
    assert torch.equal(a, b)
    aug = SimCLRAugment(16, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(aug(x), aug(x))


def test_identity_when_everything_off():
    x = torch.rand(4, 3, 10, 10)
    aug = SimCLRAugment(10, crop_min_scale=1.0, crop_ratio=(1.0, 1.0), flip_p=0, jitter_p=0, gray_p=0)
    assert torch.allclose(aug(x), x, atol=1e-5)


def test_flip_always():
    x = torch.rand(2, 1, 8, 8)
    aug = SimCLRAugment(8, crop_min_scale=1.0, crop_ratio=(1.0, 1.0), flip_p=1, jitter_p=0, gray_p=0)
    assert torch.allclose(aug(x), x.flip(-1), atol=1e-5)


def test_grayscale_always_gives_equal_channels():
    x = torch.rand(5, 3, 8, 8)
    y = SimCLRAugment(8, jitter_p=0, gray_p=1.0)(x)
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])


def test_jitter_changes_colours_and_strength_scales_it():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8) * 0.5 + 0.25
    base = dict(crop_min_scale=1.0, crop_ratio=(1.0, 1.0), flip_p=0, gray_p=0, jitter_p=1.0)
    strong = SimCLRAugment(8, jitter_strength=1.0, generator=torch.Generator().manual_seed(1), **base)(x)
    weak = SimCLRAugment(8, jitter_strength=0.1, generator=torch.Generator().manual_seed(1), **base)(x)
    d_strong, d_weak = (strong - x).abs().mean(), (weak - x).abs().mean()
    assert d_strong > 3 * d_weak > 0


def test_crop_zooms_in():
    # a centred bright square: crops of the small min scale see on average a larger share of it at the border
    x = torch.zeros(256, 1, 32, 32)
    x[:, :, :, :16] = 1.0  # left half bright
    y = SimCLRAugment(32, crop_min_scale=0.08, flip_p=0, jitter_p=0, gray_p=0,
                      generator=torch.Generator().manual_seed(0))(x)
    frac = y.mean(dim=(1, 2, 3))
    assert frac.min() < 0.05 and frac.max() > 0.95  # some crops fully inside one half
    assert abs(float(frac.mean()) - 0.5) < 0.1


def test_weak_preset_and_from_params():
    w = SimCLRAugment.weak(32)
    assert (w.crop_min_scale, w.jitter_p, w.jitter_strength) == (0.2, 0.4, 0.5)
    f = SimCLRAugment.from_params(32, {"crop_min_scale": 0.2, "jitter_p": 0.4, "other": 1})
    assert f.crop_min_scale == 0.2 and f.jitter_p == 0.4 and f.jitter_strength == 1.0


def test_bad_params_raise_clear_errors():
    with pytest.raises(ValueError, match="crop_min_scale"):
        SimCLRAugment(8, crop_min_scale=0)
    with pytest.raises(ValueError, match="jitter_p"):
        SimCLRAugment(8, jitter_p=1.5)
    with pytest.raises(ValueError, match="channels"):
        SimCLRAugment(8)(torch.rand(1, 2, 8, 8))


def test_hue_shift_keeps_gray_pixels_and_is_periodic():
    from curate.load.augment import _shift_hue
    x = torch.rand(3, 3, 5, 5)
    assert torch.allclose(_shift_hue(x, torch.zeros(3)), x, atol=1e-5)
    assert torch.allclose(_shift_hue(x, torch.ones(3)), x, atol=1e-5)
    g = torch.rand(2, 1, 4, 4).expand(2, 3, 4, 4)
    assert torch.allclose(_shift_hue(g, torch.full((2,), 0.3)), g, atol=1e-5)
