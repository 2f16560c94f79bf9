"""quality checks: cleanvision's definitions, checked against PIL and planted images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from curate import imaging
from curate.stages.quality import geometry, image, medical
from curate.stages.quality.stage import DEFAULT_THRESHOLDS, score_images
from tests.stages.quality._images import planted


def test_statistics_equal_pil_and_cleanvision_formulas():
    imgs = planted()
    for name in ("clean_rgb", "gray", "dark"):  # <= 64 px: no resize
        a = imgs[name]
        pil = Image.fromarray(a)
        assert image.entropy(image.histograms(a[None]))[0] == pytest.approx(pil.entropy(), abs=1e-9)
        edges = np.asarray(pil.convert("L").filter(ImageFilter.FIND_EDGES))
        assert (image.find_edges(image.luma(a[None]))[0] == edges).all()
        edge_std, hist_std = image.blurriness(a[None])
        assert edge_std[0] == pytest.approx(edges.astype(float).std())
        assert hist_std[0] == pytest.approx(np.std(pil.convert("L").histogram()))
    x = imgs["clean_rgb"].astype(float)
    bright = np.sqrt(0.241 * x[..., 0] ** 2 + 0.691 * x[..., 1] ** 2 + 0.068 * x[..., 2] ** 2) / 255
    p5, p99 = image.brightness_percentiles(imgs["clean_rgb"][None])
    assert (p5[0], p99[0]) == pytest.approx(tuple(np.percentile(bright, [5, 99])))


def test_large_images_are_resized_like_cleanvision_before_edges():
    a = np.random.default_rng(1).integers(0, 256, (200, 130, 3), np.uint8)
    small = np.asarray(Image.fromarray(a).resize((41, 64)).convert("L"))  # 200 / 64 = 3.125 -> 41 x 64
    edge_std, _ = image.blurriness(a[None])
    assert edge_std[0] == pytest.approx(np.asarray(Image.fromarray(small).filter(ImageFilter.FIND_EDGES)).std())


def test_planted_images_are_flagged_by_their_check_only():
    imgs = planted()
    names = list(imgs)
    sc = score_images([imaging.encode_png(imgs[k]) for k in names])
    flags = {k: {c for c, s in sc.items() if c in DEFAULT_THRESHOLDS and s[i] < DEFAULT_THRESHOLDS[c]} for i, k in enumerate(names)}
    assert flags["clean_rgb"] == flags["clean_cat"] == flags["strip"] == set()
    assert flags["dark"] == {"dark"}
    assert flags["light"] == {"light", "near_blank"}  # squeezed into 250..255: within 10 levels of the mode
    assert flags["blurry"] == {"blurry"}
    assert flags["gray"] == {"grayscale"}
    assert flags["near_blank"] == {"dark", "grayscale", "near_blank", "low_information"}
    assert flags["padding"] == {"dark", "grayscale", "near_blank", "low_information", "padding_only"}
    assert sc["near_blank"][names.index("near_blank")] == pytest.approx(9 / 4096)


def test_rgb_with_equal_channels_is_grayscale():
    g = planted()["gray"]
    assert image.is_grayscale(np.stack([g] * 3, -1)[None]).tolist() == [True]
    assert image.is_grayscale(planted()["clean_rgb"][None]).tolist() == [False]


def test_geometry_aspect_and_iqr_fences():
    h, w = np.array([16, 64, 64]), np.array([64, 64, 20])
    assert geometry.aspect_ratio(h, w).tolist() == [0.25, 1.0, 20 / 64]
    sizes = np.array([10.0, 11, 12, 13, 14, 100])  # q1 11.25, q3 13.75, IQR 2.5 -> fences [3.75, 21.25]
    lo, hi = geometry.size_fences(sizes)
    assert (lo, hi) == pytest.approx((3.75, 21.25))
    score, t = geometry.odd_size_score(sizes, lo, hi)
    assert t == 0.5 and (score < t).tolist() == [False] * 5 + [True]
    same = np.array([8.0, 8, 8, 8, 9])  # IQR 0: cleanvision flags every size but the common one
    score, t = geometry.odd_size_score(same, *geometry.size_fences(same))
    assert t == 1.0 and (score < t).tolist() == [False] * 4 + [True]


def test_padding_and_near_blank_scores_from_histograms():
    hist = np.zeros((2, 256), np.int64)
    hist[0, 7] = 100
    hist[1, [0, 5, 40]] = [90, 5, 5]
    assert medical.padding_score(hist).tolist() == [0.0, 40 / 255]
    assert medical.near_blank_score(hist, 10) == pytest.approx([0.0, 0.05])
