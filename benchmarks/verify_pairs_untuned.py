"""The verifier's defaults on real images they were not tuned on (``verify_pairs.py`` is the tuning set).

Originals: 64 px tiles of scikit-image's ``cat``, ``horse`` and ``shepp_logan_phantom``, 32 px tiles
of ``microaneurysms``, and 110 consecutive axial slices of nilearn's MNI152 T1 template at 1 mm
(the tuning set used 2 mm), resized to <= 128 px. Copies: 60 per transform of ``dedup_data``.
Hard distinct pairs: ``verify_pairs.pairs`` plus every pair of adjacent 1 mm slices.

    python benchmarks/verify_pairs_untuned.py
"""

from __future__ import annotations

import io
import os
import sys
import warnings

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dedup_data as D  # noqa: E402
import verify_pairs as V  # noqa: E402

from curate.ops import geometry  # noqa: E402


def dataset(copies: int = 60, seed: int = 7) -> D.Dataset:
    import skimage.data as skd
    from nilearn.datasets import load_mni152_template

    warnings.simplefilter("ignore")
    orig = []
    for name in ("cat", "horse", "microaneurysms", "shepp_logan_phantom"):
        img = getattr(skd, name)()
        img = img if img.dtype == np.uint8 else D._u8(img)
        orig += [(t, name) for _, _, t in D._tiles(img, 32 if name == "microaneurysms" else 64)]
    v8 = D._u8(np.asarray(load_mni152_template(resolution=1).get_fdata()))
    orig += [(D._resize_max(np.ascontiguousarray(np.rot90(v8[:, :, k])), 128), "mni1mm") for k in range(40, 150)]
    ds = D.Dataset()
    for img, k in orig:
        if img.std() >= 0.5:
            ds.images.append(np.ascontiguousarray(img))
            ds.group.append(len(ds.group))
            ds.kind.append("original")
            ds.source.append(k)
            ds.ext.append("png")
    n, rng = len(ds.images), np.random.default_rng(seed)
    for t, fn in D.TRANSFORMS.items():
        for i in np.sort(rng.choice(n, min(copies, n), replace=False)).tolist():
            y, ext, _ = fn(ds.images[i], rng)
            ds.images.append(np.asarray(Image.open(io.BytesIO(y))) if isinstance(y, bytes) else y)
            ds.group.append(ds.group[i])
            ds.kind.append(t)
            ds.source.append(ds.source[i])
            ds.ext.append(ext)
    return ds


def main() -> None:
    ds = dataset()
    p, npos = V.pairs(ds)
    src, kind = np.array(ds.source), np.array(ds.kind)
    o = np.flatnonzero(kind == "original")
    adj = [(a, b) for a, b in zip(o[:-1].tolist(), o[1:].tolist()) if src[a] == src[b] == "mni1mm"]
    p = np.vstack([p, np.array(adj, np.int64)])
    print(f"# verify_pairs_untuned: {npos} copy pairs, {len(p) - npos} hard distinct pairs, {len(ds.images)} images")
    m = V.report("defaults on untuned images", ds, p, npos, geometry.DEFAULT)
    print(f"\nneg_accepted: {m['neg_accepted']}\nmin_recall: {m['min_recall']:.3f}\nms_per_pair: {m['ms_per_pair']:.1f}")


if __name__ == "__main__":
    main()
