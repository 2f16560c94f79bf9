"""``Embedder``: the one encoder service of a run, shared by ``embed`` and the inflate stages.

It is built from the ``embed`` stage's keys (encoder spec, ``auto`` included, weights, dim,
image size, channels, device, precision, batch size) and owns everything between PNG bytes and
L2-normalised float32 embeddings: the encoder, its placement (device; channels_last for conv nets
on CPU), the autocast precision, and - for the weight-free ``pixels`` / ``gradpix`` encoders - the
PCA fitted on the run's own images.

The fit sample is the ``fit_samples`` sample ids with the smallest ``blake2b(fit_seed | sample_id)``
over all partitions, so every worker fits the same projection. :meth:`Embedder.fit_run` caches the
fitted state in ``<stage dir>/_fit/<name>-<key>.npz`` and writes ``<stage dir>/_fit/embedder.json``
(the keys, the encoder id, the state file). :meth:`Embedder.from_run` reads that record back, so a
later stage (``inflate.generate``'s near-copy test, ``inflate.adainf``'s gap) embeds with the very
encoder and fitted projection whose vectors are in the run's ``embeddings`` table instead of
refitting on another sample.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
from typing import Any, Iterable

import numpy as np
import torch

from curate import encoders, imaging, io
from curate.encoders.base import Encoder, EncoderOptions
from curate.errors import ConfigError

FIT_DIR = "_fit"
RECORD = "embedder.json"
FITTED = ("pixels", "gradpix")  # encoders whose PCA is fitted on the run's own images
KEYS = ("encoder", "weights", "image_size", "channels", "dim", "whiten", "fit_samples", "fit_seed", "batch_size",
        "device", "precision")


def prepare_batch(images: list[bytes], enc: Encoder) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Decode + resize (:func:`curate.imaging.decode_resize`) + normalise PNG bytes to (n_ok, C, S, S)
    float32 for ``enc``; also the indices decoded and the undecodable (index, message)."""
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


