"""Does curation help contrastive pretraining? full vs curated vs random at an equal step budget.

1. Build a *redundant* pretraining set from real images: ``--n-base`` Fashion-MNIST
   train images; a share ``--dup-share`` of them is repeated ``--copies`` times with
   small perturbations (sub-pixel shift of up to ``--shift`` px, Gaussian noise, gain and
   offset changes), the way adjacent CT slices repeat a volume.
2. Curate it with curate's own pipeline through the runner: ``ingest`` (npz) ->
   ``embed`` (weight-free ``pixels`` PCA, or ``--dedup-encoder ssl``: first
   ``curate train-encoder`` on the ingested set, then ``embed`` with ``encoder: ssl``)
   -> ``dedup.semantic`` (SemDeDup, ``target_fraction`` = ``--keep-fraction``) ->
   ``dedup.phash`` (threshold ``--phash-threshold``, when that stage is installed) -> ``dedup.apply``.
3. ``curate eval``'s harness: SimCLR on each arm (``full``, ``curated``, ``random``
   = a random subset as large as ``curated``, redrawn per seed) for the same number
   of steps, then a linear probe and kNN on frozen features: probe train split =
   Fashion-MNIST train images *not* used for pretraining, test = the untouched
   Fashion-MNIST test set. A randomly initialised encoder is probed too, as the
   floor that pretraining has to beat.

Prints the table, curated/full and curated/random ratios, and ground truth about
the dedup (share of injected copies removed, share of distinct bases kept).

    nice .venv/bin/python benchmarks/curation_effect.py            # reduced CPU setting (~10 min on 1 core)
    .venv/bin/python benchmarks/curation_effect.py --gpu           # one H100, <= 8 min
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np
import torch

FMNIST = "/usr/share/datasets/fashion-mnist"

SETTINGS = {
    # reduced CPU setting: 2000 bases, 1000 of them x6 -> 7000 images, 29% distinct
    "cpu": dict(n_base=2000, dup_share=0.5, copies=5, keep_fraction=0.4, arch="resnet_nano", steps=160,
                batch_size=64, seeds="0,1", probe_train=5000, probe_test=5000, threads=1, device="cpu"),
    # one H100: 20000 bases -> 70000 images; ResNet-18, 3 seeds, full test set
    "gpu": dict(n_base=20000, dup_share=0.5, copies=5, keep_fraction=0.4, arch="resnet18", steps=500,
                batch_size=256, seeds="0,1,2", probe_train=20000, probe_test=10000, threads=0, device="cuda"),
}


def load_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data[4 + 4 * ndim:], np.uint8).reshape(dims)


def perturb(img: np.ndarray, rng: np.random.Generator, shift: float, noise: float, gain: float,
            offset: float) -> np.ndarray:
    """One near-copy: (sub-)pixel shift (bilinear, zero fill), gain, offset, Gaussian noise."""
    from scipy import ndimage

    out = img.astype(np.float32)
    if shift:
        out = ndimage.shift(out, rng.uniform(-shift, shift, 2), order=1, mode="constant")
    out = out * (1 + rng.uniform(-gain, gain)) + rng.uniform(-offset, offset) + rng.normal(0, noise, img.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def build_redundant(x: np.ndarray, y: np.ndarray, n_base: int, dup_share: float, copies: int, shift: float,
                    noise: float, gain: float, offset: float, seed: int):
    """Returns images, labels, base index of every image, the base ids, and is-copy flags (shuffled order)."""
    rng = np.random.default_rng(seed)
    bases = rng.choice(len(x), n_base, replace=False)
    dup = set(rng.choice(bases, int(round(dup_share * n_base)), replace=False).tolist())
    imgs, labels, base_of, is_copy = [], [], [], []
    for b in bases:
        imgs.append(x[b]), labels.append(y[b]), base_of.append(b), is_copy.append(False)
        if b in dup:
            for _ in range(copies):
                imgs.append(perturb(x[b], rng, shift, noise, gain, offset))
                labels.append(y[b]), base_of.append(b), is_copy.append(True)
    order = rng.permutation(len(imgs))
    pick = lambda a: np.asarray(a)[order]  # noqa: E731
    return np.stack(imgs)[order], pick(labels), pick(base_of), bases, pick(is_copy)


def curate_run(npz: str, run_dir: str, keep_fraction: float, dedup_encoder: str, ssl_cfg: dict, phash_threshold: int,
               log) -> dict:
    """ingest -> embed -> dedup.semantic (-> dedup.phash) -> dedup.apply through the runner."""
    from curate import registry
    from curate.config import PipelineConfig
    from curate.errors import ConfigError
    from curate.runner import run_pipeline

    ingest = {"stage": "ingest", "sources": [{"type": "npz", "path": npz}], "partition_size": 4096}
    t0 = time.perf_counter()
    embed = {"stage": "embed", "encoder": "pixels", "image_size": 28, "dim": 64}
    info: dict = {"dedup_encoder": dedup_encoder}
    if dedup_encoder == "ssl":
        from curate.train.from_run import train_from_run

        run_pipeline(PipelineConfig(name="curation_effect", stages=[ingest]), run_dir=run_dir, scheduler="sync",
                     progress=False)
        ck = os.path.join(run_dir, "models", "ssl.safetensors")
        res = train_from_run(run_dir, which="ingested", out=ck, progress=False, **ssl_cfg)
        info["ssl_train_seconds"] = round(res.seconds, 1)
        log(f"[curate] train-encoder on the ingested set: {res.steps} steps, {res.seconds:.0f}s")
        embed = {"stage": "embed", "encoder": "ssl", "weights": ck}
    stages = [ingest, embed, {"stage": "dedup.semantic", "target_fraction": keep_fraction}]
    try:
        registry.get("dedup.phash")
        stages.append({"stage": "dedup.phash", "threshold": phash_threshold})
        info["phash"] = True
    except ConfigError as err:
        info["phash"] = f"not available ({err})"
        log(f"[curate] dedup.phash not available, running without it: {err}")
    stages.append({"stage": "dedup.apply"})
    summary = run_pipeline(PipelineConfig(name="curation_effect", stages=stages), run_dir=run_dir,
                           scheduler="sync", progress=False)
    info.update(stages=[s["stage"] for s in stages], seconds=round(time.perf_counter() - t0, 1),
                accounting=summary["accounting"])
    return info


def ground_truth(run_dir: str, base_of: np.ndarray, is_copy: np.ndarray, n_base: int) -> dict:
    from curate.train.data import run_samples

    kept = np.asarray(run_samples(run_dir, "kept", columns=["source_index"]).column("source_index").to_pylist())
    n = len(base_of)
    kept_copy = is_copy[kept]
    return {"ingested": n, "kept": int(len(kept)), "kept_share": len(kept) / n,
            "distinct_bases": n_base, "bases_covered_by_kept": int(len(set(base_of[kept].tolist()))),
            "copies_removed_share": 1 - kept_copy.sum() / max(1, is_copy.sum()),
            "originals_removed_share": 1 - (~kept_copy).sum() / max(1, (~is_copy).sum()),
            "random_expected_bases_covered": _expected_coverage(base_of, len(kept))}


def _expected_coverage(base_of: np.ndarray, k: int, draws: int = 20) -> float:
    rng = np.random.default_rng(0)
    return statistics.fmean(len(set(base_of[rng.choice(len(base_of), k, replace=False)].tolist()))
                            for _ in range(draws))


def init_baseline(probe, arch: str, channels: int, size: int, seeds: list[int], device) -> dict:
    """The floor: a randomly initialised encoder of the same architecture, probed the same way."""
    from curate.eval import encode, knn_accuracy, linear_probe, match_channels
    from curate.train.model import SimCLRNet

    lin, knn = [], []
    for s in seeds:
        torch.manual_seed(s)
        enc = SimCLRNet(arch, channels).encoder
        ftr = encode(enc, match_channels(probe.train_images, channels), size, device=device)
        fte = encode(enc, match_channels(probe.test_images, channels), size, device=device)
        lin.append(linear_probe(ftr, probe.train_labels, fte, probe.test_labels))
        knn.append(knn_accuracy(ftr, probe.train_labels, fte, probe.test_labels))
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    return {"linear_mean": statistics.fmean(lin), "linear_sd": sd(lin), "knn_mean": statistics.fmean(knn),
            "knn_sd": sd(knn)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the one-H100 setting (<= 8 min)")
    for k, v in SETTINGS["cpu"].items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=None, help=f"cpu default {v}, "
                        f"gpu default {SETTINGS['gpu'][k]}")
    ap.add_argument("--shift", type=float, default=0.5,
                    help="max shift of a near-copy in px (uniform, sub-pixel, per axis); adjacent CT slices "
                         "drift by less than a voxel")
    ap.add_argument("--noise", type=float, default=4.0, help="Gaussian noise sigma (0..255 scale)")
    ap.add_argument("--gain", type=float, default=0.05, help="max relative intensity gain change")
    ap.add_argument("--offset", type=float, default=8.0, help="max intensity offset")
    ap.add_argument("--dedup-encoder", choices=["pixels", "ssl"], default="pixels",
                    help="embedding for SemDeDup: weight-free pixels PCA, or a SimCLR encoder trained on the run")
    ap.add_argument("--phash-threshold", type=int, default=4,
                    help="dedup.phash Hamming threshold (imagededup's 10 chains distinct 28-px garments together)")
    ap.add_argument("--seed", type=int, default=0, help="data construction seed")
    ap.add_argument("--workdir", default="/tmp/curation_effect")
    ap.add_argument("--results", default=None, help="copy eval.json / eval.png here (e.g. benchmarks/results)")
    args = ap.parse_args(argv)
    setting = "gpu" if args.gpu else "cpu"
    cfg = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in SETTINGS[setting].items()}
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        print("--gpu needs a CUDA device; none is visible", file=sys.stderr)
        return 2
    log = lambda m: print(m, flush=True)  # noqa: E731
    t_all = time.perf_counter()
    log(f"[setting] {setting}: {json.dumps(cfg)}  perturbation: shift<={args.shift}px noise={args.noise} "
        f"gain={args.gain} offset={args.offset}")

    # 1. data
    x = load_idx(f"{FMNIST}/train-images-idx3-ubyte.gz")
    y = load_idx(f"{FMNIST}/train-labels-idx1-ubyte.gz")
    xt = load_idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")
    yt = load_idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz")
    imgs, labels, base_of, bases, is_copy = build_redundant(x, y, cfg["n_base"], cfg["dup_share"], cfg["copies"],
                                                            args.shift, args.noise, args.gain, args.offset, args.seed)
    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir)
    npz = os.path.join(args.workdir, "redundant.npz")
    np.savez(npz, train_images=imgs, train_labels=labels)
    log(f"[data] {len(imgs)} pretraining images from {cfg['n_base']} Fashion-MNIST bases "
        f"({int(is_copy.sum())} near-copies; distinct share {cfg['n_base'] / len(imgs):.1%})")

    # 2. curate
    run_dir = os.path.join(args.workdir, "run")
    ssl_cfg = {"arch": cfg["arch"], "steps": max(50, cfg["steps"] // 2), "batch_size": cfg["batch_size"],
               "device": cfg["device"]}
    dedup = curate_run(npz, run_dir, cfg["keep_fraction"], args.dedup_encoder, ssl_cfg, args.phash_threshold, log)
    gt = ground_truth(run_dir, base_of, is_copy, cfg["n_base"])
    log(f"[curate] {' -> '.join(dedup['stages'])} in {dedup['seconds']}s: kept {gt['kept']}/{gt['ingested']} "
        f"({gt['kept_share']:.1%}); injected copies removed {gt['copies_removed_share']:.1%}, originals removed "
        f"{gt['originals_removed_share']:.1%}; distinct bases covered: curated {gt['bases_covered_by_kept']}"
        f"/{cfg['n_base']}, random subset of the same size ~{gt['random_expected_bases_covered']:.0f}")

    # 3. eval: probe train = train images never used for pretraining; test = the untouched test set
    from curate.eval import ProbeData, evaluate_arms, run_arms

    unused = np.setdiff1d(np.arange(len(x)), bases)
    rng = np.random.default_rng(args.seed + 1)
    ptr = np.sort(rng.choice(unused, min(cfg["probe_train"], len(unused)), replace=False))
    pte = np.sort(rng.choice(len(xt), min(cfg["probe_test"], len(xt)), replace=False))
    probe = ProbeData(torch.from_numpy(x[ptr][:, None].copy()), torch.from_numpy(y[ptr].astype(np.int64)),
                      torch.from_numpy(xt[pte][:, None].copy()), torch.from_numpy(yt[pte].astype(np.int64)),
                      f"Fashion-MNIST train (unused, {len(ptr)}) / t10k ({len(pte)})")
    arms = run_arms(run_dir, ["full", "curated", "random"])
    seeds = [int(s) for s in cfg["seeds"].split(",")]
    train_cfg = {"arch": cfg["arch"], "steps": cfg["steps"], "batch_size": cfg["batch_size"], "device": cfg["device"]}
    report = evaluate_arms(arms, probe, train_cfg, seeds=seeds, log=log)
    floor = init_baseline(probe, cfg["arch"], 1, 28, seeds, torch.device(cfg["device"]))
    paths = report.write(args.workdir, f"curation_effect_{setting}")
    s = report.summary()
    log("")
    log(report.table())
    log(f"| random init (no pretraining) | - | {100 * floor['linear_mean']:.2f} ± {100 * floor['linear_sd']:.2f} | "
        f"{100 * floor['knn_mean']:.2f} ± {100 * floor['knn_sd']:.2f} | 0 | - |")
    cf = s["curated"]["linear_mean"] / s["full"]["linear_mean"]
    cr = s["curated"]["linear_mean"] / s["random"]["linear_mean"]
    kf = s["curated"]["knn_mean"] / s["full"]["knn_mean"]
    kr = s["curated"]["knn_mean"] / s["random"]["knn_mean"]
    log(f"\nratios (linear probe): curated/full {cf:.4f}  curated/random {cr:.4f};  (kNN): curated/full {kf:.4f}  "
        f"curated/random {kr:.4f}")
    # paired by seed (same init, same augmentation stream): the arm-to-arm difference without seed noise
    by = {(r.arm, r.seed): r for r in report.results}
    paired = {}
    for other in ("full", "random"):
        for metric in ("linear_acc", "knn_acc"):
            d = [100 * (getattr(by["curated", sd], metric) - getattr(by[other, sd], metric)) for sd in seeds]
            paired[f"curated_minus_{other}_{metric}"] = {"mean": statistics.fmean(d),
                                                         "sd": statistics.stdev(d) if len(d) > 1 else 0.0,
                                                         "per_seed": d}
    log("paired by seed, curated minus other (points): " + "; ".join(
        f"{k.replace('curated_minus_', '')} {v['mean']:+.2f} ± {v['sd']:.2f}" for k, v in paired.items()))
    goal = (s["curated"]["linear_mean"] >= s["full"]["linear_mean"] and s["curated"]["linear_mean"] >
            s["random"]["linear_mean"] and gt["kept_share"] <= 0.5)
    log(f"goal (curated >= full and > random on the linear probe at <= 50% of the data): "
        f"{'MET' if goal else 'NOT met'}; total {time.perf_counter() - t_all:.0f}s")
    extra = {"setting": setting, "settings": cfg, "perturbation": {"shift": args.shift, "noise": args.noise,
             "gain": args.gain, "offset": args.offset}, "dedup": dedup, "ground_truth": gt, "random_init": floor,
             "ratios": {"linear_curated_over_full": cf, "linear_curated_over_random": cr,
                        "knn_curated_over_full": kf, "knn_curated_over_random": kr}, "paired_differences": paired,
             "goal_met": goal,
             "total_seconds": round(time.perf_counter() - t_all, 1), "command": " ".join(sys.argv)}
    with open(paths["json"]) as f:
        data = json.load(f)
    data.update(extra)
    with open(paths["json"], "w") as f:
        json.dump(data, f, indent=2, default=float)
    if args.results:
        os.makedirs(args.results, exist_ok=True)
        for p in paths.values():
            shutil.copy(p, args.results)
    log(f"wrote {paths['json']} and {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
