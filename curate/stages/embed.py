"""``embed``: one L2-normalised float32 embedding per sample, batched torch inference.

The encoder (see :mod:`curate.encoders`) is built once per worker in ``setup()``.
Per partition, images are decoded, resized (bilinear) and normalised in
batches of ``batch_size``, then run through the encoder under
``torch.inference_mode`` - on CUDA with bf16 autocast (``precision: auto``), on
CPU in float32 with channels_last memory format. The encoder id (name + digest
of its weights or fitted state) and the preprocessing go in the schema
metadata of the ``embeddings`` table.

``encoder: auto`` (the default) is the checkpoint named in ``weights:`` when
there is one (its architecture read from the file), else the weight-free
``gradpix`` encoder (multi-scale pixels + signed gradient histograms + PCA),
which beats ``pixels`` on kNN label agreement on Fashion-MNIST and MNI152
slices (``benchmarks/encoder_quality.py``). The embeddings table's metadata
records the requested spec and what ``auto`` resolved to.

The weight-free ``pixels`` and ``gradpix`` encoders need a PCA fitted on data first. The fit
sample is the ``fit_samples`` sample ids with the smallest
``blake2b(fit_seed | sample_id)`` over *all* partitions, so every worker fits
the same PCA no matter how many workers there are or which partition it runs
first; the fitted matrix is cached in ``NN_embed/_fit/`` and reused.
Undecodable images go to quarantine (with their sample_id) under ``on_error``.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field, field_validator, model_validator

from curate import encoders, imaging, io, schemas
from curate.config import StageParams
from curate.encoders.base import Encoder, EncoderOptions
from curate.errors import ConfigError, SampleError
from curate.stage import Stage, StageContext

FIT_DIR = "_fit"
FITTED = ("pixels", "gradpix")  # encoders whose PCA is fitted on the run's own images


class EmbedParams(StageParams):
    encoder: str = Field("auto", description="encoder spec: auto (weights: if given, else gradpix) | gradpix | "
                                             "pixels | resnet18 | resnet50 | ssl | random_cnn | timm:<arch> | "
                                             "open_clip:<arch> | hf:<dir> | onnx:<path>")
    weights: str | None = Field(None, description="local checkpoint for auto/resnet*/ssl/timm/open_clip "
                                                  "(.pt/.pth/.safetensors; a transformers folder or .onnx for auto)")
    image_size: int | None = Field(None, ge=8, le=4096, description="input size; default: the encoder's own")
    channels: Literal[1, 3] | None = Field(None, description="pixels/gradpix/random_cnn input channels; default: 3 "
                                                            "if any image is RGB else 1 (pixels, gradpix), 3 (random_cnn)")
    dim: int | None = Field(None, ge=2, le=4096, description="pixels/gradpix: number of PCA components (default "
                                                             "64 for pixels, 128 for gradpix)")
    whiten: bool = Field(False, description="pixels/gradpix: PCA whitening")
    fit_samples: int = Field(10000, ge=2, description="pixels/gradpix: images in the PCA fit sample")
    fit_seed: int = Field(0, description="pixels/gradpix: seed of the fit sample; random_cnn: init seed")
    batch_size: int = Field(256, ge=1, le=65536)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU")

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str) -> str:
        try:
            encoders.parse(v)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return v

    @model_validator(mode="after")
    def _weights_present(self) -> "EmbedParams":
        name, arg = encoders.parse(self.encoder)
        if name == "auto" and self.weights and not os.path.exists(os.path.expanduser(self.weights)):
            raise ValueError(f"weights '{self.weights}' not found (encoder auto: a local file or directory)")
        if name in ("resnet18", "resnet50", "timm", "open_clip") or (name == "ssl" and not arg):
            if not self.weights:
                raise ValueError(f"encoder '{self.encoder}' needs `weights: /path/to/checkpoint` (nothing is "
                                 f"downloaded); use `encoder: pixels` for a weight-free embedding")
            if not os.path.isfile(os.path.expanduser(self.weights)):
                raise ValueError(f"weights file '{self.weights}' not found")
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("precision fp16 needs device cuda; use fp32 or bf16 on CPU")
        return self

    def options(self, channels: int | None = None) -> EncoderOptions:
        return EncoderOptions(weights=self.weights, image_size=self.image_size, dim=self.dim, whiten=self.whiten,
                              channels=channels or self.channels, seed=self.fit_seed)


def prepare_batch(images: list[bytes], enc: Encoder) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Decode + resize + normalise PNG bytes to (n_ok, C, S, S) float32; return bad (index, message) too."""
    size, c = enc.image_size, enc.channels
    out = np.empty((len(images), c, size, size), np.float32)
    ok, bad = [], []
    for i, data in enumerate(images):
        try:
            a = imaging.decode_resize(data, size, c)
        except Exception as err:  # noqa: BLE001 - any undecodable image is one bad sample
            bad.append((i, f"{type(err).__name__}: {err}"))
            continue
        out[len(ok)] = a.transpose(2, 0, 1) if c == 3 else a[None]
        ok.append(i)
    x = out[: len(ok)]
    x *= 1.0 / 255.0
    mean = np.asarray(enc.mean, np.float32).reshape(1, c, 1, 1)
    std = np.asarray(enc.std, np.float32).reshape(1, c, 1, 1)
    x -= mean
    x /= std
    return x, ok, bad


