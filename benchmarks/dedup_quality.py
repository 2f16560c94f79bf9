"""Precision / recall of curate's dedup stages at their defaults on varied real images (issue 11).

Data (``benchmarks/dedup_data.py``): distinct originals that ship in packages (scikit-image photo,
texture, star-field, fundus and face tiles, Fashion-MNIST, MNI152 slices, pydicom test images) +
one planted copy per transform for ``--copies`` originals each (exact re-encode, JPEG 50-95,
rotation 1-5 deg, np.roll and one-sided crops of 1-4 px, centred / off-centre crops up to 10 %,
rescale 0.5-2x, brightness / contrast +-15 %, noise sigma <= 5), and hard non-duplicates (texture
tiles of one texture, star tiles, near-blank tiles, adjacent MR / CT slices, shifted viewpoints and
stereo views): removing one of those is a false positive.

The images are written as files into a folder and the REAL pipeline runs at the defaults through
the Python API (ingest ``type: folder`` -> embed (default encoder) -> dedup.exact -> dedup.phash ->
dedup.semantic -> dedup.apply, ``scheduler="sync"``). One run directory serves every method:
only ``dedup.apply``'s ``methods`` changes between runs, so resume reuses the other stages.
Scores come from the run's ``removals`` table:

* precision = removals whose representative is the same picture (same ground-truth group) /
  removals;
* recall per transform = copies removed in favour of their group, or whose original was removed
  in favour of them, / copies;
* false positives per kind: which trap (source kind of the removed image) fooled which method.

Baselines on the same files: ``imagehash.phash`` at Hamming <= 10 with imagededup's
``find_duplicates_to_remove`` keep rule (in this process), and imagededup itself in its own venv
(``make bench-imagededup``: ``--export DIR`` keeps the folder + ``truth.json`` for
``benchmarks/imagededup_baseline.py``). ``--before`` adds ``dedup.semantic`` without verification
(the defaults before issue 11), ``--eps`` a sweep of eps with and without verification.

    python benchmarks/dedup_quality.py                       # ~8k images, a few minutes on 2 cores
    python benchmarks/dedup_quality.py --before --eps 0.002,0.005,0.01,0.02,0.05
    python benchmarks/dedup_quality.py --export /tmp/dq_files --skip-pipeline  # files for imagededup
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import dedup_data  # noqa: E402

from curate.config import PipelineConfig  # noqa: E402
from curate.ops import hamming, minhash, unionfind  # noqa: E402
from curate.runner import run_pipeline  # noqa: E402
from curate.stages.dedup.semantic import SemanticParams  # noqa: E402

METHODS = {"exact": ["exact"], "phash": ["phash"], "semantic": ["semantic"],
           "exact+phash+semantic": ["exact", "phash", "semantic"]}


def _table(run_dir: str, stage: str, sub: str | None = None, columns=None):
    d = os.path.join(run_dir, stage, sub or "")
    files = sorted(f for f in os.listdir(d) if f.startswith("part-") and f.endswith(".parquet"))
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(os.path.join(d, f), columns=columns) for f in files])


def pipeline(folder: str, methods: list[str] | None, semantic: dict | None = None) -> PipelineConfig:
    return PipelineConfig(name="dedup_quality", stages=[
        {"stage": "ingest", "sources": [{"type": "folder", "path": folder}]},
        {"stage": "embed"},
        {"stage": "dedup.exact"},
        {"stage": "dedup.phash"},
        {"stage": "dedup.semantic", **(semantic or {})},
        {"stage": "dedup.apply", "methods": methods}])


class Truth:
    def __init__(self, ds: dedup_data.Dataset, names: list[str]):
        self.index = {n: i for i, n in enumerate(names)}
        self.group = np.array(ds.group)
        self.kind = np.array(ds.kind)
        self.source = np.array(ds.source)
        self.orig_of_group: dict[int, int] = {}
        for i in np.flatnonzero(self.kind == "original").tolist():
            self.orig_of_group.setdefault(int(self.group[i]), i)

    def score(self, removed: np.ndarray, rep: np.ndarray) -> dict:
        """Precision, recall per transform, false positives per source kind (rep = -1 where kept)."""
        g, n = self.group, len(self.group)
        same = removed & (g[np.maximum(rep, 0)] == g)
        out = {"removed": int(removed.sum()), "tp": int(same.sum()),
               "precision": float(same.sum() / max(1, removed.sum())), "recall": {}, "fp": collections.Counter(),
               "fooled_by": collections.Counter()}
        caught_as_rep = np.zeros(n, bool)  # the original was removed in favour of this copy
        caught_as_rep[rep[same & (self.kind == "original")]] = True
        for k in dedup_data.TRANSFORMS:
            idx = np.flatnonzero(self.kind == k)
            out["recall"][k] = float((same[idx] | caught_as_rep[idx]).mean()) if idx.size else float("nan")
        for i in np.flatnonzero(removed & ~same).tolist():
            out["fp"][self.source[i]] += 1
            out["fooled_by"][f"{self.source[i]}~{self.source[rep[i]]}"] += 1
        return out


def score_run(run_dir: str, truth: Truth) -> dict:
    ing = _table(run_dir, "00_ingest", None, ["sample_id", "source_uri"])
    row_of = {sid: truth.index[os.path.basename(u)] for sid, u in
              zip(ing.column("sample_id").to_pylist(), ing.column("source_uri").to_pylist())}
    rem = _table(run_dir, "05_dedup_apply", "removals", ["sample_id", "representative_id"])
    n = len(truth.group)
    removed, rep = np.zeros(n, bool), np.full(n, -1, np.int64)
    for sid, r in zip(rem.column("sample_id").to_pylist(), rem.column("representative_id").to_pylist()):
        removed[row_of[sid]] = True
        rep[row_of[sid]] = row_of[r]
    return truth.score(removed, rep)


def stage_counters(run_dir: str, stage: str) -> dict:
    import json

    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)["stages"].get(stage, {}).get("counters", {})


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
        removed = ~keep
        ok = removed & (group[rep] == group)
        cells = ' | '.join(f"{(ok[kind == k]).mean():.3f}" for k in kinds)
        print(f"| {thr}{' (default)' if thr == 0.8 else ''} | {int(removed.sum())} | {int((removed & (kind == 'original')).sum())} | {ok.sum() / max(1, removed.sum()):.4f} | {cells} |")



def header() -> str:
    ks = list(dedup_data.TRANSFORMS)
    return (f"| method | removed | precision | min recall | {' | '.join(ks)} |\n" + "|" + "---|" * (4 + len(ks)))


def row(name: str, m: dict) -> str:
    rec = m["recall"]
    cells = " | ".join(f"{rec[k]:.3f}" for k in dedup_data.TRANSFORMS)
    return f"| {name} | {m['removed']} | {m['precision']:.4f} | {min(rec.values()):.3f} | {cells} |"


def fp_table(results: dict[str, dict]) -> None:
    kinds = sorted({k for m in results.values() for k in m["fp"]})
    if not kinds:
        print("\n(no false positives)")
        return
    print(f"\n## False positives by source kind of the removed image\n\n| method | {' | '.join(kinds)} |")
    print("|" + "---|" * (1 + len(kinds)))
    for name, m in results.items():
        print(f"| {name} | " + " | ".join(str(m["fp"].get(k, 0)) for k in kinds) + " |")
    print("\nmost frequent (removed kind ~ its representative's kind):")
    for name, m in results.items():
        top = ", ".join(f"{k} {v}" for k, v in m["fooled_by"].most_common(5))
        print(f"- {name}: {top or '-'}")


def imagehash_baseline(folder: str, names: list[str], truth: Truth) -> tuple[dict, float]:
    import imagehash

    t0 = time.perf_counter()
    h = np.array([int(str(imagehash.phash(Image.open(os.path.join(folder, n)))), 16) for n in names], np.uint64)
    dt = time.perf_counter() - t0
    removed, rep = imagededup_rule(h, 10)
    rep = np.where(removed, rep, -1)
    return truth.score(removed, rep), dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=400, help="originals that get a copy, per transform")
    ap.add_argument("--fashion", type=int, default=1500, help="Fashion-MNIST test images among the originals")
    ap.add_argument("--texts", type=int, default=2000, help="MinHash text benchmark size (0: skip)")
    ap.add_argument("--export", default=None, help="keep the image folder + truth.json here "
                    "(for benchmarks/imagededup_baseline.py)")
    ap.add_argument("--skip-pipeline", action="store_true", help="only write the files (with --export)")
    ap.add_argument("--before", action="store_true", help="also dedup.semantic without verification "
                    "(the defaults before issue 11)")
    ap.add_argument("--eps", default="", help="comma-separated eps sweep for dedup.semantic, verified and not")
    ap.add_argument("--run-dir", default=None, help="run directory (default: a temporary one)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    ds = dedup_data.build(a.copies, a.fashion)
    tmp = tempfile.mkdtemp(prefix="curate_dq_")
    folder = a.export or os.path.join(tmp, "files")
    if a.export and os.path.isdir(folder):
        shutil.rmtree(folder)
    names = dedup_data.write(ds, folder)
    truth = Truth(ds, names)
    n_orig = int((truth.kind == "original").sum())
    src = collections.Counter(truth.source[truth.kind == "original"].tolist())
    print(f"# dedup_quality: {len(names)} images = {n_orig} originals ({len(set(ds.group))} distinct) + "
          f"{len(names) - n_orig} copies ({a.copies} per transform x {len(dedup_data.TRANSFORMS)})")
    print("originals: " + ", ".join(f"{k} {v}" for k, v in src.most_common()))
    print(f"(built + written in {time.perf_counter() - t0:.0f} s to {folder})")
    if a.skip_pipeline:
        return
    run_dir = a.run_dir or os.path.join(tmp, "run")
    results: dict[str, dict] = {}
    secs: dict[str, float] = {}
    has_verify = "verify" in SemanticParams.model_fields
    variants = [("", {})]
    if a.before and has_verify:
        variants.append((" (no verification: before)", {"verify": False}))
    print("\n## The pipeline at its defaults (removals table of dedup.apply)\n")
    print(header())
    for tag, sem in variants:
        for name, methods in METHODS.items():
            if tag and "semantic" not in name:
                continue
            t1 = time.perf_counter()
            run_pipeline(pipeline(folder, methods, sem), run_dir=run_dir, scheduler="sync", progress=False)
            secs[name + tag] = time.perf_counter() - t1
            results[name + tag] = m = score_run(run_dir, truth)
            print(row(name + tag, m), flush=True)
            if name == "semantic":
                c = stage_counters(run_dir, "04_dedup_semantic")
                results[name + tag]["counters"] = c
    m, t_ih = imagehash_baseline(folder, names, truth)
    results["imagehash.phash t=10, imagededup rule"] = m
    print(row("imagehash.phash t=10, imagededup rule (baseline)", m))
    fp_table(results)
    for tag in [t for t, _ in variants]:
        c = results.get("semantic" + tag, {}).get("counters", {})
        print(f"\ndedup.semantic{tag}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    if a.eps:
        print("\n## dedup.semantic alone: eps sweep (calibrating eps vs verifying pairs)\n")
        print(header())
        for e in [float(x) for x in a.eps.split(",")]:
            for v in ([True, False] if has_verify else [None]):
                sem = {"eps": e, **({} if v is None else {"verify": v})}
                run_pipeline(pipeline(folder, ["semantic"], sem), run_dir=run_dir, scheduler="sync", progress=False)
                tag = "" if v is None else (" verified" if v else " not verified")
                print(row(f"semantic eps={e:g}{tag}", score_run(run_dir, truth)), flush=True)
    if a.texts:
        text_benchmark(a.texts, a.texts // 5)
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f} s (pipeline runs: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items()) + ")")
    print()
    for name, m in results.items():
        key = name.split(" ")[0] if "imagehash" not in name else "imagehash_imagededup_rule"
        key += "_before" if "before" in name else ""
        print(f"precision_{key}: {m['precision']:.4f}")
        print(f"min_recall_{key}: {min(m['recall'].values()):.4f}")
    for k, v in results["exact+phash+semantic"]["recall"].items():
        print(f"recall_defaults_{k}: {v:.4f}")
    print(f"total_s: {total:.1f}")
    if not a.run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    if not a.export:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
