"""curate.ops.lanczos: the compiled kernels behind pHash (band layout, sorting network, thumbnails)."""

import numpy as np
import pytest
from PIL import Image

from curate.ops import lanczos as L
from curate.ops import phash as P


@pytest.mark.parametrize("in_size,out_size", [(28, 32), (128, 32), (700, 32), (5, 32), (32, 8), (9, 9)])
def test_band_holds_every_nonzero_pillow_weight(in_size, out_size):
    start, w = L.band(in_size, out_size)
    mat = L.resample_matrix(in_size, out_size) / float(1 << L.PRECISION_BITS)
    assert w.shape[1] % L.GROUP == 0
    rebuilt = np.zeros_like(mat)
    for o in range(out_size):
        for t in range(w.shape[1]):
            if w[o, t] != 0.0:
                rebuilt[o, start[o] + t] = w[o, t]
    np.testing.assert_array_equal(rebuilt, mat)


def test_sorting_network_sorts_with_ties():
    pairs = L.sorting_network(64)
    assert len(pairs) == 543  # Batcher's odd-even merge sort, n = 64
    rng = np.random.default_rng(0)
    for trial in range(300):
        a = rng.integers(0, 3 if trial % 2 else 10**6, 64).astype(np.float64)
        b = a.copy()
        for i, j in pairs:
            b[i], b[j] = min(b[i], b[j]), max(b[i], b[j])
        np.testing.assert_array_equal(b, np.sort(a))


def test_thumbnails_are_rounded_2x2_means_of_the_pillow_32px_image():
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (37, 28, 28), dtype=np.uint8)  # 37: a partial last block
    _, thumbs = P.phash_thumbnails(imgs)
    for i in (0, 17, 36):
        px = np.asarray(Image.fromarray(imgs[i]).resize((32, 32), Image.Resampling.LANCZOS), np.float64)
        want = np.round(px.reshape(16, 2, 16, 2).mean(axis=(1, 3)))  # half to even
        np.testing.assert_array_equal(thumbs[i], want)


def test_hashes_do_not_depend_on_block_size(monkeypatch):
    rng = np.random.default_rng(4)
    imgs = rng.integers(0, 256, (45, 40, 36), dtype=np.uint8)
    ref = P.phash_batch(imgs), P.dhash_batch(imgs)
    for lanes in (1, 7, 64):
        monkeypatch.setattr(P, "LANES", lanes)
        np.testing.assert_array_equal(P.phash_batch(imgs), ref[0])
        np.testing.assert_array_equal(P.dhash_batch(imgs), ref[1])


@pytest.mark.parametrize("shape", [(512, 512), (257, 301), (130, 66), (67, 1000), (5, 900), (97, 31), (700, 33)])
@pytest.mark.parametrize("out", [(32, 32), (8, 9), (17, 40)])
def test_large_kernel_is_pillow_lanczos_exactly(shape, out):
    """The one-image-at-a-time kernel, in both of Pillow's pass orders: row tails (h % 4), the last
    image's slack, single images, upscaling axes."""
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    imgs = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
    hs, hk, vs, vk = P._geometry_int(*shape, *out)
    flat, _, _ = L._one_buffers(*shape, *out, hk.shape[1], vk.shape[1])
    whole = imgs.reshape(-1)
    for i in range(3):  # every view keeps the slack its padded taps read inside the batch
        assert L._image(imgs, whole, i, flat).size >= flat.size
    got = np.empty((3, *out))
    hfirst = P._pass_order(*shape, *out) == "hv"  # Pillow 13 runs the cheaper pass first
    L.resize_large_kernel(imgs, hfirst, hs, hk, vs, vk, got)
    one = np.empty((1, *out))
    L.resize_large_kernel(imgs[2:], hfirst, hs, hk, vs, vk, one)
    for i in range(3):
        ref = np.asarray(Image.fromarray(imgs[i]).resize(out[::-1], Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(got[i], ref)
    np.testing.assert_array_equal(one[0], got[2])


def test_phash_does_not_depend_on_the_kernel(monkeypatch):
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, (11, 70, 90), dtype=np.uint8)
    imgs[3:] = np.asarray(Image.fromarray(imgs[0]).resize((90, 70), Image.Resampling.BICUBIC))[None] // 2 + imgs[3:] // 2
    monkeypatch.setattr(P, "LARGE_MIN", 10**9)
    lanes = P.phash_thumbnails(imgs)
    monkeypatch.setattr(P, "LARGE_MIN", 1)
    large = P.phash_thumbnails(imgs)
    np.testing.assert_array_equal(lanes[0], large[0])
    np.testing.assert_array_equal(lanes[1], large[1])
