"""Loader throughput: curate's ShardLoader vs an ImageFolder-style PNG-file DataLoader vs bare pyarrow.

Same images (Fashion-MNIST, first ``--n``), same batch size and worker count.

* folder  - what ``torchvision.datasets.ImageFolder`` + its PIL loader + ``ToTensor`` do
  (torchvision is not installed here, so re-implemented exactly: sorted class
  folders, ``Image.open(f).convert("RGB")``, uint8 HWC -> float CHW / 255),
  ``DataLoader(shuffle=True)`` with default collate.
* pyarrow - ``ParquetFile.iter_batches`` over the shards + PIL decode, one process.
* curate  - ``ShardLoader(ShardDataset(index.json))`` (sha256 check included).

Also times the shard writer against a bare ``pyarrow.parquet.write_table`` of
the same table (goal >= 0.8x), and with ``--gpu`` a ResNet-18 SimCLR step fed
by the loader (augmentations on the device), reporting the GPU busy share.

    python benchmarks/loader_speed.py --n 20000 --workers 2 --batch 256 [--gpu]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

FMNIST = "/usr/share/datasets/fashion-mnist"


def load_idx(n: int) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(f"{FMNIST}/train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{FMNIST}/train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x[:n], y[:n].astype(np.int64)


class FolderDataset(Dataset):
    """torchvision ImageFolder + default_loader (PIL) + ToTensor, re-implemented."""

    def __init__(self, root: str):
        classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        return x.float().div(255), target


def write_folder(x: np.ndarray, y: np.ndarray, root: str) -> None:
    for c in np.unique(y):
        os.makedirs(os.path.join(root, str(c)), exist_ok=True)
    for i, (a, c) in enumerate(zip(x, y)):
        Image.fromarray(a).save(os.path.join(root, str(c), f"{i:06d}.png"), compress_level=1)


def cpu_now() -> float:
    """CPU seconds of this process (all threads) + its reaped children (DataLoader workers)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def time_epoch(it) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds incl. worker processes, samples) of one pass."""
    t0, c0 = time.perf_counter(), cpu_now()
    n = 0
    for b in it:
        n += len(b["image"]) if isinstance(b, dict) else len(b[0])
    del it  # workers exit and are reaped: their CPU time is counted
    return time.perf_counter() - t0, cpu_now() - c0, n


def bare_pyarrow(index_dir: str, batch: int) -> tuple[float, float, int]:
    import json
    index = json.load(open(os.path.join(index_dir, "index.json")))
    t0, c0 = time.perf_counter(), cpu_now()
    n = 0
    for s in index["shards"]:
        for rb in pq.ParquetFile(os.path.join(index_dir, s["path"])).iter_batches(batch_size=batch,
                                                                                  columns=["image", "label"]):
            imgs = [np.asarray(Image.open(io.BytesIO(b))) for b in rb.column(0).to_pylist()]
            t = torch.from_numpy(np.stack(imgs))
            n += len(t)
    return time.perf_counter() - t0, cpu_now() - c0, n


def bench_write(table, tmp: str, reps: int = 5) -> tuple[float, float, float, float]:
    """Best-of-reps (wall, CPU) of a bare write_table and of curate's write_shards, interleaved."""
    from curate.stages.shard import write_shards
    bare, ours, bare_c, ours_c = [], [], [], []
    for r in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        pq.write_table(table, os.path.join(tmp, f"bare{r}.parquet"), compression="zstd")
        bare.append(time.perf_counter() - t0)
        bare_c.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        write_shards(table, os.path.join(tmp, f"w{r}"), shuffle=True, max_rows=16384)
        ours.append(time.perf_counter() - t0)
        ours_c.append(time.process_time() - c0)
    return min(bare), min(ours), min(bare_c), min(ours_c)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def gpu_step_bench(index_dir: str, batch: int, workers: int, steps: int, device: str = "cuda") -> None:
    from curate.load import ShardDataset, ShardLoader, SimCLRAugment
    from curate.train.losses import contrastive_loss
    from curate.train.model import SimCLRNet

    dev = torch.device(device)
    model = SimCLRNet("resnet18", in_channels=3).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    aug = SimCLRAugment(32, generator=torch.Generator(device=dev).manual_seed(0))
    loader = ShardLoader(ShardDataset(index_dir, seed=0), batch_size=batch, num_workers=workers, device=dev,
                         drop_last=True, persistent_workers=True, prefetch_factor=4)

    def step(b):
        x = b["image"].float().div_(255).expand(-1, 3, -1, -1)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            z1, z2 = model(aug(x).contiguous(memory_format=torch.channels_last)), model(aug(x).contiguous(memory_format=torch.channels_last))
            loss = contrastive_loss(z1.float(), z2.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # compute-only time per step on a resident batch
    it = iter(loader)
    first = next(it)
    reps = 20 if dev.type == "cuda" else 2
    for _ in range(min(5, reps)):
        step(first)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        step(first)
    _sync(dev)
    compute = (time.perf_counter() - t0) / reps
    # fed by the loader
    done = 0
    _sync(dev)
    t0 = time.perf_counter()
    while done < steps:
        for b in loader:
            step(b)
            done += 1
            if done >= steps:
                break
    _sync(dev)
    fed = (time.perf_counter() - t0) / done
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (smoke run)"
    print(f"gpu: {name}  ResNet-18 SimCLR step (batch {batch}, 2 views 32x32, bf16): "
          f"compute-only {compute * 1e3:.1f} ms, loader-fed {fed * 1e3:.1f} ms/step, "
          f"GPU busy share {min(1.0, compute / fed):.2%}, {batch / fed:.0f} samples/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed per loader (best is reported)")
    ap.add_argument("--gpu", action="store_true", help="time a ResNet-18 SimCLR step fed by the loader")
    ap.add_argument("--gpu-steps", type=int, default=200)
    ap.add_argument("--gpu-device", default="cuda", help="'cpu' runs the --gpu code path on CPU (smoke test)")
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()

    from curate.load import ShardDataset, ShardLoader
    from curate.samples import samples_from_arrays
    from curate.stages.shard import build_shard_table, write_shards

    tmp = args.tmp or tempfile.mkdtemp(prefix="curate_loader_")
    x, y = load_idx(args.n)
    t0 = time.perf_counter()
    table = build_shard_table(samples_from_arrays(list(x), source_uri="fmnist", label=list(y)), None)
    print(f"{args.n} Fashion-MNIST images encoded to PNG in {time.perf_counter() - t0:.1f} s")
    shard_dir = os.path.join(tmp, "shards")
    write_shards(table, shard_dir, max_rows=8192)
    folder = os.path.join(tmp, "folder")
    if not os.path.isdir(folder):
        write_folder(x, y, folder)

    bare_w, ours_w, bare_c, ours_c = bench_write(table, tmp)
    mb = table.nbytes / 1e6
    print(f"write  bare pq.write_table: {mb / bare_w:7.1f} MB/s   curate write_shards (shuffle + cut + sha256): "
          f"{mb / ours_w:7.1f} MB/s   ratio {bare_w / ours_w:.2f}x wall, {bare_c / ours_c:.2f}x CPU (goal >= 0.8x)")

    res, cpu = {}, {}

    def record(name: str, sec: float, c: float, n: int) -> None:
        assert n == args.n, (name, n)
        res[name] = max(res.get(name, 0.0), args.n / sec)
        cpu[name] = max(cpu.get(name, 0.0), args.n / c)

    for ep in range(args.epochs):  # interleaved, so load spikes hit every loader alike
        for name in ("folder", "pyarrow", "curate"):
            if name == "folder":
                dl = DataLoader(FolderDataset(folder), batch_size=args.batch, shuffle=True, num_workers=args.workers)
                record(name, *time_epoch(dl))
            elif name == "pyarrow":
                record(name, *bare_pyarrow(shard_dir, args.batch))
            else:
                ld = ShardLoader(ShardDataset(shard_dir, seed=0, epoch=ep), batch_size=args.batch,
                                 num_workers=args.workers, device="cpu")
                record(name, *time_epoch(ld))
    # then persistent workers, kept across epochs (wall time only: their CPU time is not reaped per epoch);
    # measured after the others so their idle processes do not sit beside the fresh-worker runs
    persistent = {
        "folder_persistent": DataLoader(FolderDataset(folder), batch_size=args.batch, shuffle=True,
                                        num_workers=args.workers, persistent_workers=args.workers > 0),
        "curate_persistent": ShardLoader(ShardDataset(shard_dir, seed=0), batch_size=args.batch,
                                         num_workers=args.workers, device="cpu", persistent_workers=True),
    }
    for ep in range(args.epochs):
        for name, loader in persistent.items():
            record(name, *time_epoch(loader))
    del persistent
    w = args.workers
    print(f"read   folder (ImageFolder+PIL, {w} workers): {res['folder']:9.0f} samples/s  {cpu['folder']:8.0f} per CPU-s")
    print(f"read   bare pyarrow iter_batches + PIL (1 process): {res['pyarrow']:9.0f} samples/s  "
          f"{cpu['pyarrow']:8.0f} per CPU-s")
    print(f"read   curate ShardLoader ({w} workers): {res['curate']:9.0f} samples/s  {cpu['curate']:8.0f} per CPU-s")
    print(f"       curate / folder = {res['curate'] / res['folder']:.2f}x wall, {cpu['curate'] / cpu['folder']:.2f}x "
          f"per CPU-second (goal >= 3x); curate / bare pyarrow = {res['curate'] / res['pyarrow']:.2f}x wall")
    print(f"read   persistent workers, best epoch: folder {res['folder_persistent']:9.0f} samples/s, curate "
          f"{res['curate_persistent']:9.0f} samples/s = {res['curate_persistent'] / res['folder_persistent']:.2f}x wall")
    if args.gpu:
        if args.gpu_device == "cuda" and not torch.cuda.is_available():
            print("gpu: skipped (no CUDA device)")
        else:
            gpu_step_bench(shard_dir, args.batch, args.workers, args.gpu_steps, args.gpu_device)
    if args.tmp is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
