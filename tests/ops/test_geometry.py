"""ops.geometry.verify_pairs: edited copies of real images are verified; distinct images are not."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

skdata = pytest.importorskip("skimage.data")

from curate.ops import geometry  # noqa: E402


def _rot(a, deg):
    h, w = a.shape[:2]
    return cv2.warpAffine(a, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), deg, 1.0), (w, h))


def _jpeg(a, q):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def _noise(a, sigma):
    return np.clip(a + np.random.default_rng(0).normal(0, sigma, a.shape), 0, 255).astype(np.uint8)


def _scale(a, f):
    return cv2.resize(a, (int(a.shape[1] * f), int(a.shape[0] * f)), interpolation=cv2.INTER_AREA)


EDITS = {
    "rotate 3 deg": lambda a: _rot(a, 3),
    "crop 10% centred": lambda a: a[a.shape[0] // 20:-(a.shape[0] // 20), a.shape[1] // 20:-(a.shape[1] // 20)],
    "rescale 0.5x": lambda a: _scale(a, 0.5),
    "rescale 2x": lambda a: _scale(a, 2.0),
    "jpeg 50": lambda a: _jpeg(a, 50),
    "noise sigma 5": lambda a: _noise(a, 5),
    "brightness +15%": lambda a: np.clip(a * 1.15, 0, 255).astype(np.uint8),
    "contrast -15%": lambda a: np.clip((a - a.mean()) * 0.85 + a.mean(), 0, 255).astype(np.uint8),
}


@pytest.fixture(scope="module")
def photos():
    return {"camera": skdata.camera()[::2, ::2], "astronaut": skdata.astronaut()[::2, ::2],
            "coins": skdata.coins()}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_copies_are_verified(photos, edit):
    imgs = []
    for a in photos.values():
        imgs += [a, EDITS[edit](a)]
    ok, score, detail = geometry.verify_pairs(imgs, np.arange(0, len(imgs), 2), np.arange(1, len(imgs), 2))
    assert ok.all(), (edit, detail)
    assert (score > 0).all() and (score <= 1).all()
    assert all(d.startswith("aligned: rot") and "residual" in d for d in detail)


def test_rotation_angle_is_recovered(photos):
    a = photos["camera"]  # square, so the thumbnail keeps the geometry
    ok, _, detail = geometry.verify_pairs([a, _rot(a, 4)], np.array([0]), np.array([1]))
    assert ok[0]
    angle = float(detail[0].split("rot ")[1].split("°")[0])
    assert abs(abs(angle) - 4) < 1.0, detail  # black corners bias ECC slightly


def test_texture_crops_and_star_fields_are_not_verified():
    brick, grass, hubble = skdata.brick(), skdata.grass(), skdata.hubble_deep_field()
    pairs = [(brick[:200, :200], brick[256:456, 256:456]), (grass[:200, :200], grass[300:500, 300:500]),
             (hubble[:256, :256], hubble[:256, 300:556]), (hubble[300:556, :256], hubble[600:856, 500:756])]
    imgs = [x for p in pairs for x in p]
    ok, score, detail = geometry.verify_pairs(imgs, np.arange(0, 8, 2), np.arange(1, 8, 2))
    assert not ok.any(), detail
    assert (score == 0).all()


def test_flat_and_mismatched_shapes_are_rejected_with_a_reason():
    flat = np.full((32, 32), 7, np.uint8)
    wide = np.zeros((20, 80), np.uint8)
    tiny = skdata.camera()[::32, ::32]  # 16 px
    big = skdata.camera()  # 512 px: 32x the size
    ok, score, detail = geometry.verify_pairs([flat, flat.copy(), wide, tiny, big], np.array([0, 2, 3]),
                                              np.array([1, 0, 4]))
    assert not ok.any() and (score == 0).all()
    assert detail[0] == "flat image: no alignment"
    assert "too different" in detail[1] and "too different" in detail[2]


def test_empty_input():
    ok, score, detail = geometry.verify_pairs([], np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert ok.shape == (0,) and score.dtype == np.float64 and detail == []


def test_near_blank_copies_are_told_apart_by_their_noise_grain():
    """Near-blank frames (a dark surround, an empty slice) leave noise-level residue against any other
    near-blank frame; only a copy carries the same noise pattern. A brightened, a JPEG-90 and a
    1-degree-rotated copy are verified; frames with the same level and other noise are not."""
    def frame(seed):
        rng = np.random.default_rng(seed)
        return np.clip(40 + rng.normal(0, 1.5, (64, 64)) + 0.5, 0, 255).astype(np.uint8)

    a = frame(0)
    copies = [np.clip(a * 1.1 + 0.5, 0, 255).astype(np.uint8), _jpeg(a, 90), _rot(a, 1)]
    others = [frame(s) for s in range(1, 6)]
    imgs = [a] + copies + others
    n = len(imgs)
    ok, _, detail = geometry.verify_pairs(imgs, np.zeros(n - 1, np.int64), np.arange(1, n))
    assert ok[:3].all(), detail[:3]
    assert not ok[3:].any(), detail[3:]
    strict = geometry.VerifySpec(min_noise_corr=1.01)  # the old rule: only the same pixels
    ok, _, _ = geometry.verify_pairs(imgs[:4], np.zeros(3, np.int64), np.arange(1, 4), strict)
    assert not ok[1:].all()
