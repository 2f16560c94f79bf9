"""Training data for the contrastive loop: batches of uint8 images from anywhere.

A batch is a dict ``{"image": uint8 (B, C, H, W), "sample_weight": float (B,),
"sample_id": list[str] | None}``. Sources:

* :class:`TensorBatches` - an in-memory uint8 tensor, seeded epoch shuffles,
  resumable (``state_dict``: epoch + cursor).
* :class:`SampleBatches` - any iterable of per-sample dicts (``ShardDataset`` of
  ``curate.load``: "image" uint8 (C, H, W), "sample_weight", ...), collated;
  re-iterated epoch after epoch (``set_epoch`` when the dataset has it), resumable
  through the dataset's own ``state_dict`` when it has one.
* ``(images, weights)``: a uint8 tensor with per-sample loss weights;
* any iterable of batch dicts or bare uint8 (B, C, H, W) tensors (``ShardLoader``).

A ``ShardDataset`` / ``ShardLoader`` with ``weighting="replicate"`` already
honours ``sample_weight`` by replication, so its weights are not applied to the
loss a second time; with ``weighting="none"`` they weigh the loss.

:func:`run_samples` reads the ``samples`` table of a run directory (the kept set
after ``dedup.apply``, or what ingest produced) and :func:`images_tensor`
decodes it; :class:`NegativeBank` serves mined hard negatives (``pairs`` table).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch

from curate import imaging, io
from curate.errors import ConfigError


def _batch(images: torch.Tensor, weights: torch.Tensor | None = None, ids: list[str] | None = None) -> dict[str, Any]:
    if weights is None:
        weights = torch.ones(images.shape[0], dtype=torch.float32)
    return {"image": images, "sample_weight": weights.float(), "sample_id": ids}


class TensorBatches:
    """Endless seeded epoch-shuffled batches from uint8 images (N, C, H, W); drops the last partial batch."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0, weights: torch.Tensor | None = None,
                 ids: list[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if images.shape[0] < 2:
            raise ConfigError(f"need at least 2 images to train a contrastive model, got {images.shape[0]}")
        self.images, self.weights, self.ids = images, weights, ids
        self.batch_size = min(batch_size, images.shape[0])
        self.seed = seed
        self.epoch, self.cursor = 0, 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.images.shape[0], generator=g)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            perm = self._perm(self.epoch)
            while self.cursor + self.batch_size <= len(perm):
                idx = perm[self.cursor: self.cursor + self.batch_size]
                self.cursor += self.batch_size
                yield _batch(self.images[idx], None if self.weights is None else self.weights[idx],
                             None if self.ids is None else [self.ids[i] for i in idx.tolist()])
            self.epoch, self.cursor = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


def _replicates(ds: Any) -> bool:
    """True when the dataset already honours ``sample_weight`` by replication (ShardDataset's default):
    the loss must then not weigh the samples a second time."""
    inner = getattr(ds, "dataset", ds)
    return getattr(inner, "weighting", None) == "replicate"


def _collate(samples: list[dict[str, Any]], use_weights: bool = True) -> dict[str, Any]:
    imgs = torch.stack([torch.as_tensor(s["image"]) for s in samples])
    w = torch.tensor([float(s.get("sample_weight", 1.0) or 1.0) if use_weights else 1.0 for s in samples])
    ids = [s.get("sample_id") for s in samples]
    out = _batch(imgs, w, ids if all(i is not None for i in ids) else None)
    if "negative_image" in samples[0]:  # ShardDataset(pairs="triplet"): one mined negative per anchor
        out["negative_image"] = torch.stack([torch.as_tensor(s["negative_image"]) for s in samples])
        out["has_negative"] = torch.tensor([bool(s.get("has_negative", True)) for s in samples])
    return out


class SampleBatches:
    """Collate an iterable of per-sample dicts (e.g. ``curate.load.ShardDataset``) into batches, endlessly."""

    def __init__(self, dataset: Iterable[dict[str, Any]], batch_size: int):
        self.dataset, self.batch_size = dataset, batch_size
        self.epoch = getattr(dataset, "epoch", 0) or 0
        self.use_weights = not _replicates(dataset)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            buf, produced = [], 0
            for s in self.dataset:
                buf.append(s)
                if len(buf) == self.batch_size:
                    produced += 1
                    yield _collate(buf, self.use_weights)
                    buf = []
            if produced == 0:
                raise ConfigError(f"the dataset yielded fewer samples than one batch ({self.batch_size}) in epoch "
                                  f"{self.epoch}: use a smaller --batch-size, or pass a re-iterable dataset")
            self.epoch += 1
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.epoch)

    def state_dict(self) -> dict[str, Any]:
        inner = self.dataset.state_dict() if hasattr(self.dataset, "state_dict") else None
        return {"epoch": self.epoch, "dataset": inner}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 0))
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        if state.get("dataset") is not None and hasattr(self.dataset, "load_state_dict"):
            self.dataset.load_state_dict(state["dataset"])


class _PassThrough:
    """An iterable of batches (e.g. ``curate.load.ShardLoader``), re-iterated epoch after epoch.

    Its ``state_dict`` / ``load_state_dict`` are used for resume when it has them.
    """

    def __init__(self, it: Iterable):
        self.it = it
        self.use_weights = not _replicates(it)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            n = 0
            for b in self.it:
                n += 1
                if not isinstance(b, dict):
                    b = _batch(b)
                elif not self.use_weights and "sample_weight" in b:
                    b = {**b, "sample_weight": None}
                yield b
            if n == 0:
                raise ConfigError("the training data iterable is empty (or a one-shot iterator ran out); "
                                  "pass a re-iterable dataset or fewer --steps")

    def state_dict(self) -> Any:
        return self.it.state_dict() if hasattr(self.it, "state_dict") else None

    def load_state_dict(self, state: Any) -> None:
        if state is not None and hasattr(self.it, "load_state_dict"):
            self.it.load_state_dict(state)


