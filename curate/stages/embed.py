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
first; the fitted matrix is cached in ``NN_embed/_fit/`` and reused. The stage runs
through :class:`curate.encoders.embedder.Embedder`, whose record in ``_fit/embedder.json``
lets the inflate stages embed with this very encoder and fit.
Undecodable images go to quarantine (with their sample_id) under ``on_error``.
"""

from __future__ import annotations

import json
import os
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field, field_validator, model_validator

from curate import encoders, schemas
from curate.config import StageParams
from curate.encoders.base import Encoder, EncoderOptions
from curate.encoders.embedder import FIT_DIR, FITTED, Embedder, prepare_batch  # noqa: F401 - re-exported
from curate.errors import ConfigError, SampleError
from curate.stage import Stage, StageContext


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


class Embed(Stage):
    key = "embed"
    version = "1"
    Params = EmbedParams
    inputs = ("samples",)
    outputs = ("embeddings",)

    def setup(self) -> None:
        self.embedder = Embedder.from_params(self.params)
        self._ready_for: tuple[str, str] | None = None

    @property
    def encoder(self) -> Encoder | None:
        return self.embedder.encoder

    @encoder.setter
    def encoder(self, enc: Encoder) -> None:
        self.embedder.encoder = self.embedder._place(enc)

    @property
    def device(self) -> torch.device:
        return self.embedder.device

    @property
    def precision(self) -> str:
        return self.embedder.precision

    def _fit(self, ctx: StageContext) -> Encoder:
        """The fitted encoder (``pixels`` / ``gradpix``) on the run's seeded fit sample, cached in ``_fit/``."""
        return self.embedder.fit_run(ctx)

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
        return self.embedder.embed_arrays(x)

    def process(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        here = (ctx.run_dir, ctx.stage)
        if self._ready_for != here:  # once per worker and run (a cached stage instance may serve several runs)
            if self.embedder.needs_fit:
                self._fit(ctx)  # loads this run's cached fit, or fits and caches it
            self.embedder.save_record(ctx.run_dir, ctx.stage)  # what later stages (inflate) embed with
            self._ready_for = here
        enc = self.encoder
        ids = table.column("sample_id").to_pylist()
        out_ids, chunks = [], []
        for b0, emb, ok, bad in self.embedder.batches(table.column("image")):
            for i, msg in bad:
                r = b0 + i
                ctx.sample_error(SampleError("decode_error", msg), table.column("source_uri")[r].as_py(),
                                 table.column("source_index")[r].as_py(), ids[r])
            if ok:
                chunks.append(emb)
                out_ids += [ids[b0 + i] for i in ok]
        dim = enc.dim
        flat = np.concatenate(chunks).reshape(-1) if chunks else np.zeros(0, np.float32)
        ctx.count("embedded", len(out_ids))
        schema = self.output_schemas()["embeddings"]
        return pa.Table.from_arrays(
            [pa.array(out_ids, pa.string()), pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)],
            schema=schema)
