"""Does AdaInf's mix help? Fashion-MNIST, three arms at the same SimCLR step budget.

Arms (Wang, Zhang, Wang, ICLR 2024, "Do Generated Data Always Help Contrastive Learning?"):

* ``none``    - the real images only, SimCLR augmentation;
* ``vanilla`` - real + generated, real replicated once (dup = 1), SimCLR augmentation;
* ``adainf``  - real replicated dup = 10 times + generated, weak augmentation (crop min
  scale 0.2, jitter p 0.4, strength 0.5): the ``paper`` mode of ``inflate.adainf``;
* ``adainf_gap`` (``--gap-arm``) - the mix the ``gap`` mode computes from the measured
  precision of the generated set.

The generated set comes from the real pipeline: ingest (IDX subset) -> inflate.train
(class-conditional DDPM) -> inflate.generate (DDIM, memorisation / redundancy filter) ->
inflate.adainf (paper, and gap for the report). Every arm trains SimCLR
(:func:`curate.eval.evaluate_arms`) for the same number of steps and batch size; the frozen
encoder is probed (linear + kNN) with the real training subset as probe-train and the
Fashion-MNIST test split as probe-test. Ratios are against ``none`` in the same process.

CPU (reduced, about 10-15 min on 2 busy cores)::

    nice python benchmarks/adainf_effect.py

GPU (one H100, <= 8 min; estimated, see benchmarks/results/adainf.md)::

    python benchmarks/adainf_effect.py --gpu
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import struct
import sys
import time

import numpy as np
import pyarrow.compute as pc
import torch

FMNIST = "/usr/share/datasets/fashion-mnist"

PRESETS = {
    "cpu": dict(n_real=2000, ddpm_steps=300, ddpm_batch=16, unet="16,32", attention=False, n_gen=1000,
                sampling_steps=5, gen_batch=250, ssl_steps=100, ssl_batch=64, arch="resnet_tiny", probe_test=1000,
                seeds="0", device="cpu", threads=1),
    "gpu": dict(n_real=60000, ddpm_steps=3000, ddpm_batch=256, unet="64,128,128", attention=True, n_gen=60000,
                sampling_steps=25, gen_batch=2000, ssl_steps=600, ssl_batch=512, arch="resnet18",
                probe_test=10000, seeds="0", device="auto", threads=0),
}


def read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: str, arr: np.ndarray) -> str:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(arr).tobytes())
    return path


def stage_table(run: str, dirname: str, sub: str | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = os.path.join(run, dirname, sub or "")
    files = sorted(f for f in os.listdir(d) if f.startswith("part-") and f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(d, f)) for f in files])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true", help="the GPU preset (one H100, <= 8 min)")
    for k, v in PRESETS["cpu"].items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v) if not isinstance(v, bool) else int, default=None,
                        help=f"cpu preset: {v}; gpu preset: {PRESETS['gpu'][k]}")
    ap.add_argument("--dup", type=float, default=10.0, help="adainf arm: real replication (paper: 10)")
    ap.add_argument("--gap-arm", action="store_true", help="also train the arm the gap mode computes")
    ap.add_argument("--ablation", action="store_true", help="also train adainf_dup_only (dup, SimCLR aug) and "
                    "weak_only (dup 1, weak aug) to separate AdaInf's two changes")
    ap.add_argument("--arms", default=None, help="comma-separated subset of arms to train (default: all enabled); "
                    "'none' is always trained as the ratio baseline")
    ap.add_argument("--reuse", action="store_true", help="keep --workdir: the pipeline resumes (nothing recomputed "
                    "when the settings are unchanged)")
    ap.add_argument("--no-filter", action="store_true", help="skip the memorisation / redundancy filter")
    ap.add_argument("--workdir", default="/tmp/adainf_effect", help="run directory (deleted first)")
    ap.add_argument("--out", default=None, help="write the report JSON here")
    a = ap.parse_args(argv)
    cfg = dict(PRESETS["gpu" if a.gpu else "cpu"])
    for k in cfg:
        v = getattr(a, k)
        if v is not None:
            cfg[k] = bool(v) if isinstance(cfg[k], bool) else v
    seeds = [int(s) for s in str(cfg["seeds"]).split(",")]
    if cfg["threads"]:  # on a shared CPU, more torch threads than free cores thrash
        torch.set_num_threads(cfg["threads"])
    print(f"[adainf] preset {'gpu' if a.gpu else 'cpu'}: {json.dumps(cfg)}  dup={a.dup}", flush=True)

    from curate.config import PipelineConfig
    from curate.eval import ProbeData, evaluate_arms
    from curate.runner import run_pipeline
    from curate.stages.inflate.adainf import NORMAL_AUG, WEAK_AUG, mixed_arm

    t_all = time.perf_counter()
    x_train = read_idx(f"{FMNIST}/train-images-idx3-ubyte.gz")
    y_train = read_idx(f"{FMNIST}/train-labels-idx1-ubyte.gz")
    x_test = read_idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")
    y_test = read_idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(0)
    ri = np.sort(rng.choice(len(x_train), min(cfg["n_real"], len(x_train)), replace=False))
    ti = np.sort(rng.choice(len(x_test), min(cfg["probe_test"], len(x_test)), replace=False))
    if not a.reuse:
        shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir, exist_ok=True)
    img = write_idx(os.path.join(a.workdir, "sub-images-idx3-ubyte.gz"), x_train[ri])
    lab = write_idx(os.path.join(a.workdir, "sub-labels-idx1-ubyte.gz"), y_train[ri])
    run = os.path.join(a.workdir, "run")
    widths = [int(c) for c in cfg["unet"].split(",")]
    stages = [
        {"stage": "ingest", "partition_size": 8192, "sources": [{"type": "idx", "images": img, "labels": lab}]},
        {"stage": "inflate.train", "steps": cfg["ddpm_steps"], "batch_size": cfg["ddpm_batch"], "lr": 1e-3 if not a.gpu
         else 5e-4, "warmup_steps": min(100, cfg["ddpm_steps"] // 10), "block_out_channels": widths,
         "layers_per_block": 1 if not a.gpu else 2, "attention": bool(cfg["attention"]), "ema_decay": 0.999,
         "checkpoint_every": 0, "device": cfg["device"], "progress": True},
        {"stage": "inflate.generate", "n_images": cfg["n_gen"], "images_per_partition": max(cfg["n_gen"] // 4, 1),
         "steps": cfg["sampling_steps"], "batch_size": cfg["gen_batch"], "device": cfg["device"],
         "filter": not a.no_filter},
        {"stage": "inflate.adainf", "mode": "paper", "dup": a.dup},
        {"stage": "inflate.adainf", "name": "adainf_gap", "mode": "gap"},
    ]
    t0 = time.perf_counter()
    summary = run_pipeline(PipelineConfig(name="adainf_effect", stages=stages), run_dir=run, scheduler="sync",
                           progress=False)
    t_pipe = time.perf_counter() - t0
    st = summary["stages"]
    train_s, gen_s = st["01_inflate_train"]["seconds"], st["02_inflate_generate"]["seconds"]
    gstats = st["02_inflate_generate"]["counters"]
    paper = stage_table(run, "03_inflate_adainf").to_pylist()[0]
    gap = stage_table(run, "04_adainf_gap").to_pylist()[0]
    print(f"[adainf] pipeline {t_pipe:.0f}s (DDPM train {train_s:.0f}s, generate+filter {gen_s:.0f}s): generated "
          f"{gstats.get('generated')}, kept {gstats.get('synthetic_added')}, rejected memorised "
          f"{gstats.get('rejected_memorised', 0)} / redundant {gstats.get('rejected_redundant', 0)} "
          f"(phash<={gstats.get('phash_threshold')}, cosine>={gstats.get('cosine_tau')})", flush=True)
    print(f"[adainf] gap: FD {gap['fd']:.4f} (real-split floor {gap['fd_real_split']:.4f}), precision "
          f"{gap['precision']:.3f}, recall {gap['recall']:.3f} -> gap rule: real x{gap['real_replication']:.2f}, "
          f"real share {gap['real_share']:.3f}, augmentation {gap['augmentation']}", flush=True)

    from curate.train.data import images_tensor

    samples = stage_table(run, "02_inflate_generate")
    syn_mask = samples.column("is_synthetic")
    real_t = samples.filter(pc.invert(syn_mask))
    syn_t = samples.filter(syn_mask)
    real = images_tensor(real_t.column("image").to_pylist(), 28, 1)
    syn = images_tensor(syn_t.column("image").to_pylist(), 28, 1)
    real_y = torch.tensor(real_t.column("label").to_pylist(), dtype=torch.long)
    np.save(os.path.join(a.workdir, "synthetic_examples.npy"), syn[:64].numpy())
    probe = ProbeData(real, real_y, torch.from_numpy(x_test[ti][:, None].copy()),
                      torch.from_numpy(y_test[ti].astype(np.int64)), source=f"fmnist real subset / test {len(ti)}")
    arms = [
        mixed_arm("none", real, syn[:0], 1.0, NORMAL_AUG, "real only, SimCLR augmentation"),
        mixed_arm("vanilla", real, syn, 1.0, NORMAL_AUG, "real + generated (dup 1), SimCLR augmentation"),
        mixed_arm("adainf", real, syn, a.dup, WEAK_AUG, f"real x{a.dup:g} + generated, weak augmentation"),
    ]
    if a.gap_arm:
        arms.append(mixed_arm("adainf_gap", real, syn, gap["real_replication"], json.loads(gap["augmentation"]),
                              "the gap mode's mix"))
    if a.ablation:
        arms.append(mixed_arm("dup_only", real, syn, a.dup, NORMAL_AUG, f"real x{a.dup:g} + generated, SimCLR aug"))
        arms.append(mixed_arm("weak_only", real, syn, 1.0, WEAK_AUG, "real + generated (dup 1), weak aug"))
    if a.arms:
        keep = set(a.arms.split(",")) | {"none"}
        arms = [x for x in arms if x.name in keep]
    train_cfg = {"steps": cfg["ssl_steps"], "batch_size": cfg["ssl_batch"], "arch": cfg["arch"],
                 "device": cfg["device"]}
    t0 = time.perf_counter()
    report = evaluate_arms(arms, probe, train_cfg, seeds=seeds, log=lambda m: print(m, flush=True))
    t_eval = time.perf_counter() - t0
    res: dict[str, dict] = {}
    for arm in arms:
        rs = [r for r in report.results if r.arm == arm.name]
        res[arm.name] = {"linear": float(np.mean([r.linear_acc for r in rs])),
                         "knn": float(np.mean([r.knn_acc for r in rs])), "n_epoch": arm.n_samples,
                         "aug": arm.train_overrides}
    base = res["none"]
    print("\narm         epoch rows   linear    kNN     linear/none  kNN/none")
    for name, r in res.items():
        print(f"{name:<11} {r['n_epoch']:>10}  {100 * r['linear']:6.2f}%  {100 * r['knn']:6.2f}%   "
              f"{r['linear'] / base['linear']:.4f}      {r['knn'] / base['knn']:.4f}")
    total = time.perf_counter() - t_all
    print(f"\n[adainf] SimCLR {cfg['ssl_steps']} steps x {cfg['ssl_batch']} per arm, seeds {seeds}; eval {t_eval:.0f}s; "
          f"total {total:.0f}s", flush=True)
    out = {"config": cfg, "dup": a.dup, "seeds": seeds, "arms": res, "generate": gstats,
           "paper": {k: paper[k] for k in ("real_replication", "real_share", "augmentation")},
           "gap": {k: gap[k] for k in ("fd", "fd_real_split", "precision", "recall", "real_replication", "real_share",
                                       "augmentation", "rule")},
           "seconds": {"ddpm_train": train_s, "generate": gen_s, "eval": round(t_eval, 1), "total": round(total, 1)},
           "per_seed": [r.__dict__ for r in report.results]}
    path = a.out or os.path.join(a.workdir, "adainf_effect.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=str)
    print(f"[adainf] report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
