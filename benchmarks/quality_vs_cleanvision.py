"""quality stage vs cleanvision 0.3.7: per-check agreement and speed on real images with planted issues.

Images: scikit-image's shipped photos and Fashion-MNIST (/usr/share/datasets/fashion-mnist), each
also as darkened, brightened, blurred, flattened (constant), cropped-to-strip and grayscale copies,
written as PNG files. cleanvision's Imagelab and curate's quality scoring (decode + every check,
same definitions) run on the same folder; agreement = share of images where both flag alike.

    python benchmarks/quality_vs_cleanvision.py --n-fashion 2000
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time

import numpy as np
from PIL import Image, ImageFilter  # noqa: F401 - Image used for the planted copies

CHECKS = ("dark", "light", "blurry", "low_information", "odd_aspect_ratio", "odd_size", "grayscale")


def _fashion(n: int) -> list[np.ndarray]:
    path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    if not os.path.exists(path) or n == 0:
        return []
    with gzip.open(path, "rb") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    return [np.stack([a] * 3, -1) * np.array([1.0, 0.8, 0.6]) for a in raw[:n]]  # tinted: RGB, not gray


def _bases(n_fashion: int) -> list[np.ndarray]:
    import skimage.data as sd

    photos = [sd.astronaut(), sd.coffee(), sd.chelsea(), sd.rocket(), sd.immunohistochemistry(),
              sd.hubble_deep_field(), sd.retina(), sd.camera(), sd.moon(), sd.brick()]
    out = []
    for a in photos:
        img = Image.fromarray(a).convert("RGB")
        for s in (64, 128, 256):
            out.append(np.asarray(img.resize((s, s))))
    return out + [np.asarray(a).astype(np.uint8) for a in _fashion(n_fashion)]


def _variants(a: np.ndarray, k: int) -> dict[str, Image.Image]:
    img = Image.fromarray(a)
    f = a.astype(np.float64)
    h, w = a.shape[:2]
    v = {"orig": img}
    kind = k % 6  # one planted issue per base image, in turn
    if kind == 0:
        v["dark"] = Image.fromarray((f * 0.08).astype(np.uint8))
    elif kind == 1:
        v["light"] = Image.fromarray((255 - (255 - f) * 0.02).astype(np.uint8))
    elif kind == 2:
        v["blur"] = img.filter(ImageFilter.GaussianBlur(max(h, w) / 8))
    elif kind == 3:
        v["flat"] = Image.fromarray(np.full_like(a, int(f.mean())))
    elif kind == 4:
        v["strip"] = Image.fromarray(a[: max(1, h // 5)])
    else:
        v["gray"] = img.convert("L")
    return v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-fashion", type=int, default=2000)
    args = ap.parse_args()
    from cleanvision import Imagelab

    from curate.stages.quality import geometry
    from curate.stages.quality.stage import DEFAULT_THRESHOLDS, score_images

    tmp = tempfile.mkdtemp(prefix="cv_bench_")
    names = []
    for k, a in enumerate(_bases(args.n_fashion)):
        for tag, img in _variants(a, k).items():
            name = f"{k:05d}_{tag}.png"
            img.save(os.path.join(tmp, name))
            names.append(name)
    names.sort()
    print(f"images: {len(names)} in {tmp}")

    t0 = time.perf_counter()
    lab = Imagelab(data_path=tmp)
    lab.find_issues({c: {} for c in CHECKS}, n_jobs=1, verbose=False)
    t_cv = time.perf_counter() - t0
    iss = lab.issues
    cv_path = [os.path.basename(p) for p in iss.index]
    cv = {c: dict(zip(cv_path, iss[f"is_{c}_issue"].to_numpy())) for c in CHECKS}

    t0 = time.perf_counter()
    data = []
    for n in names:
        with open(os.path.join(tmp, n), "rb") as f:
            data.append(f.read())
    sc = score_images(data)
    h, w = sc["height"], sc["width"]
    sc["odd_aspect_ratio"] = geometry.aspect_ratio(h, w)
    size = geometry.size(h, w)
    sc["odd_size"], size_t = geometry.odd_size_score(size, *geometry.size_fences(size))
    t_q = time.perf_counter() - t0
    ours = {c: sc[c] < (size_t if c == "odd_size" else DEFAULT_THRESHOLDS[c]) for c in CHECKS}

    print(f"{'check':<18} {'cleanvision':>11} {'curate':>7} {'agree':>7}")
    agree = {}
    for c in CHECKS:
        a = np.array([bool(cv[c][n]) for n in names])
        agree[c] = float((a == ours[c]).mean())
        print(f"{c:<18} {int(a.sum()):>11} {int(ours[c].sum()):>7} {agree[c]:>7.4f}")
    print(f"cleanvision {t_cv:.2f} s, curate quality {t_q:.2f} s (each: file reads + decode + all seven checks)")
    for c in CHECKS:
        print(f"agreement_{c}: {agree[c]:.4f}")
    print(f"images: {len(names)}")
    print(f"speedup_vs_cleanvision: {t_cv / t_q:.1f}")


if __name__ == "__main__":
    main()
