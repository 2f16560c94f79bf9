"""Overhead of the ``embed`` stage over the bare model forward on the same batches.

Stage: ``Embed.process`` on a samples partition - PNG decode, resize, normalise,
forward (inference_mode, channels_last on CPU), L2-normalise, Arrow output.
Bare: the same model's forward on the same batches, already decoded and
normalised in memory (same memory format and batch size). Goal: overhead
<= 15%. Images: Fashion-MNIST t10k (28x28 gray, resized to the encoder size).

    nice python benchmarks/embed_overhead.py
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time

import numpy as np
import torch

from curate import encoders
from curate.encoders.resnet import resnet
from curate.samples import samples_from_arrays
from curate.stage import StageContext
from curate.stages.embed import Embed, EmbedParams, prepare_batch

FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def load_images(n: int) -> np.ndarray:
    with gzip.open(FMNIST, "rb") as f:
        data = f.read()
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)[:n]


def bench(name: str, params: EmbedParams, table, repeats: int) -> tuple[float, float]:
    stage = Embed(params)
    stage.setup()
    ctx = StageContext(run_dir=tempfile.mkdtemp(), stage="01_embed", stage_key="embed", partition_id="p0",
                       seed=0, on_error="raise")
    images = table.column("image").to_pylist()
    if stage.encoder is None:  # pixels: fit the PCA once on these images, outside the timing
        enc = encoders.build(params.encoder, params.options(channels=1))
        enc.fit(prepare_batch(images, enc)[0])
        stage.encoder = enc  # placed by the stage's Embedder
    enc, bs = stage.encoder, params.batch_size
    batches = []
    for b0 in range(0, len(images), bs):
        x, _, _ = prepare_batch(images[b0:b0 + bs], enc)
        t = torch.from_numpy(x)
        if stage.embedder.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        batches.append(t)

    def bare(i):
        with torch.inference_mode():
            enc.forward(batches[i])

    def staged(i):
        stage.process(table.slice(i * bs, bs), ctx)

    staged(0), bare(0)  # warm-up
    ts, tb = [], []
    for _ in range(repeats):
        s = b = 0.0
        # batch by batch, alternating which goes first: both see the same load on a shared machine
        for i in range(len(batches)):
            for fn in ((staged, bare) if i % 2 == 0 else (bare, staged)):
                t0 = time.perf_counter()
                fn(i)
                dt = time.perf_counter() - t0
                if fn is staged:
                    s += dt
                else:
                    b += dt
        ts.append(s)
        tb.append(b)
    s, b = min(ts), min(tb)
    n = table.num_rows
    print(f"{name:<28} stage {s:7.3f} s ({n / s:8.0f} img/s)   bare forward {b:7.3f} s ({n / b:8.0f} img/s)   "
          f"overhead {100 * (s - b) / b:6.1f}%", flush=True)
    return s, b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    table = samples_from_arrays(list(load_images(args.n)), source_uri=FMNIST)
    d = tempfile.mkdtemp()
    torch.manual_seed(0)
    w18 = os.path.join(d, "resnet18.pt")
    torch.save(resnet("resnet18").state_dict(), w18)
    bench("resnet18 @224, bs 32", EmbedParams(encoder="resnet18", weights=w18, batch_size=32),
          table.slice(0, min(args.n, 128)), args.repeats)
    bench("resnet18 @64, bs 128", EmbedParams(encoder="resnet18", weights=w18, image_size=64, batch_size=128),
          table.slice(0, min(args.n, 512)), args.repeats)
    bench("pixels @32 pca64, bs 256", EmbedParams(encoder="pixels", batch_size=256), table, args.repeats)

if __name__ == "__main__":
    main()
