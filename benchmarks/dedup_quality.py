"""Precision / recall of the hash dedup methods on real images with planted transformed copies.

Images: Fashion-MNIST test images (``--n`` originals); for the first ``--copies`` of them, one copy
per transform: PNG re-encode (pixel-identical), JPEG quality 95, resize down (0.75x, bilinear),
resize up (2x, bicubic), 1- and 2-pixel border crops, a 1-pixel top-left crop (a shift), brightness +20. Plus the pydicom test CT slice in
several encodings (JPEG 95 / 75, resized, brighter) as one more group.

Each method decides exactly as the stage does (``curate.stages.dedup.phash.find_near_duplicates``:
pairs within the threshold, optionally verified on 16x16 thumbnails, greedy keep-first in order;
originals come first). Metrics:

* precision = removed images whose representative is their own original (or a copy of it) /
  all removed images. Pairs of distinct Fashion-MNIST originals count as false positives (we
  checked: at t=2 their mean absolute pixel difference is ~18 vs ~1 for JPEG copies, so they are
  different garments, not hidden duplicates).
* recall per transform = copies removed in favour of their original (or another copy of it) / copies.

Methods: ``exact`` (pixel hash), ``phash`` and ``dhash`` at several thresholds (curate.ops.hamming,
exact search), MinHash on texts (synthetic reports with near-duplicate variants), and the
imagededup-style baseline run in this process: ``imagehash.phash`` per image, Hamming <= 10, and
imagededup's ``find_duplicates_to_remove`` rule (walk files in order; a file not yet removed removes
all its direct duplicates; no transitivity). imagededup itself needs torchvision and another torch,
so it runs in its own virtualenv on the same files: ``--export DIR`` writes the images as PNG files
plus ``truth.json``, and ``benchmarks/imagededup_baseline.py DIR`` (``make bench-imagededup`` does
both) scores imagededup's own ``PHash`` the same way.

    python benchmarks/dedup_quality.py                 # 10k originals, 1k copies per transform
    python benchmarks/dedup_quality.py --n 10000 --copies 10000
    python benchmarks/dedup_quality.py --export /tmp/dq_files   # + the files for imagededup
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from curate import imaging  # noqa: E402
from curate.ops import hamming, minhash, phash, unionfind  # noqa: E402
from curate.stages.dedup.phash import crop_view_hashes, crop_view_pairs, find_near_duplicates  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def jpeg(img: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def png(img: np.ndarray) -> np.ndarray:
    return imaging.decode_png(imaging.encode_png(img))


def resize(img: np.ndarray, f: float, method) -> np.ndarray:
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * f)), max(1, round(h * f))), method))


TRANSFORMS = {
    "png": png,
    "jpeg95": lambda x: jpeg(x, 95),
    "resize_down": lambda x: resize(x, 0.75, Image.Resampling.BILINEAR),
    "resize_up": lambda x: resize(x, 2.0, Image.Resampling.BICUBIC),
    "crop1px": lambda x: np.ascontiguousarray(x[1:-1, 1:-1]),
    "crop2px": lambda x: np.ascontiguousarray(x[2:-2, 2:-2]),
    "crop1px_corner": lambda x: np.ascontiguousarray(x[1:, 1:]),  # top and left only: a shift
    "bright20": lambda x: np.clip(x.astype(np.int16) + 20, 0, 255).astype(np.uint8),
}


def dataset(n: int, copies: int):
    with gzip.open(FMNIST) as f:
        orig = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    images = list(orig)
    group = list(range(n))
    kind = ["original"] * n
    for name, fn in TRANSFORMS.items():
        for i in range(min(copies, n)):
            images.append(fn(orig[i]))
            group.append(i)
            kind.append(name)
    try:  # a real CT slice in several encodings
        from pydicom import dcmread
        from pydicom.data import get_testdata_file

        ct = imaging.to_uint8(dcmread(get_testdata_file("CT_small.dcm")).pixel_array)
        g = n
        for name, img in [("original", ct), ("ct_jpeg95", jpeg(ct, 95)), ("ct_jpeg75", jpeg(ct, 75)),
                          ("ct_resize", resize(ct, 0.5, Image.Resampling.BILINEAR)),
                          ("ct_bright20", TRANSFORMS["bright20"](ct))]:
            images.append(img)
            group.append(g)
            kind.append(name)
    except Exception as err:  # noqa: BLE001
        print(f"(pydicom test CT unavailable: {err})")
    order = np.argsort([k != "original" for k in kind], kind="stable")  # originals first
    return [images[i] for i in order], np.array(group)[order], np.array(kind)[order]


def export(images: list[np.ndarray], group: np.ndarray, kind: np.ndarray, out: str) -> None:
    """PNG files named in dataset order (originals first, so imagededup's file order matches ours)."""
    import json

    os.makedirs(out, exist_ok=True)
    truth = {}
    for i, (img, g, k) in enumerate(zip(images, group.tolist(), kind.tolist())):
        name = f"{i:06d}.png"
        Image.fromarray(img).save(os.path.join(out, name), compress_level=1)
        truth[name] = [g, k]
    with open(os.path.join(out, "truth.json"), "w") as f:
        json.dump(truth, f)
    print(f"(exported {len(images)} PNG files + truth.json to {out})")


def evaluate_removed(removed: np.ndarray, rep: np.ndarray, group: np.ndarray, kind: np.ndarray) -> dict:
    tp = removed & (group[rep] == group)
    out = {"removed": int(removed.sum()), "precision": float(tp.sum() / max(1, removed.sum())),
           "originals_removed": int((removed & (kind == "original")).sum())}
    for k in sorted(set(kind.tolist()) - {"original"}):
        idx = np.flatnonzero(kind == k)
        out[k] = float((removed[idx] & (group[rep[idx]] == group[idx])).mean())
    return out


def imagededup_rule(h: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """imagededup find_duplicates_to_remove: in file order, a kept file removes its direct duplicates."""
    i, j, _ = hamming.brute_force_pairs(h, t) if h.size <= 20000 else hamming.pairs(h, t)
    nbrs: dict[int, list[int]] = {}
    for a, b in zip(i.tolist(), j.tolist()):
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    removed = np.zeros(h.size, bool)
    rep = np.arange(h.size)
    for a in range(h.size):
        if removed[a]:
            continue
        for b in nbrs.get(a, []):
            if not removed[b] and b > a:
                removed[b] = True
                rep[b] = a
    return removed, rep


def row(name: str, m: dict, kinds: list[str]) -> str:
    cells = " | ".join(f"{m.get(k, float('nan')):.3f}" for k in kinds)
    return f"| {name} | {m['removed']} | {m['originals_removed']} | {m['precision']:.4f} | {cells} |"


def text_benchmark(n: int, variants_n: int) -> None:
    rng = np.random.default_rng(1)
    words = ("ct chest abdomen pelvis mri brain spine contrast nodule mass lesion effusion pleural normal "
             "stable unchanged increased decreased right left upper lower lobe liver kidney spleen no "
             "evidence acute infarct hemorrhage fracture mild moderate severe small large mm cm").split()
    base = [" ".join(rng.choice(words, rng.integers(40, 100))) + "." for _ in range(n)]

    def one_word(t):
        w = t.split()
        w[len(w) // 2] = "zebra"
        return " ".join(w)

    def drop10(t):
        w = t.split()
        keep = rng.random(len(w)) > 0.1
        return " ".join(x for x, k in zip(w, keep) if k)

    variants = {"case_punct_space": lambda t: t.upper().replace(" ", "  ").replace(".", " !"),
                "one_word_changed": one_word, "appended_sentence": lambda t: t + " Clinical correlation advised.",
                "drop_10pct_words": drop10}
    texts, group, kind = list(base), list(range(n)), ["original"] * n
    for name, fn in variants.items():
        for i in range(min(variants_n, n)):
            texts.append(fn(base[i]))
            group.append(i)
            kind.append(name)
    group, kind = np.array(group), np.array(kind)
    kinds = list(variants)
    print(f"\n## MinHash on texts: {n} synthetic reports + {min(variants_n, n)} variants each "
          f"(char 5-grams, 128 perms, LSH bands = datasketch optimum)")
    print(f"| threshold | removed | originals removed | precision | {' | '.join(kinds)} |")
    print("|" + "---|" * (4 + len(kinds)))
    sigs = minhash.MinHasher(128).signatures([minhash.shingles(t) for t in texts])
    for thr in (0.5, 0.7, 0.8, 0.9):
        b, r = minhash.optimal_bands(thr, 128)
        i, j, jac = minhash.lsh_task((sigs, list(range(b)), r, thr))
        keep, rep = unionfind.greedy_keep_first(len(texts), i, j, jac, np.arange(len(texts)))
        m = evaluate_removed(~keep, rep, group, kind)
        print(row(f"{thr}{' (default)' if thr == 0.8 else ''}", m, kinds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="Fashion-MNIST test originals")
    ap.add_argument("--copies", type=int, default=1000, help="originals that get one copy per transform")
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--max-diff", type=float, default=8.0, help="thumbnail check (dedup.phash max_diff)")
    ap.add_argument("--export", default=None, help="also write the images as PNG files + truth.json here "
                    "(for benchmarks/imagededup_baseline.py)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    images, group, kind = dataset(a.n, a.copies)
    if a.export:
        export(images, group, kind, a.export)
    kinds = sorted(set(kind.tolist()) - {"original"})
    print(f"# dedup_quality: {a.n} Fashion-MNIST originals + {min(a.copies, a.n)} copies x {len(TRANSFORMS)} "
          f"transforms + CT group = {len(images)} images")
    ph, dh, th = phash.hash_arrays(images, thumbnails=True)
    th = th.reshape(len(images), 256)
    rank = np.arange(len(images))  # originals first
    print(f"\n| method | removed | originals removed | precision | {' | '.join(kinds)} |")
    print("|" + "---|" * (4 + len(kinds)))
    pix = np.array([imaging.pixel_hash(imaging.canonical(x)) for x in images])
    s, d = unionfind.components_by_key(pix)
    rep, keep, _ = unionfind.keep_first(unionfind.components(len(images), s, d), rank)
    print(row("exact (pixels)", evaluate_removed(~keep, rep, group, kind), kinds))
    for name, h, ts, default in [("phash", ph, (2, 4, 6, 8, 10, 12, 14), 6), ("dhash", dh, (2, 4, 6, 8, 10), 6)]:
        for verify in (False, True):
            for t in ts:
                r = find_near_duplicates(h, t, rank, thumbs=th if verify else None,
                                         max_diff=a.max_diff if verify else None)
                m = evaluate_removed(~r["keep"], r["rep"], group, kind)
                tag = f" + thumbnail diff <= {a.max_diff:g}" if verify else " (hash only)"
                dflt = " (default before crop views)" if t == default and verify and name == "phash" else ""
                print(row(f"{name} t={t}{tag}{dflt}", m, kinds))
    # crop views (dedup.phash crop_views, default [0.04, 0.08]): each image also hashed with a border trimmed
    for shares in ([0.04], [0.04, 0.08]):
        vph, _, vth, vok = crop_view_hashes(images, shares)
        label = str(shares)
        for t in (4, 6, 8):
            extra = crop_view_pairs(ph, vph, vok, t, None, th, vth, a.max_diff)
            r = find_near_duplicates(ph, t, rank, thumbs=th, max_diff=a.max_diff, extra=extra)
            m = evaluate_removed(~r["keep"], r["rep"], group, kind)
            dflt = " **default**" if t == 6 and len(shares) == 2 else ""
            print(row(f"phash t={t} + thumbnail diff <= {a.max_diff:g} + crop views {label}{dflt}", m, kinds))
    import imagehash

    t1 = time.perf_counter()
    ih = np.array([int(str(imagehash.phash(Image.fromarray(x))), 16) for x in images], dtype=np.uint64)
    t_ih = time.perf_counter() - t1
    removed, rep = imagededup_rule(ih, 10)
    m = evaluate_removed(removed, rep, group, kind)
    print(row("imagehash.phash t=10, imagededup rule (baseline)", m, kinds))
    print(f"\n(imagehash.phash hashes identical to curate's: {bool(np.array_equal(ih, ph))}; "
          f"imagehash took {t_ih:.1f} s)")
    text_benchmark(a.texts, a.texts // 5)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