class Embedder:
    """Encoder + placement + precision + fitted projection: PNG bytes to L2-normalised (N, dim)."""

    def __init__(self, encoder: str = "auto", weights: str | None = None, image_size: int | None = None,
                 channels: int | None = None, dim: int | None = None, whiten: bool = False,
                 fit_samples: int = 10000, fit_seed: int = 0, batch_size: int = 256, device: str = "auto",
                 precision: str = "auto"):
        self.keys: dict[str, Any] = {"encoder": encoder, "weights": weights, "image_size": image_size,
                                     "channels": channels, "dim": dim, "whiten": whiten, "fit_samples": fit_samples,
                                     "fit_seed": fit_seed, "batch_size": batch_size, "device": device,
                                     "precision": precision}
        self.spec, self.batch_size, self.fit_samples, self.fit_seed = encoder, batch_size, fit_samples, fit_seed
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("embed: device cuda requested but no CUDA device is visible; use device: auto")
        self.device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
        prec = precision if precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
        self.precision = prec
        self.channels_last = False
        self.encoder: Encoder | None = None
        self.state_file: str | None = None  # the fitted state's file name in _fit/ (fitted encoders)
        if not self.needs_fit:
            self.encoder = self._place(encoders.build(encoder, self.options()))

    @classmethod
    def from_params(cls, params: Any) -> "Embedder":
        """From the ``embed`` stage's params (or any object with its keys)."""
        return cls(**{k: getattr(params, k) for k in KEYS})

    def options(self, channels: int | None = None) -> EncoderOptions:
        k = self.keys
        return EncoderOptions(weights=k["weights"], image_size=k["image_size"], dim=k["dim"], whiten=k["whiten"],
                              channels=channels or k["channels"], seed=k["fit_seed"])

    @property
    def needs_fit(self) -> bool:
        name = encoders.parse(self.spec)[0]
        if name == "auto":
            name = encoders.parse(encoders.resolve_auto(self.keys["weights"]))[0]
        return name in FITTED

    @property
    def id(self) -> str:
        if self.encoder is None:
            raise ConfigError(f"encoder '{self.spec}' is not fitted yet")
        return self.encoder.id

    def _place(self, enc: Encoder) -> Encoder:
        enc.to(self.device)
        self.channels_last = self.device.type == "cpu" and enc.module is not None and any(
            isinstance(m, torch.nn.Conv2d) for m in enc.module.modules())
        if self.channels_last:
            enc.module.to(memory_format=torch.channels_last)
        return enc

    # ---- the fit -------------------------------------------------------------------------
    def fit_sample(self, ctx, table: str = "samples") -> tuple[list[str], list[tuple[str, int]], int]:
        """Seeded, partition-independent sample: ids with the smallest blake2b(fit_seed|id); their
        (partition, row) and 3 if any image of ``table`` is RGB else 1."""
        keys, where, any_rgb = [], [], False
        for pid in ctx.partition_ids(table):
            t = ctx.read(table, pid, columns=["sample_id", "channels"])
            if t is None:
                continue
            ids = t.column("sample_id").to_pylist()
            any_rgb = any_rgb or bool(np.any(t.column("channels").to_numpy() == 3))
            for i, sid in enumerate(ids):
                h = hashlib.blake2b(f"{self.fit_seed}|{sid}".encode(), digest_size=8).digest()
                keys.append((h, sid))
                where.append((pid, i))
        order = sorted(range(len(keys)), key=keys.__getitem__)[: self.fit_samples]
        return [keys[i][1] for i in order], [where[i] for i in order], 3 if any_rgb else 1

    def fit_run(self, ctx, table: str = "samples") -> Encoder:
        """Fit (or load the cached fit from ``<ctx.stage>/_fit/``) on the run's seeded fit sample."""
        ids, where, auto_c = self.fit_sample(ctx, table)
        enc = encoders.build(self.spec, self.options(channels=self.keys["channels"] or auto_c))
        key = hashlib.sha256(json.dumps([enc.name, self.fit_seed, ids]).encode()).hexdigest()[:16]
        name = f"{enc.name.split('-')[0]}-{key}.npz"
        cache = io.join(ctx.run_dir, ctx.stage, FIT_DIR, name)
        if io.exists(cache):
            _load_state(enc, cache)
        else:
            by_pid: dict[str, list[int]] = {}
            for pid, i in where:
                by_pid.setdefault(pid, []).append(i)
            imgs: dict[tuple[str, int], bytes] = {}
            for pid, rows in by_pid.items():
                col = ctx.read(table, pid, columns=["image"]).column("image")
                for i in rows:
                    imgs[(pid, i)] = col[i].as_py()
            x, _, _ = prepare_batch([imgs[w] for w in where], enc)
            enc.fit(x)
            buf = _io.BytesIO()
            np.savez(buf, **enc.state())
            io._atomic_write(cache, lambda f: f.write(buf.getvalue()))
            ctx.count("pca_fits")
        self.state_file = name
        self.encoder = self._place(enc)
        return self.encoder

    def fit_images(self, images: list[bytes], channels: int) -> "Embedder":
        """Fit on a ``fit_seed``-seeded sample of ``images`` (when no run fit is there to share)."""
        if self.encoder is None:
            enc = encoders.build(self.spec, self.options(channels=self.keys["channels"] or channels))
            rng = np.random.default_rng(self.fit_seed)
            pick = rng.choice(len(images), min(self.fit_samples, len(images)), replace=False)
            x, _, _ = prepare_batch([images[i] for i in np.sort(pick)], enc)
            enc.fit(x)
            self.encoder = self._place(enc)
        return self

    # ---- the record shared with later stages ---------------------------------------------
    def record(self) -> dict[str, Any]:
        return {"keys": self.keys, "encoder_id": self.id, "state_file": self.state_file}

    def save_record(self, run_dir: str, stage_dir: str) -> None:
        """Write ``<stage_dir>/_fit/embedder.json`` (same bytes from every worker; kept when unchanged)."""
        path = io.join(run_dir, stage_dir, FIT_DIR, RECORD)
        data = json.dumps(self.record(), sort_keys=True, indent=1).encode()
        if not io.exists(path) or io.read_json(path) != json.loads(data):
            io._atomic_write(path, lambda f: f.write(data))

    @classmethod
    def from_run(cls, ctx, table: str = "embeddings") -> "Embedder | None":
        """The embedder of the latest upstream stage that wrote ``table`` with a saved record, fitted
        state loaded (None when there is none): same encoder id as the vectors of that table."""
        for up in reversed(ctx.producers(table)):
            path = io.join(ctx.run_dir, up.dirname, FIT_DIR, RECORD)
            if not io.exists(path):
                continue
            rec = io.read_json(path)
            emb = cls(**rec["keys"])
            if emb.encoder is None:
                if not rec.get("state_file"):
                    continue
                enc = encoders.build(emb.spec, emb.options(channels=_fitted_channels(rec, emb)))
                _load_state(enc, io.join(ctx.run_dir, up.dirname, FIT_DIR, rec["state_file"]))
                emb.state_file = rec["state_file"]
                emb.encoder = emb._place(enc)
            made_with = rec["encoder_id"]
            pids = io.list_partitions(ctx.run_dir, up.dirname, None if table == up.outputs[0] else table)
            if pids:  # the table's own metadata names the encoder that made its vectors
                t = ctx.read_from(up, table, pids[0], columns=["sample_id"])
                made_with = (t.schema.metadata or {}).get(b"encoder", made_with.encode()).decode()
            if emb.id != rec["encoder_id"] or emb.id != made_with:
                raise ConfigError(f"{up.dirname}: the saved encoder state gives {emb.id}, the run's {table} were "
                                  f"made with {made_with}; rerun embed")
            return emb
        return None

    @classmethod
    def for_stage(cls, ctx, params: Any | None, images: list[bytes], channels: int) -> "Embedder":
        """What a later stage embeds with: the run's ``embed`` embedder (:meth:`from_run`) when ``params``
        is None or has its keys; else one built from ``params`` (None: the defaults) and, for a fitted
        encoder, fitted on ``images`` (:meth:`fit_images`)."""
        run = cls.from_run(ctx)
        if run is not None and (params is None or {k: getattr(params, k) for k in KEYS} == run.keys):
            return run
        emb = cls.from_params(params) if params is not None else cls()
        return emb.fit_images(images, channels) if emb.encoder is None else emb

    # ---- embedding -------------------------------------------------------------------------
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

    def batches(self, images: Any) -> Iterable[tuple[int, np.ndarray | None, list[int], list[tuple[int, str]]]]:
        """Per ``batch_size`` chunk of ``images`` (PNG bytes: a list or an Arrow column): (start, embeddings
        of the decoded or None, their indices in the chunk, undecodable (index in the chunk, message))."""
        for b0 in range(0, len(images), self.batch_size):
            chunk = images[b0:b0 + self.batch_size]
            x, ok, bad = prepare_batch(chunk.to_pylist() if hasattr(chunk, "to_pylist") else chunk, self.encoder)
            emb = None
            if ok:
                emb = self.embed_arrays(x)
                if not np.isfinite(emb).all():
                    raise ConfigError(f"encoder {self.id} produced NaN/inf embeddings; check the weights / precision")
            yield b0, emb, ok, bad

    def __call__(self, images: list[bytes]) -> np.ndarray:
        """(N, dim) float32 for PNG bytes that must all decode."""
        out = []
        for _, emb, _, bad in self.batches(images):
            if bad:
                raise ConfigError(f"{len(bad)} images could not be decoded for embedding: {bad[0][1]}")
            out.append(emb)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.encoder.dim), np.float32)


def _load_state(enc: Encoder, path: str) -> None:
    fs, p = io.fs_and_path(path)
    with fs.open(p, "rb") as f:
        z = np.load(_io.BytesIO(f.read()), allow_pickle=False)
    enc.set_state(z["A"], z["b"], int(z["components"]))
    enc.fit_samples = int(z["fit_samples"])


def _fitted_channels(rec: dict[str, Any], emb: Embedder) -> int | None:
    """Channels of a fitted encoder from its recorded id (``...-g-...`` gray, ``...-c-...`` colour)."""
    if emb.keys["channels"]:
        return emb.keys["channels"]
    parts = rec["encoder_id"].split("@")[0].split("-")
    return 3 if "c" in parts else 1
