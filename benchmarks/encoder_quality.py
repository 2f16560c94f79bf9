"""Weight-free encoders compared by kNN@10 label agreement, labels hidden from curate.

For each encoder, every image is embedded through curate's own code (PNG bytes
-> ``prepare_batch`` -> the encoder, fitted on a seeded sample as ``embed`` does
-> ``Embed.embed_arrays``, L2-normalised). Then, for each image, the share of
its 10 nearest neighbours (cosine, exact faiss search) with the same label. The
labels are used only for this score. Printed per encoder: kNN@10 agreement,
the ratio to ``pixels`` (the old default, 64-d PCA of 32 px pixels), the PCA
fit time and the embed throughput (decode + resize + forward + normalise,
images/s, after the fit, with ``torch.set_num_threads(threads)``).

Datasets:

* ``fmnist``: Fashion-MNIST t10k, the first ``--fmnist`` images (10 classes;
  Debian package ``dataset-fashion-mnist``, ``make sysdeps``);
* ``mni152``: every non-blank axial, coronal and sagittal slice of nilearn's
  three MNI152 2-mm templates (T1, grey-matter and white-matter maps), 64 px;
  label = template x orientation (9 classes). Adjacent slices are near
  copies, so neighbours within +-3 slices of the query in the same series
  are excluded before taking the 10 nearest: agreement must come from
  anatomy and contrast, not from the next slice.

    nice python benchmarks/encoder_quality.py [--fmnist 10000] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
import warnings

import faiss
import numpy as np
import torch
from PIL import Image

from curate import encoders
from curate.samples import samples_from_arrays
from curate.stages.embed import Embed, EmbedParams, prepare_batch

FMNIST = "/usr/share/datasets/fashion-mnist"
SKIP = 3  # mni152: neighbours within +-SKIP slices of the same series are excluded

# (label, EmbedParams kwargs, block weights for gradpix variants)
ENCODERS = [
    ("pixels (old default)", dict(encoder="pixels", dim=64), None),
    ("pixels whiten", dict(encoder="pixels", dim=64, whiten=True), None),
    ("random_cnn", dict(encoder="random_cnn", image_size=32, channels=1), None),
    ("gradpix grad only", dict(encoder="gradpix"), (1.0, 1.0, 0.0, 0.0)),
    ("gradpix + px@S", dict(encoder="gradpix"), (1.0, 1.0, 0.7, 0.7)),
    ("gradpix pca64", dict(encoder="gradpix", dim=64), None),
    ("auto = gradpix (default)", dict(), None),
]


def fmnist(n: int):
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return list(x), y.astype(np.int64), None


def mni152():
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    imgs, labels, where = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vols = [np.asarray(f(resolution=2).get_fdata()) for f in
                (load_mni152_template, load_mni152_gm_template, load_mni152_wm_template)]
    for v, vol in enumerate(vols):
        lo, hi = np.percentile(vol, [0.5, 99.5])
        v8 = np.clip((vol - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)
        for ax in range(3):
            for k in range(v8.shape[ax]):
                s = np.ascontiguousarray(np.rot90(np.take(v8, k, axis=ax)))
                if s.std() < 8:  # blank / near-blank edge slices
                    continue
                imgs.append(np.asarray(Image.fromarray(s).resize((64, 64), Image.BILINEAR)))
                labels.append(v * 3 + ax)
                where.append((v * 3 + ax, k))
    return imgs, np.asarray(labels), np.asarray(where)


def knn_agreement(emb: np.ndarray, labels: np.ndarray, where: np.ndarray | None, k: int = 10) -> float:
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    extra = 0 if where is None else 2 * SKIP + 1
    _, nn = index.search(emb, k + 1 + extra)
    agree = []
    for i, row in enumerate(nn):
        keep = [j for j in row if j != i and j >= 0 and not (
            where is not None and where[j, 0] == where[i, 0] and abs(where[j, 1] - where[i, 1]) <= SKIP)][:k]
        agree.append(np.mean(labels[keep] == labels[i]))
    return float(np.mean(agree))


def embed_all(kwargs: dict, block_weights, images: list[bytes], fit_samples: int, seed: int = 0):
    """Fit (if needed) on a seeded sample and embed everything; return (emb, encoder id, fit s, img/s)."""
    params = EmbedParams(**kwargs)
    stage = Embed(params)
    stage.setup()
    t_fit = 0.0
    if stage.encoder is None:
        opts = params.options(channels=params.channels or 1)
        if block_weights is not None:
            opts = type(opts)(**{**opts.__dict__, "extra": {"block_weights": block_weights}})
        enc = encoders.build(params.encoder, opts)
        pick = np.sort(np.random.default_rng(seed).choice(len(images), min(fit_samples, len(images)), replace=False))
        t0 = time.perf_counter()
        enc.fit(prepare_batch([images[i] for i in pick], enc)[0])
        t_fit = time.perf_counter() - t0
        stage.encoder = enc  # placed by the stage's Embedder
    t0 = time.perf_counter()
    out = []
    for b0 in range(0, len(images), params.batch_size):
        x, _, _ = prepare_batch(images[b0:b0 + params.batch_size], stage.encoder)
        out.append(stage.embed_arrays(x))
    rate = len(images) / (time.perf_counter() - t0)
    return np.concatenate(out), stage.encoder.id, t_fit, rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fmnist", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated substrings of encoder labels")
    ap.add_argument("--full", action="store_true", help="only time pixels and auto on all 70k Fashion-MNIST images "
                                                        "(fit on 10k + embed 70k, wall seconds)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.full:
        arrays = []
        for part in ("train", "t10k"):
            with gzip.open(os.path.join(FMNIST, f"{part}-images-idx3-ubyte.gz")) as f:
                arrays += list(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28))
        images = samples_from_arrays(arrays).column("image").to_pylist()
        for label, kwargs in (("pixels", dict(encoder="pixels", dim=64)), ("auto", dict())):
            t0 = time.perf_counter()
            emb, enc_id, t_fit, rate = embed_all(kwargs, None, images, fit_samples=10000)
            print(f"{label:8s} {enc_id:36s} {len(images)} images: fit {t_fit:.1f} s + embed {len(images) / rate:.1f} s "
                  f"= {time.perf_counter() - t0:.1f} s wall ({rate:.0f} img/s)", flush=True)
        return
    datasets = []
    if args.fmnist > 0 and os.path.exists(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")):
        datasets.append(("fmnist", *fmnist(args.fmnist)))
    else:
        print(f"(Fashion-MNIST not at {FMNIST}: make sysdeps)")
    try:
        datasets.append(("mni152", *mni152()))
    except Exception as err:  # noqa: BLE001
        print(f"(nilearn MNI152 unavailable: {err})")
    chosen = ENCODERS if not args.only else [e for e in ENCODERS if any(s in e[0] for s in args.only.split(","))]
    for name, arrays, labels, where in datasets:
        images = samples_from_arrays(arrays).column("image").to_pylist()
        print(f"\n{name}: {len(images)} images, {len(set(labels.tolist()))} classes (labels hidden from curate)")
        print(f"{'encoder':28s} {'id':34s} {'kNN@10':>7s} {'vs pixels':>9s} {'fit s':>6s} {'img/s':>7s}")
        base = None
        for label, kwargs, bw in chosen:
            emb, enc_id, t_fit, rate = embed_all(kwargs, bw, images, fit_samples=10000)
            a = knn_agreement(emb, labels, where)
            base = a if base is None and kwargs.get("encoder") == "pixels" else base
            ratio = f"{a / base:.3f}" if base else "-"
            print(f"{label:28s} {enc_id[:34]:34s} {a:7.4f} {ratio:>9s} {t_fit:6.1f} {rate:7.0f}", flush=True)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
