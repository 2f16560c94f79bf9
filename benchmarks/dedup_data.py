"""Data for ``dedup_quality.py``: distinct real images with known provenance, planted copies, hard traps.

Every image ships inside an installed package, so the set is rebuilt bit-identically offline:

* ``scene``: non-overlapping 64x64 tiles of scikit-image's photos (astronaut, camera, coffee,
  chelsea, rocket, coins, moon, text, page, clock, cell, immunohistochemistry, colorwheel, the left
  view of stereo_motorcycle);
* traps (distinct originals that look alike; removing one is a false positive):
  ``texture`` tiles of one texture (brick, grass, gravel), ``star`` tiles of hubble_deep_field,
  ``fundus`` tiles of retina and ``near_blank`` tiles of its black surround (not constant: sensor
  noise), ``shifted_view`` tiles of the same scene taken 10-24 px (16-38 %) away from a scene tile,
  ``stereo`` tiles of stereo_motorcycle's right view at the left view's positions (real parallax),
  ``mr_slice`` adjacent axial and coronal slices of nilearn's MNI152 T1 template (2 mm),
  ``dicom`` frames and images of the pydicom test files (adjacent multi-frame MR / CT slices);
* ``face`` / ``nonface``: scikit-image's lfw_subset (25x25); ``fashion``: Fashion-MNIST test
  images (Debian's dataset-fashion-mnist, skipped if absent).

Originals with identical pixels are merged into one group (they are real exact duplicates), tiles
with a standard deviation below 0.5 are dropped (constant: nothing to tell apart).

Copies: for each transform, ``copies`` originals drawn (seeded) from all originals get one copy
whose strength is drawn from the issue's range: exact re-encode (PNG / TIFF / BMP), JPEG quality
50-95, rotation 1-5 degrees, wrap-around translation (np.roll) 1-4 px, one-sided crop 1-4 px (a
shift), centred and off-centre crops of 2-10 % per side, rescale 0.5-0.9x / 1.1-2x,
brightness and contrast 3-15 % either way, Gaussian noise sigma 1-5.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageEnhance

TILE = 64
FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
SCENES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "text", "page", "clock",
          "cell", "immunohistochemistry", "colorwheel")
TEXTURES = ("brick", "grass", "gravel")
DICOM = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "liver.dcm", "693_UNCI.dcm", "eCT_Supplemental.dcm",
         "MR-SIEMENS-DICOM-WithOverlays.dcm", "mlut_18.dcm", "MR2_UNCR.dcm", "RG1_UNCR.dcm", "US1_UNCR.dcm",
         "examples_rgb_color.dcm", "SC_rgb.dcm")
TRAPS = ("texture", "star", "fundus", "near_blank", "shifted_view", "stereo", "mr_slice", "dicom")


@dataclass
class Dataset:
    images: list[np.ndarray] = field(default_factory=list)
    group: list[int] = field(default_factory=list)  # ground truth: same group = same image
    kind: list[str] = field(default_factory=list)  # "original" or the transform of a copy
    source: list[str] = field(default_factory=list)  # what the original is (scene, star, ...)
    ext: list[str] = field(default_factory=list)  # file format to write
    blob: dict[int, bytes] = field(default_factory=dict)  # encoded file bytes where the transform made them


def _tiles(img: np.ndarray, size: int = TILE, stride: int | None = None):
    stride = stride or size
    h, w = img.shape[:2]
    for y in range(0, h - size + 1, stride):
        for x in range(0, w - size + 1, stride):
            yield y, x, img[y:y + size, x:x + size]


def _u8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-9) * 255 + 0.5, 0, 255).astype(np.uint8)


def _resize_max(img: np.ndarray, side: int = 128) -> np.ndarray:
    h, w = img.shape[:2]
    f = side / max(h, w)
    if f >= 1:
        return img
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BOX))


def originals(fashion: int = 3000, near_blank: int = 24, seed: int = 0) -> list[tuple[np.ndarray, str]]:
    """(image, source kind) of every distinct original, in a fixed order."""
    import skimage.data as skd

    rng = np.random.default_rng(seed)
    out: list[tuple[np.ndarray, str]] = []
    for name in SCENES:
        img = getattr(skd, name)()
        for y, x, t in _tiles(img):
            out.append((t, "scene"))
            if rng.random() < 0.25:  # the same scene from a shifted viewpoint: 10-24 px away
                dy, dx = rng.integers(10, 25, 2) * rng.choice([-1, 1], 2)
                dy, dx = int(dy) * int(rng.random() < 0.7), int(dx)
                yy, xx = y + dy, x + dx
                if 0 <= yy <= img.shape[0] - TILE and 0 <= xx <= img.shape[1] - TILE:
                    out.append((img[yy:yy + TILE, xx:xx + TILE], "shifted_view"))
    left, right, _ = skd.stereo_motorcycle()
    for (_, _, a), (_, _, b) in zip(_tiles(left), _tiles(right)):
        out += [(a, "scene"), (b, "stereo")]
    for name in TEXTURES:
        out += [(t, "texture") for _, _, t in _tiles(getattr(skd, name)())]
    out += [(t, "star") for _, _, t in _tiles(skd.hubble_deep_field())]
    blank = 0
    for _, _, t in _tiles(skd.retina()):
        if t.mean() < 8:
            if blank < near_blank and t.std() >= 0.5:
                out.append((t, "near_blank"))
                blank += 1
        else:
            out.append((t, "fundus"))
    faces = skd.lfw_subset()
    out += [(np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8), "face" if i < 100 else "nonface")
            for i, f in enumerate(faces)]
    out += _medical()
    if fashion and os.path.exists(FMNIST):
        with gzip.open(FMNIST) as f:
            fm = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:fashion]
        out += [(x, "fashion") for x in fm]
    kept = [(np.ascontiguousarray(img), k) for img, k in out if float(img.std()) >= 0.5]
    return kept


def _medical() -> list[tuple[np.ndarray, str]]:
    out: list[tuple[np.ndarray, str]] = []
    try:
        import warnings

        from nilearn.datasets import load_mni152_template

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vol = np.asarray(load_mni152_template(resolution=2).get_fdata())
        lo, hi = np.percentile(vol, [0.5, 99.5])
        v8 = np.clip((vol - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)
        out += [(np.rot90(v8[:, :, k]), "mr_slice") for k in range(v8.shape[2])]
        out += [(np.rot90(v8[:, k, :]), "mr_slice") for k in range(v8.shape[1])]
    except Exception as err:  # noqa: BLE001
        print(f"(nilearn MNI152 unavailable: {err})")
    try:
        import warnings

        from pydicom import dcmread
        from pydicom.data import get_testdata_file

        for name in DICOM:
            path = get_testdata_file(name)
            if path is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a = dcmread(path).pixel_array
            frames = a if (a.ndim == 4 or (a.ndim == 3 and a.shape[-1] != 3)) else [a]
            for fr in frames:
                fr = np.asarray(fr)
                img = fr if fr.dtype == np.uint8 else _u8(fr)
                out.append((_resize_max(np.ascontiguousarray(img)), "dicom"))
    except Exception as err:  # noqa: BLE001
        print(f"(pydicom test files unavailable: {err})")
    return out


# ------------------------------------------------------------------------------------ transforms
def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(x)


def _sign(rng) -> int:
    return 1 if rng.random() < 0.5 else -1


def _jpeg(x, rng):
    q = int(rng.integers(50, 96))
    buf = io.BytesIO()
    _pil(x).save(buf, format="JPEG", quality=q)
    return buf.getvalue(), "jpg", q


def _rotate(x, rng):
    from scipy import ndimage

    a = float(rng.uniform(1, 5)) * _sign(rng)
    ax = (0, 1)
    y = ndimage.rotate(x.astype(np.float32), a, axes=ax, reshape=False, order=1, mode="nearest")
    return np.clip(y + 0.5, 0, 255).astype(np.uint8), "png", a


def _roll(x, rng):
    d = int(rng.integers(1, 5)) * _sign(rng)
    return np.ascontiguousarray(np.roll(x, d, axis=int(rng.integers(0, 2)))), "png", d


def _shift(x, rng):  # one-sided crop: the content moves by d px and the image shrinks
    d = int(rng.integers(1, 5))
    side = int(rng.integers(0, 4))
    y = [x[d:], x[:-d], x[:, d:], x[:, :-d]][side]
    return np.ascontiguousarray(y), "png", d


def _crop(x, rng, centred: bool):
    h, w = x.shape[:2]
    f = float(rng.uniform(0.02, 0.10))  # share of each side removed in total
    ch, cw = max(1, round(h * f)), max(1, round(w * f))
    if centred:
        t, l_ = ch // 2, cw // 2
    else:
        t, l_ = int(rng.integers(0, ch + 1)), int(rng.integers(0, cw + 1))
    return np.ascontiguousarray(x[t:t + h - ch, l_:l_ + w - cw]), "png", f


def _scale(x, rng):
    f = float(rng.uniform(0.5, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 2.0))
    h, w = x.shape[:2]
    m = Image.Resampling.BICUBIC if rng.random() < 0.5 else Image.Resampling.BILINEAR
    return np.asarray(_pil(x).resize((max(8, round(w * f)), max(8, round(h * f))), m)), "png", f


def _enhance(x, rng, cls):
    f = 1 + float(rng.uniform(0.03, 0.15)) * _sign(rng)
    return np.asarray(cls(_pil(x)).enhance(f)), "png", f


def _noise(x, rng):
    s = float(rng.uniform(1, 5))
    r = np.random.default_rng(int(rng.integers(1 << 31)))
    return np.clip(x + r.normal(0, s, x.shape) + 0.5, 0, 255).astype(np.uint8), "png", s


def _reencode(x, rng):
    return x, ["tif", "bmp", "png"][int(rng.integers(0, 3))], 0


TRANSFORMS = {
    "reencode": _reencode,
    "jpeg": _jpeg,
    "rotate": _rotate,
    "roll": _roll,
    "shift": _shift,
    "crop_center": lambda x, r: _crop(x, r, True),
    "crop_offcenter": lambda x, r: _crop(x, r, False),
    "scale": _scale,
    "brightness": lambda x, r: _enhance(x, r, ImageEnhance.Brightness),
    "contrast": lambda x, r: _enhance(x, r, ImageEnhance.Contrast),
    "noise": _noise,
}


def build(copies: int = 400, fashion: int = 3000, seed: int = 0) -> Dataset:
    """Originals (pixel-identical ones merged into one group) + ``copies`` copies per transform."""
    from curate import imaging

    ds = Dataset()
    seen: dict[str, int] = {}
    for img, src in originals(fashion, seed=seed):
        h = imaging.pixel_hash(imaging.canonical(img))
        g = seen.setdefault(h, len(seen))
        ds.images.append(img)
        ds.group.append(g)
        ds.kind.append("original")
        ds.source.append(src)
        ds.ext.append("png")
    n = len(ds.images)
    rng = np.random.default_rng(seed + 1)
    for name, fn in TRANSFORMS.items():
        for i in np.sort(rng.choice(n, min(copies, n), replace=False)).tolist():
            y, ext, _ = fn(ds.images[i], rng)
            if isinstance(y, bytes):
                ds.blob[len(ds.images)] = y
                y = np.asarray(Image.open(io.BytesIO(y)))
            ds.images.append(y)
            ds.group.append(ds.group[i])
            ds.kind.append(name)
            ds.source.append(ds.source[i])
            ds.ext.append(ext)
    return ds


def write(ds: Dataset, out: str) -> list[str]:
    """Image files ``NNNNNN.<ext>`` in dataset order (originals first) + ``truth.json``; returns the names.

    ``truth.json`` maps each file name to ``[group, kind, source]`` (``benchmarks/imagededup_baseline.py``).
    """
    os.makedirs(out, exist_ok=True)
    names, truth = [], {}
    for i, (img, ext) in enumerate(zip(ds.images, ds.ext)):
        name = f"{i:06d}.{ext}"
        path = os.path.join(out, name)
        if i in ds.blob:  # the JPEG file itself, encoded once at the copy's quality
            with open(path, "wb") as f:
                f.write(ds.blob[i])
        elif ext == "png":
            Image.fromarray(img).save(path, compress_level=1)
        else:
            Image.fromarray(img).save(path)
        names.append(name)
        truth[name] = [ds.group[i], ds.kind[i], ds.source[i]]
    with open(os.path.join(out, "truth.json"), "w") as f:
        json.dump(truth, f)
    return names
