"""Peak RSS of the *driver* process alone (not the Dask workers) on an N-image Fashion-MNIST run.

Builds an ``.npz`` with the first N Fashion-MNIST training images (Debian's
``dataset-fashion-mnist``), runs ``pipelines/fashion_mnist.yaml`` on it with that
source (``--stages ingest-shard``: only its first and last stage), then reruns
with nothing to do (the driver's fixed cost: CLI, imports, the embedded cluster's
scheduler), then with only the ``shard`` stage invalidated (``--set
shard.dataset_name=...``): the driver's peak while it runs the shard stage.
Sampled every 0.1 s with psutil, the driver process only.

    python benchmarks/shard_driver_rss.py --n 20000 --work /tmp/shard_rss
    python benchmarks/shard_driver_rss.py --n 60000 --stages ingest-shard --work /tmp/shard_rss60
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import yaml

FMNIST = "/usr/share/datasets/fashion-mnist"
HERE = os.path.dirname(os.path.abspath(__file__))


def _idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def run(cmd: list[str]) -> tuple[int, float, int, int]:
    """(exit code, wall s, driver peak RSS, process-tree peak RSS)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    ps = psutil.Process(proc.pid)
    drv = tree = 0
    while proc.poll() is None:
        try:
            d = ps.memory_info().rss
            t = d + sum(c.memory_info().rss for c in ps.children(recursive=True))
        except psutil.Error:
            d = t = 0
        drv, tree = max(drv, d), max(tree, t)
        time.sleep(0.1)
    return proc.returncode, time.perf_counter() - t0, drv, tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--work", default="/tmp/shard_rss")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stages", choices=["full", "ingest-shard"], default="full",
                    help="the whole Fashion-MNIST pipeline, or only its ingest and shard stages")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    npz = os.path.join(a.work, f"fmnist_{a.n}.npz")
    if not os.path.exists(npz):
        img = _idx(f"{FMNIST}/train-images-idx3-ubyte.gz")[:a.n]
        lab = _idx(f"{FMNIST}/train-labels-idx1-ubyte.gz")[:a.n]
        np.savez(npz, train_images=img, train_labels=lab)
    with open(os.path.join(HERE, "..", "pipelines", "fashion_mnist.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["stages"][0]["sources"] = [{"type": "npz", "path": npz}]
    cfg["stages"][0]["partition_size"] = 4096
    cfg["name"] = f"fashion_mnist_{a.n}"
    if a.stages == "ingest-shard":
        cfg["stages"] = [cfg["stages"][0], cfg["stages"][-1]]
    pipe = os.path.join(a.work, "pipeline.yaml")
    with open(pipe, "w") as f:
        yaml.safe_dump(cfg, f)
    run_dir = os.path.join(a.work, "run")
    curate = os.path.join(os.path.dirname(sys.executable), "curate")
    base = [curate, "run", pipe, "--run-dir", run_dir, "--quiet", "--no-card", "--workers", str(a.workers)]
    rc, wall, drv, tree = run(base + ["--force"])
    print(f"{a.stages} pipeline, {a.n} images: exit {rc}; wall {wall:.1f} s; driver peak RSS {drv / 2**20:.0f} MiB; "
          f"process tree {tree / 2**20:.0f} MiB")
    rc, wall, drv, tree = run(base)
    print(f"nothing to do (rerun): exit {rc}; wall {wall:.1f} s; driver peak RSS {drv / 2**20:.0f} MiB "
          f"(the driver's fixed cost: CLI, imports, embedded cluster)")
    rc, wall, drv, tree = run(base + ["--set", f"shard.dataset_name=rss-{time.time_ns()}"])
    summary = json.load(open(os.path.join(run_dir, "summary.json"))) if rc == 0 else {}
    sh = {k: v for k, v in summary.get("stages", {}).items() if k.endswith("_shard")}
    print(f"shard stage only (rerun): exit {rc}; wall {wall:.1f} s; driver peak RSS {drv / 2**20:.0f} MiB; "
          f"process tree {tree / 2**20:.0f} MiB; stage {json.dumps({k: (v['seconds'], v['counters']) for k, v in sh.items()})}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
