"""``ShardLoader``: a DataLoader over :class:`ShardDataset` that resumes mid-epoch and feeds the device.

PyTorch's DataLoader asks its workers for batches round-robin, skipping a worker
once it is exhausted. Each worker's item count is known in advance (the
dataset's plan is deterministic), so from the number of batches the trainer
consumed we can tell exactly how many items each worker had produced: that is
all :meth:`ShardLoader.state_dict` stores, and :meth:`load_state_dict` hands
the per-worker skips to the dataset (the mosaicml-streaming idea, without a
shared-memory coordinator). A new DataLoader starts asking at worker 0, so the
workers' units are rotated to the worker that was due next: the resumed batches
come in the uninterrupted order whatever batch the run stopped at.

``persistent_workers=True`` keeps one DataLoader (and its worker processes) for
every epoch; the epoch, skips and rotation reach the workers' dataset copies
through a small shared-memory tensor.

Batches are collated in the workers, pinned by the DataLoader when the target
is CUDA, then moved with ``non_blocking=True`` (:func:`to_device`).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from curate.errors import CurateError
from curate.load.dataset import BatchStream, ShardDataset


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors and numbers; keep strings / bytes / lists (ids) as Python lists."""
    if not items:
        return {}
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        v0 = vals[0]
        if isinstance(v0, torch.Tensor):
            out[k] = torch.stack(vals)
        elif isinstance(v0, (bool, int, float)):
            out[k] = default_collate(vals)
        else:
            out[k] = vals
    return out


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    """Batches arrive collated; skip DataLoader's default_convert (it walks every id string)."""
    return batch


