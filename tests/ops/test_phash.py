"""curate.ops.phash: bit-identical to imagehash (pHash, dHash) on real and synthetic images."""

import imagehash
import numpy as np
import pytest
from PIL import Image

from curate.ops import phash as P
from tests.stages.dedup._hash_fixture import ct_slice, mr_volume, smooth_field


def _ref(fn, img: np.ndarray) -> np.uint64:
    return np.uint64(int(str(fn(Image.fromarray(img))), 16))


def test_bit_order_matches_imagehash_hex():
    img = ct_slice()
    h = P.phash_batch(img[None])[0]
    ih = imagehash.phash(Image.fromarray(img))
    assert P.to_hex(h) == str(ih)
    assert P.from_hex(str(ih)) == h
    # bit k of imagehash's 8x8 array (row-major) is bit 63 - k of ours
    bits = ih.hash.flatten()
    assert all(bool((int(h) >> (63 - k)) & 1) == bool(bits[k]) for k in range(64))


@pytest.mark.parametrize("shape", [(28, 28), (64, 48), (33, 700), (300, 17), (7, 5), (32, 32), (9, 8)])
def test_resize_is_pillow_lanczos_exactly(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
    for oh, ow in [(32, 32), (8, 9)]:
        ours = P.resize_lanczos(a, oh, ow)
        for i in range(3):
            ref = np.asarray(Image.fromarray(a[i]).resize((ow, oh), Image.Resampling.LANCZOS))
            np.testing.assert_array_equal(ours[i], ref)


def test_hashes_agree_with_imagehash_on_real_images():
    vol = mr_volume()
    imgs = [ct_slice(), *vol, *(smooth_field(s) for s in range(10))]
    rng = np.random.default_rng(0)
    imgs += [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(10)]
    imgs += [np.zeros((16, 16), np.uint8), np.full((16, 16), 200, np.uint8)]  # ties everywhere
    ph, dh = P.hash_arrays(imgs)
    assert [P.to_hex(h) for h in ph] == [str(imagehash.phash(Image.fromarray(i))) for i in imgs]
    assert [P.to_hex(h) for h in dh] == [str(imagehash.dhash(Image.fromarray(i))) for i in imgs]


def test_rgb_uses_pillow_luma():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 20, 30, 3), dtype=np.uint8)
    for i in range(4):
        np.testing.assert_array_equal(P.to_luma(rgb[i]), np.asarray(Image.fromarray(rgb[i]).convert("L")))
    assert list(P.phash_batch(rgb)) == [_ref(imagehash.phash, x) for x in rgb]


def test_batch_chunking_does_not_change_hashes(monkeypatch):
    imgs = np.stack([smooth_field(s, 32) for s in range(12)])
    full = P.phash_batch(imgs)
    monkeypatch.setattr(P, "LANES", 5)
    np.testing.assert_array_equal(P.phash_batch(imgs), full)


def _real_images(size: int) -> list[np.ndarray]:
    """Real photographs and scans (scikit-image's bundled data, the pydicom test CT) brought to
    size x size, plus rolled, flipped, darkened and contrast-stretched variants of each: 60 images."""
    from skimage import data

    sources = [data.camera(), data.moon(), data.brick(), data.grass(), data.gravel(), data.cell(),
               data.clock(), data.coins(), data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for src in [*sources, P.to_luma(np.asarray(Image.fromarray(ct_slice())))]:
        img = np.asarray(Image.fromarray(P.to_luma(src)).resize((size, size), Image.Resampling.BICUBIC))
        out += [img, np.roll(img, size // 7, axis=1), img[::-1].copy(), (img // 2).astype(np.uint8),
                np.clip(img.astype(np.int16) * 3 // 2 - 40, 0, 255).astype(np.uint8)]
    return out[:60]


@pytest.mark.parametrize("size", [256, 512])
def test_hashes_agree_with_imagehash_at_ct_sizes(size):
    """CT / MR slice sizes take the one-image-at-a-time kernels: bit-identical on real images."""
    imgs = np.stack(_real_images(size))
    ph, dh = P.phash_batch(imgs), P.dhash_batch(imgs)
    assert [P.to_hex(h) for h in ph] == [str(imagehash.phash(Image.fromarray(i))) for i in imgs]
    assert [P.to_hex(h) for h in dh] == [str(imagehash.dhash(Image.fromarray(i))) for i in imgs]


def test_rgb_and_non_square_slices_agree_with_imagehash():
    from skimage import data

    rgb = np.stack([data.astronaut()[:384], data.immunohistochemistry()[:384], data.astronaut()[128:, ::-1]])
    assert rgb.shape == (3, 384, 512, 3)
    assert list(P.phash_batch(rgb)) == [_ref(imagehash.phash, x) for x in rgb]
    assert list(P.dhash_batch(rgb)) == [_ref(imagehash.dhash, x) for x in rgb]
    tall = np.ascontiguousarray(np.stack([data.camera()[:, 100:357], data.moon()[:, :257]]))  # 512 x 257
    assert list(P.phash_batch(tall)) == [_ref(imagehash.phash, x) for x in tall]
    assert list(P.dhash_batch(tall)) == [_ref(imagehash.dhash, x) for x in tall]
