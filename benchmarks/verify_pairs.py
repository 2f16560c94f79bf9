"""Pair-level check of the near-duplicate verifier (``curate.ops.geometry.verify_pairs``).

``dedup_quality.py`` scores whole pipelines; this script isolates the strict step. It builds the
``dedup_data`` set (real package-shipped images, planted copies, hard traps), then verifies

* every planted copy against its original (a positive, per transform), and
* the hardest distinct pairs: for each original its 3 nearest other originals in a normalised
  16x16 thumbnail space, plus adjacent MR / DICOM slices (negatives, per source kind),

and prints recall per transform, negatives accepted per kind and milliseconds per pair, for the
default ``VerifySpec`` and a few variants. A verifier fit for default dedup must accept the
copies (recall >= 0.95 on every transform) and almost no hard negative.

    python benchmarks/verify_pairs.py [--copies 60] [--fashion 600]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dedup_data  # noqa: E402

from curate.ops import geometry  # noqa: E402


def pairs(ds: dedup_data.Dataset) -> tuple[np.ndarray, int]:
    """(pairs as an (N, 2) array: positives first, then hard negatives; number of positives)."""
    grp, kind, src = np.array(ds.group), np.array(ds.kind), np.array(ds.source)
    orig = np.where(kind == "original")[0]
    first: dict[int, int] = {}
    for i in orig.tolist():
        first.setdefault(int(grp[i]), i)
    pos = [(first[int(grp[c])], int(c)) for c in np.where(kind != "original")[0]]
    x = np.stack([geometry.thumbnail(ds.images[i], 16).ravel() for i in orig])
    x -= x.mean(1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-6
    neg: set[tuple[int, int]] = set()
    for r0 in range(0, len(orig), 1024):  # blocked: the full similarity matrix need not fit
        s = x[r0:r0 + 1024] @ x.T
        s[np.arange(s.shape[0]), np.arange(r0, r0 + s.shape[0])] = -9
        for r, row in enumerate(np.argsort(-s, axis=1)[:, :3]):
            i = int(orig[r0 + r])
            for c in row.tolist():
                j = int(orig[c])
                if grp[i] != grp[j]:
                    neg.add((min(i, j), max(i, j)))
    for a, b in zip(orig[:-1].tolist(), orig[1:].tolist()):
        if src[a] == src[b] and src[a] in ("mr_slice", "dicom") and grp[a] != grp[b]:
            neg.add((a, b))
    return np.array(pos + sorted(neg), np.int64), len(pos)


def report(name: str, ds: dedup_data.Dataset, p: np.ndarray, npos: int, spec: geometry.VerifySpec) -> dict:
    kind, src = np.array(ds.kind), np.array(ds.source)
    t = time.perf_counter()
    ok, _, _ = geometry.verify_pairs(ds.images, p[:, 0], p[:, 1], spec)
    ms = 1000 * (time.perf_counter() - t) / len(p)
    tk = kind[p[:npos, 1]]
    recall = {k: float(ok[:npos][tk == k].mean()) for k in dedup_data.TRANSFORMS if (tk == k).any()}
    negk = np.array([f"{src[a]}~{src[b]}" for a, b in p[npos:]])
    acc = Counter(negk[ok[npos:]].tolist())
    tot = Counter(negk.tolist())
    print(f"\n## {name}: {ms:.1f} ms/pair, negatives accepted {int(ok[npos:].sum())} of {len(p) - npos}, "
          f"min recall {min(recall.values()):.3f}")
    print("| " + " | ".join(recall) + " |\n|" + "---|" * len(recall))
    print("| " + " | ".join(f"{v:.3f}" for v in recall.values()) + " |")
    print("accepted hard negatives: " + ", ".join(f"{k} {acc[k]}/{tot[k]}" for k, _ in acc.most_common(10)))
    return {"ms_per_pair": ms, "neg_accepted": int(ok[npos:].sum()), "min_recall": min(recall.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=60, help="copies per transform")
    ap.add_argument("--fashion", type=int, default=600, help="Fashion-MNIST originals")
    a = ap.parse_args()
    ds = dedup_data.build(copies=a.copies, fashion=a.fashion)
    p, npos = pairs(ds)
    print(f"# verify_pairs: {npos} copy pairs, {len(p) - npos} hard distinct pairs, {len(ds.images)} images")
    d = geometry.DEFAULT
    for name, spec in (("default VerifySpec", d),
                       ("rel_rms 0.08", dataclasses.replace(d, rel_rms=0.08)),
                       ("rel_rms 0.16", dataclasses.replace(d, rel_rms=0.16)),
                       ("max_rms 0.5", dataclasses.replace(d, max_rms=0.5)),
                       ("max_rms 1.5", dataclasses.replace(d, max_rms=1.5)),
                       ("min_detail 0 (verify structureless images too)", dataclasses.replace(d, min_detail=0.0))):
        report(name, ds, p, npos, spec)


if __name__ == "__main__":
    main()