def to_device(batch: Any, device: torch.device | str, non_blocking: bool = True) -> Any:
    """Move every tensor of ``batch`` to ``device``; CPU tensors are pinned first when the target is CUDA."""
    device = torch.device(device)
    if isinstance(batch, torch.Tensor):
        if device.type == "cuda" and batch.device.type == "cpu" and not batch.is_pinned():
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    return batch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _round_robin(lengths: list[int], batch_size: int, batches: int, drop_last: bool) -> tuple[list[int], int]:
    """Items each worker produced in the first ``batches`` round-robin batches, and the worker asked next."""
    nb = [(n // batch_size) if drop_last else math.ceil(n / batch_size) for n in lengths]
    taken = [0] * len(lengths)
    left, rnd, last = batches, 0, -1
    while left > 0 and any(b > rnd for b in nb):
        for w, b in enumerate(nb):
            if left == 0:
                break
            if b > rnd:
                taken[w] += 1
                left -= 1
                last = w
        rnd += 1
    nxt = 0
    for k in range(1, len(nb) + 1):  # the next worker after the last one served that still has batches
        w = (last + k) % len(nb)
        if taken[w] < nb[w]:
            nxt = w
            break
    return [min(t * batch_size, n) for t, n in zip(taken, lengths)], nxt


def consumed_per_worker(lengths: list[int], batch_size: int, batches: int, drop_last: bool = False) -> list[int]:
    """Items each worker had produced after the first ``batches`` batches of a DataLoader epoch."""
    return _round_robin(lengths, batch_size, batches, drop_last)[0]


def next_worker(lengths: list[int], batch_size: int, batches: int, drop_last: bool = False) -> int:
    """The worker a DataLoader asks for batch ``batches + 1`` (round-robin, exhausted workers skipped).

    A resumed DataLoader starts asking at worker 0, so the loader rotates the workers' units by this
    much: worker k then plays unit (k + offset) % num_workers and the batch order goes on unchanged.
    """
    return _round_robin(lengths, batch_size, batches, drop_last)[1]


class ShardLoader:
    """Batches of a :class:`ShardDataset` on ``device``, resumable mid-epoch.

    ``for batch in loader`` runs one epoch; the epoch number advances after a complete pass
    (or set it with :meth:`set_epoch`). ``len(loader)`` is the number of batches this epoch.
    ``even_batches=True`` stops every rank after the smallest rank's batch count (computed, not
    communicated: the plan is deterministic), so DDP ranks never wait on each other at the end of an epoch.
    """

    def __init__(self, dataset: ShardDataset, batch_size: int, num_workers: int = 0, device: torch.device | str | None = None,
                 drop_last: bool = False, prefetch_factor: int | None = None, persistent_workers: bool = False,
                 move_to_device: bool = True, even_batches: bool = False):
        if batch_size < 1:
            raise CurateError(f"ShardLoader: batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.num_workers = dataset, int(batch_size), int(num_workers)
        self.device = torch.device(device) if device is not None else default_device()
        self.drop_last, self.move_to_device = drop_last, move_to_device
        self.prefetch_factor, self.persistent_workers = prefetch_factor, persistent_workers and num_workers > 0
        self.even_batches = even_batches
        self._batches = 0  # batches handed out in the current epoch
        # persistent workers keep their dataset copy across epochs: epoch and resume skips reach them
        # through shared memory (see BatchStream), and one DataLoader serves every epoch
        self._shared = torch.zeros(2 + max(1, self.num_workers), dtype=torch.int64).share_memory_() \
            if self.persistent_workers else None
        self._dl: DataLoader | None = None

    def _loader(self) -> DataLoader:
        if self._dl is not None:
            return self._dl
        kw: dict[str, Any] = {}
        if self.num_workers > 0:
            kw["persistent_workers"] = self.persistent_workers
            if self.prefetch_factor is not None:
                kw["prefetch_factor"] = self.prefetch_factor
        # the workers yield whole batches (collated column-wise, see ShardDataset.iter_batches); per worker
        # they are the same consecutive batch_size chunks a batching DataLoader would make, so the
        # round-robin bookkeeping of consumed_per_worker holds unchanged
        dl = DataLoader(BatchStream(self.dataset, self.batch_size, self.drop_last, self._shared), batch_size=None,
                        collate_fn=_as_is, num_workers=self.num_workers, pin_memory=self.device.type == "cuda", **kw)
        if self.persistent_workers:
            self._dl = dl
        return dl

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self._batches = 0

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def _batches_of(self, rank: int | None = None) -> int:
        lengths = self.dataset.worker_lengths(self.num_workers, rank)
        f = (lambda n: n // self.batch_size) if self.drop_last else (lambda n: math.ceil(n / self.batch_size))
        return sum(f(n) for n in lengths)

    def __len__(self) -> int:
        if self.even_batches:
            return min(self._batches_of(r) for r in range(self.dataset.world_size))
        return self._batches_of()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skips: dict[int, int] = {}
        offset = 0
        if self._batches:
            lengths = self.dataset.worker_lengths(self.num_workers)
            consumed, nxt = _round_robin(lengths, self.batch_size, self._batches, self.drop_last)
            skips = dict(enumerate(consumed))
            offset = nxt if self.num_workers else 0
        self.dataset.set_worker_skips(skips, offset)
        if self._shared is not None:
            self._shared[0] = self.dataset.epoch
            self._shared[1] = offset
            self._shared[2:] = torch.tensor([skips.get(w, 0) for w in range(self._shared.numel() - 2)])
        if self._dl is None and self.num_workers > 0:
            # once, here: workers inherit the verified set; persistent ones outlive this epoch and may
            # read any shard later, so they get every shard verified
            self.dataset.verify_shards(list(range(len(self.dataset.index.shards))) if self.persistent_workers
                                       else None)
        limit = len(self) if self.even_batches else None
        for batch in self._loader():
            if limit is not None and self._batches >= limit:
                break
            self._batches += 1
            yield to_device(batch, self.device) if self.move_to_device else batch
        self.dataset.set_epoch(self.dataset.epoch + 1)
        self._batches = 0

    def state_dict(self) -> dict[str, Any]:
        d = self.dataset
        return {"epoch": d.epoch, "batches": self._batches, "batch_size": self.batch_size,
                "num_workers": self.num_workers, "drop_last": self.drop_last, "seed": d.seed, "rank": d.rank,
                "world_size": d.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("batch_size", "num_workers", "drop_last"):
            if k in state and state[k] != getattr(self, k):
                raise CurateError(f"cannot resume: state has {k}={state[k]} but this loader has {k}={getattr(self, k)}; "
                                  f"resume with the same {k} (the sample order depends on it)")
        self.dataset._check_state(state)
        self.dataset.set_epoch(int(state["epoch"]))
        self._batches = int(state["batches"])