class Embed(Stage):
    key = "embed"
    version = "1"
    Params = EmbedParams
    inputs = ("samples",)
    outputs = ("embeddings",)

    def setup(self) -> None:
        p: EmbedParams = self.params
        if p.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("embed: device cuda requested but no CUDA device is visible; use device: auto")
        self.device = torch.device("cuda" if p.device != "cpu" and torch.cuda.is_available() else "cpu")
        prec = p.precision if p.precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
        self.precision = prec
        self.encoder: Encoder | None = None
        if not self._needs_data():
            self.encoder = self._place(encoders.build(p.encoder, p.options()))

    def _needs_data(self) -> bool:
        p: EmbedParams = self.params
        name = encoders.parse(p.encoder)[0]
        if name == "auto":
            name = encoders.parse(encoders.resolve_auto(p.weights))[0]
        return name in FITTED

    def _place(self, enc: Encoder) -> Encoder:
        enc.to(self.device)
        if self.device.type == "cpu" and enc.module is not None and any(
                isinstance(m, torch.nn.Conv2d) for m in enc.module.modules()):
            enc.module.to(memory_format=torch.channels_last)
            self.channels_last = True
        else:
            self.channels_last = False
        return enc

    # ---- fit (pixels) --------------------------------------------------------------
    def _fit_sample(self, ctx: StageContext) -> tuple[list[str], list[tuple[str, int]], int]:
        """Seeded, partition-independent sample: ids with the smallest blake2b(fit_seed|id)."""
        p: EmbedParams = self.params
        keys, where, any_rgb = [], [], False
        for pid in ctx.partition_ids("samples"):
            t = ctx.read("samples", pid, columns=["sample_id", "channels"])
            if t is None:
                continue
            ids = t.column("sample_id").to_pylist()
            any_rgb = any_rgb or bool(np.any(t.column("channels").to_numpy() == 3))
            for i, sid in enumerate(ids):
                h = hashlib.blake2b(f"{p.fit_seed}|{sid}".encode(), digest_size=8).digest()
                keys.append((h, sid))
                where.append((pid, i))
        order = sorted(range(len(keys)), key=keys.__getitem__)[: p.fit_samples]
        return [keys[i][1] for i in order], [where[i] for i in order], 3 if any_rgb else 1

    def _fit(self, ctx: StageContext) -> Encoder:
        p: EmbedParams = self.params
        ids, where, auto_c = self._fit_sample(ctx)
        enc = encoders.build(p.encoder, p.options(channels=p.channels or auto_c))
        key = hashlib.sha256(json.dumps([enc.name, p.fit_seed, ids]).encode()).hexdigest()[:16]
        cache = io.join(ctx.run_dir, ctx.stage, FIT_DIR, f"{enc.name.split('-')[0]}-{key}.npz")
        if io.exists(cache):
            fs, path = io.fs_and_path(cache)
            with fs.open(path, "rb") as f:
                z = np.load(_io.BytesIO(f.read()), allow_pickle=False)
            enc.set_state(z["A"], z["b"], int(z["components"]))
            enc.fit_samples = int(z["fit_samples"])
            return self._place(enc)
        by_pid: dict[str, list[int]] = {}
        for pid, i in where:
            by_pid.setdefault(pid, []).append(i)
        imgs: dict[tuple[str, int], bytes] = {}
        for pid, rows in by_pid.items():
            col = ctx.read("samples", pid, columns=["image"]).column("image")
            for i in rows:
                imgs[(pid, i)] = col[i].as_py()
        x, _, _ = prepare_batch([imgs[w] for w in where], enc)
        enc.fit(x)
        buf = _io.BytesIO()
        np.savez(buf, **enc.state())
        io._atomic_write(cache, lambda f: f.write(buf.getvalue()))
        ctx.count("pca_fits")
        return self._place(enc)

    # ---- per partition ----------------------------------------------------------------
    def output_schemas(self) -> dict[str, pa.Schema]:
        enc = self.encoder
        if enc is None:  # before the fit: width is known, id is not
            p: EmbedParams = self.params
            return {"embeddings": schemas.embeddings_schema(p.dim or encoders.build(
                encoders.resolve_auto(None) if encoders.parse(p.encoder)[0] == "auto" else p.encoder,
                p.options(channels=1)).dim)}
        meta = {"encoder": enc.id, "encoder_spec": self.params.encoder,
                "preprocessing": json.dumps(enc.preprocessing(), sort_keys=True),
                "device": self.device.type, "precision": self.precision}
        if enc.resolved_from == "auto":
            meta["auto_resolved"] = enc.name
        return {"embeddings": schemas.embeddings_schema(enc.dim, meta)}

    def embed_arrays(self, x: np.ndarray) -> np.ndarray:
        """Normalised (N, C, S, S) -> L2-normalised float32 (N, dim)."""
        enc = self.encoder
        t = torch.from_numpy(x).to(self.device, non_blocking=True)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    y = enc.forward(t)
            else:
                y = enc.forward(t)
            y = torch.nn.functional.normalize(y.float().reshape(len(x), -1), dim=1, eps=1e-12)
        return y.cpu().numpy()

    def process(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        if self.encoder is None:
            self.encoder = self._fit(ctx)
        enc, bs = self.encoder, self.params.batch_size
        ids = table.column("sample_id").to_pylist()
        images = table.column("image")
        out_ids, chunks = [], []
        for b0 in range(0, table.num_rows, bs):
            x, ok, bad = prepare_batch(images.slice(b0, bs).to_pylist(), enc)
            for i, msg in bad:
                r = b0 + i
                ctx.sample_error(SampleError("decode_error", msg), table.column("source_uri")[r].as_py(),
                                 table.column("source_index")[r].as_py(), ids[r])
            if ok:
                emb = self.embed_arrays(x)
                if not np.isfinite(emb).all():
                    raise ConfigError(f"encoder {enc.id} produced NaN/inf embeddings; check the weights / precision")
                chunks.append(emb)
                out_ids += [ids[b0 + i] for i in ok]
        dim = enc.dim
        flat = np.concatenate(chunks).reshape(-1) if chunks else np.zeros(0, np.float32)
        ctx.count("embedded", len(out_ids))
        schema = self.output_schemas()["embeddings"]
        return pa.Table.from_arrays(
            [pa.array(out_ids, pa.string()), pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)],
            schema=schema)