def as_batches(data: Any, batch_size: int, seed: int = 0):
    """Wrap ``data`` (uint8 tensor, ShardDataset-like, iterable of batches, or a batch source) as a batch source."""
    if isinstance(data, (TensorBatches, SampleBatches, _PassThrough)):
        return data
    if isinstance(data, torch.Tensor):
        return TensorBatches(data, batch_size, seed)
    if isinstance(data, np.ndarray):
        return TensorBatches(torch.from_numpy(data), batch_size, seed)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, weights = data  # (uint8 images, per-sample loss weights)
        return TensorBatches(images, batch_size, seed, None if weights is None else torch.as_tensor(weights).float())
    it = iter(data)
    first = next(it, None)
    if first is None:
        raise ConfigError("the training data is empty")
    if it is data:  # a one-shot iterator: put the peeked element back
        data = itertools.chain([first], it)
    if isinstance(first, dict) and torch.as_tensor(first["image"]).ndim == 3:
        return SampleBatches(data, batch_size)
    return _PassThrough(data)


# ------------------------------------------------------------------ run directories
def run_context(run_dir: str):
    """A read-only :class:`StageContext` seeing every stage of the run in ``run_dir``."""
    from curate.config import build_specs
    from curate.registry import get
    from curate.stage import StageContext, Upstream

    path = io.join(run_dir, "pipeline.json")
    if not io.exists(path):
        raise ConfigError(f"'{run_dir}' is not a curate run directory (no pipeline.json); run "
                          f"`curate run PIPELINE.yaml --run-dir {run_dir}` first")
    stages = io.read_json(path)["stages"]
    upstream = tuple(Upstream(s.dirname, tuple(get(s.key).outputs)) for s in build_specs(stages))
    return StageContext(run_dir=run_dir, stage="train", stage_key="train", partition_id=None, seed=0,
                        on_error="raise", upstream=upstream)


def run_samples(run_dir: str, which: str = "kept", columns: list[str] | None = None) -> pa.Table:
    """The samples of a run: ``kept`` (the latest samples overlay, after dedup.apply) or ``ingested``."""
    ctx = run_context(run_dir)
    producers = ctx.producers("samples")
    if not producers:
        raise ConfigError(f"run '{run_dir}' has no samples table; its pipeline needs an ingest stage")
    if which == "kept":
        table = ctx.read_all("samples", columns=columns)
    elif which == "ingested":
        first = producers[0]
        parts = [io.read_parquet(io.part_path(run_dir, first.dirname, pid), columns=columns)
                 for pid in io.list_partitions(run_dir, first.dirname)]
        table = pa.concat_tables(parts) if parts else ctx.read_all("samples", columns=columns).slice(0, 0)
    else:
        raise ConfigError(f"which='{which}': use 'kept' or 'ingested'")
    if table.num_rows == 0:
        raise ConfigError(f"run '{run_dir}' has no {which} samples")
    return table


def images_tensor(images: list[bytes], size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """Decode canonical PNG bytes to uint8 (N, C, S, S); ``size`` default: the largest side present."""
    arrays = [imaging.decode_png(b) for b in images] if size is None or channels is None else images
    if not len(arrays):
        raise ConfigError("no images to decode")
    if channels is None:
        channels = 3 if any(a.ndim == 3 for a in arrays) else 1
    if size is None:
        size = max(max(a.shape[:2]) for a in arrays)
    out = np.empty((len(arrays), channels, size, size), np.uint8)
    for i, a in enumerate(arrays):
        a = imaging.decode_resize(a, size, channels)
        out[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
    return torch.from_numpy(out)


class NegativeBank:
    """Mined hard negatives (``pairs.negative_ids``) resolved to images, K per anchor.

    ``lookup(ids)`` returns uint8 (N, K, C, H, W) images and a (N, K) bool mask
    (False: the anchor has fewer than K mined negatives, or none at all).
    """

    def __init__(self, images: torch.Tensor, ids: list[str], negatives: dict[str, list[str]], k: int):
        self.images, self.k = images, k
        self.row = {sid: i for i, sid in enumerate(ids)}
        self.neg = {a: [self.row[n] for n in ns if n in self.row][:k] for a, ns in negatives.items()}

    @classmethod
    def from_tables(cls, samples: pa.Table, pairs: pa.Table, k: int, size: int | None = None,
                    channels: int | None = None) -> "NegativeBank":
        negs: dict[str, list[str]] = {}
        for a, ns in zip(pairs.column("anchor_id").to_pylist(), pairs.column("negative_ids").to_pylist()):
            if ns:
                negs.setdefault(a, []).extend(ns)
        imgs = images_tensor(samples.column("image").to_pylist(), size, channels)
        return cls(imgs, samples.column("sample_id").to_pylist(), negs, k)

    def __len__(self) -> int:
        return sum(1 for v in self.neg.values() if v)

    def lookup(self, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = len(ids), self.k
        rows = torch.zeros((n, k), dtype=torch.long)
        mask = torch.zeros((n, k), dtype=torch.bool)
        for i, sid in enumerate(ids):
            r = self.neg.get(sid, [])
            rows[i, : len(r)] = torch.tensor(r, dtype=torch.long) if r else rows[i, :0]
            mask[i, : len(r)] = True
        return self.images[rows.flatten()].view(n, k, *self.images.shape[1:]), mask
