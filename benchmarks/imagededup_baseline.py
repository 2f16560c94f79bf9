"""imagededup's own PHash on the files ``dedup_quality.py --export DIR`` wrote, scored like curate.

Runs in a separate virtualenv (imagededup needs torchvision and a torch other than curate's):

    make bench-imagededup        # builds .venv-imagededup, exports the files, runs this script

imagededup 0.3.3's defaults: ``PHash().encode_images`` (its own pHash: PIL Lanczos to 32x32
luma, scipy DCT, 8x8 low frequencies vs their median), ``find_duplicates(max_distance_threshold=10)``
(BK-tree search), and the rule of ``find_duplicates_to_remove`` (files in order; a file not yet
removed removes all of its duplicates), which also names each removed file's representative.
Precision and recall per transform are computed as in ``dedup_quality.py``; hashing throughput is
printed next to curate's numbers from ``dedup_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="folder written by dedup_quality.py --export")
    ap.add_argument("--threshold", type=int, default=10, help="max_distance_threshold (imagededup default 10)")
    ap.add_argument("--workers", type=int, default=0, help="imagededup's num_enc_workers (0: one process)")
    a = ap.parse_args()
    from imagededup.methods import PHash

    truth = json.load(open(os.path.join(a.dir, "truth.json")))
    files = sorted(truth)
    ph = PHash(verbose=False)
    t0 = time.perf_counter()
    enc = ph.encode_images(image_dir=a.dir, num_enc_workers=a.workers)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    dups = ph.find_duplicates(encoding_map={f: enc[f] for f in files}, max_distance_threshold=a.threshold,
                              num_dist_workers=a.workers)
    t_search = time.perf_counter() - t0
    removed: dict[str, str] = {}  # file -> the kept file that removed it (find_duplicates_to_remove's rule)
    for k in files:
        if k not in removed:
            for d in dups.get(k, []):
                removed.setdefault(d, k)
    group = {f: v[0] for f, v in truth.items()}  # [group, kind] or [group, kind, source]
    kind = {f: v[1] for f, v in truth.items()}
    tp = sum(group[f] == group[r] for f, r in removed.items())
    print(f"imagededup PHash, t={a.threshold}: {len(files)} images; encode {t_enc:.1f} s "
          f"({len(files) / t_enc:.0f} images/s, {a.workers or 1} process), search {t_search:.1f} s")
    kinds = sorted(set(kind.values()) - {"original"})
    cells = []
    for k in kinds:
        idx = [f for f in files if kind[f] == k]
        cells.append(np.mean([f in removed and group[removed[f]] == group[f] for f in idx]))
    orig_removed = sum(kind[f] == "original" for f in removed)
    print(f"| method | removed | originals removed | precision | {' | '.join(kinds)} |")
    print("|" + "---|" * (4 + len(kinds)))
    print(f"| imagededup {__import__('imagededup').__version__} PHash t={a.threshold} (find_duplicates_to_remove rule) "
          f"| {len(removed)} | {orig_removed} | {tp / max(1, len(removed)):.4f} | "
          + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
