"""``ShardDataset``: a deterministic, resumable ``IterableDataset`` over a shard index.

How samples are split (the rule webdataset users keep asking about):

1. The *canonical stream* of an epoch is the list of row groups ("blocks") of
   all shards in index order; with ``shuffle=True`` the blocks are permuted by
   ``(seed, epoch)``. Rows inside a block keep their order. The stream depends
   only on the index, the seed and the epoch, never on ranks or workers.
2. With ``U = world_size * num_workers`` units, unit ``u = rank * num_workers +
   worker`` reads stream positions ``[N*u//U, N*(u+1)//U)``. Rank ``r``
   therefore always covers ``[N*r//world_size, N*(r+1)//world_size)``,
   whatever its worker count: no sample is read twice and none is skipped.
3. ``sample_weight`` is honoured by stochastic replication (``weighting=
   "replicate"``, the default): a row of weight ``w`` appears ``floor(w)``
   times plus once more with probability ``frac(w)``, drawn from ``(seed,
   epoch, row)``. Its expected frequency is proportional to ``w`` (AdaInf's
   real-data replication factor is baked into the weights by the shard stage);
   ``weighting="none"`` yields each row once and leaves the weight to the loss.
4. A shuffle buffer of ``shuffle_buffer`` items (seeded by ``seed, epoch,
   rank, worker``) mixes each unit's stream. The buffer is simulated on row
   numbers first, so the whole epoch order of a unit is known up front:
   resuming mid-epoch (``state_dict`` / ``load_state_dict``) skips exactly the
   samples already yielded without reading them.

Each item is a dict: ``image`` (uint8 tensor C,H,W), ``sample_id``, ``label``
(-1 when unknown), ``group_id`` ("" when unknown), ``sample_weight``,
``is_synthetic``, ``index`` (canonical row number), and with ``pairs="positive"``
/ ``"triplet"`` also ``positive_image`` / ``negative_image`` (+ ids and
``has_positive`` / ``has_negative``): one partner drawn per anchor and epoch
(seeded, so a resumed epoch draws the same). Partners come from the anchor's own
row when the shard stage stored them there (``inline_positives`` /
``inline_negatives``; removed near-duplicates always), else by id from any shard
(an LRU of row groups: fine for small sets, inline partners for large ones). A
missing partner falls back to the anchor itself (a second augmented view, as in
SimCLR) and is flagged.
"""

from __future__ import annotations

import bisect
import collections
import os
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from curate.errors import CurateError
from curate.imaging import decode_resize
from curate.load.index import ShardIndex, read_index, verify_shard
from curate.ops.png import decode_stored_column

_BASE_COLUMNS = ["image", "sample_id", "label", "group_id", "is_synthetic", "sample_weight"]


def _decode(data: bytes, size: int | None, channels: int | None) -> torch.Tensor:
    """(C, H, W) uint8 tensor of one stored image (:func:`curate.imaging.decode_resize`)."""
    t = torch.from_numpy(np.array(decode_resize(data, size, channels), copy=True))
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def shuffle_buffer_order(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """Emission order of a streaming shuffle buffer of ``buffer`` slots over items 0..n-1."""
    if buffer <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    b = min(buffer, n)
    slots = list(range(b))
    picks = (rng.random(n - b) * b).astype(np.int64).tolist()
    out = np.empty(n, dtype=np.int64)
    k = 0
    for item, j in zip(range(b, n), picks):
        out[k] = slots[j]
        slots[j] = item
        k += 1
    rest = np.asarray(slots, dtype=np.int64)
    out[k:] = rest[rng.permutation(len(rest))]
    return out


class _RowStore:
    """Random access to rows by canonical row number (for positive / negative partners); LRU over row groups."""

    def __init__(self, ds: "ShardDataset", max_groups: int = 64):
        self.ds = ds
        self.max_groups = max_groups
        self.cache: collections.OrderedDict[int, dict[str, list]] = collections.OrderedDict()
        self._ids: np.ndarray | None = None
        self._rows: np.ndarray | None = None
        self._starts: list[int] | None = None  # first canonical row of every block

    def _build(self) -> None:
        ids, rows = [], []
        for s, info in enumerate(self.ds.index.shards):
            col = pq.read_table(info.path, columns=["sample_id"]).column(0).to_numpy(zero_copy_only=False)
            ids.append(col.astype("S"))
            rows.append(np.arange(self.ds._shard_start[s], self.ds._shard_start[s] + info.rows))
        ids_a = np.concatenate(ids) if ids else np.array([], "S1")
        rows_a = np.concatenate(rows) if rows else np.array([], np.int64)
        order = np.argsort(ids_a, kind="stable")
        self._ids, self._rows = ids_a[order], rows_a[order]

    def rows_of(self, sample_ids: list[str]) -> np.ndarray:
        """Canonical row of each id (-1 when it is not in the shards), in one vectorised lookup."""
        if self._ids is None:
            self._build()
        out = np.full(len(sample_ids), -1, np.int64)
        if not sample_ids or not len(self._ids):
            return out
        keys = np.array(sample_ids, dtype="S")
        fits = np.char.str_len(keys) <= self._ids.dtype.itemsize
        keys = keys.astype(self._ids.dtype)
        pos = np.minimum(np.searchsorted(self._ids, keys), len(self._ids) - 1)
        hit = fits & (self._ids[pos] == keys)
        out[hit] = self._rows[pos[hit]]
        return out

    def image(self, row: int) -> torch.Tensor | bytes:
        """The image of canonical row ``row``: decoded when the block holds a stored PNG for it, else bytes."""
        if self._starts is None:
            self._starts = self.ds._block_start.tolist()
        b = bisect.bisect_right(self._starts, row) - 1
        grp = self.cache.get(b)
        if grp is None:
            grp = self.ds._read_block(b, ["image"])
            self.cache[b] = grp
            if len(self.cache) > self.max_groups:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(b)
        i = row - self._starts[b]
        px = grp.get("_px")
        if px is not None and px[i] is not None:
            return torch.from_numpy(px[i])
        return grp["image"][i]


class ShardDataset(IterableDataset):
    """Stream samples from the shards of ``index_path`` (see the module docstring for the split rule).

    Args:
        index_path: index.json, its folder, or a run dir with ``NN_shard/shards/index.json``.
        rank, world_size: this process's place in distributed training.
        shuffle_buffer: streaming shuffle buffer size (items); 0 or 1 disables it.
        seed, epoch: the stream is a pure function of (index, seed, epoch); call :meth:`set_epoch`.
        shuffle: permute row groups per epoch (and use the buffer); False gives canonical order.
        weighting: ``"replicate"`` (sample_weight as expected copies) or ``"none"``.
        pairs: None, ``"positive"`` (anchor + one positive) or ``"triplet"`` (+ one hard negative).
        size, channels: optional decode-time resize (PIL bilinear) / channel forcing, for mixed-size data.
        verify: check each shard's sha256 against the index the first time a process opens it.
        decode: False yields the PNG bytes under ``image`` instead of a tensor.
    """

    def __init__(self, index_path: str | os.PathLike, rank: int = 0, world_size: int = 1, shuffle_buffer: int = 2048,
                 seed: int = 0, epoch: int = 0, shuffle: bool = True,
                 weighting: Literal["replicate", "none"] = "replicate",
                 pairs: Literal["positive", "triplet"] | None = None, size: int | None = None,
                 channels: int | None = None, verify: bool = True, decode: bool = True):
        if world_size < 1 or not 0 <= rank < world_size:
            raise CurateError(f"ShardDataset: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if weighting not in ("replicate", "none"):
            raise CurateError(f"ShardDataset: weighting must be 'replicate' or 'none', got '{weighting}'")
        if pairs not in (None, "positive", "triplet"):
            raise CurateError(f"ShardDataset: pairs must be None, 'positive' or 'triplet', got '{pairs}'")
        if channels not in (None, 1, 3):
            raise CurateError(f"ShardDataset: channels must be None, 1 or 3, got {channels}")
        self.index: ShardIndex = read_index(index_path)
        self.index_path = self.index.path
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle_buffer, self.seed, self.epoch, self.shuffle = int(shuffle_buffer), int(seed), int(epoch), shuffle
        self.weighting, self.pairs, self.size, self.channels = weighting, pairs, size, channels
        self.verify, self.decode = verify, decode
        if pairs and not {"positive_ids", "negative_ids"} <= set(self.index.columns):
            raise CurateError(f"{self.index_path}: pairs='{pairs}' needs positive_ids/negative_ids columns; "
                              f"run mine.positives / mine.negatives before the shard stage")
        # canonical blocks: (shard, row group), with their first canonical row number
        blocks, starts, shard_start, pos = [], [], [], 0
        for s, info in enumerate(self.index.shards):
            shard_start.append(pos)
            for g, n in enumerate(info.row_groups):
                blocks.append((s, g, n))
                starts.append(pos)
                pos += n
        self._blocks = blocks
        self._block_start = np.asarray(starts + [pos], dtype=np.int64)
        self._shard_start = shard_start
        self.num_rows = pos
        self._weights: np.ndarray | None = None
        self._files: dict[int, pq.ParquetFile] = {}
        self._verified: set[int] = set()  # shards checked in this object's process (travels to workers)
        self._store: _RowStore | None = None
        self._skip: dict[int, int] = {}  # unit -> items to skip (mid-epoch resume)
        self._offset = 0  # DataLoader worker k reads unit (k + offset) % num_workers (resume rotation)
        self._yielded = 0  # items yielded by this object in the current epoch (num_workers=0 use)

    # ---- public state ---------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._skip, self._yielded, self._offset = int(epoch), {}, 0, 0

    @property
    def metadata(self) -> dict[str, Any]:
        return self.index.metadata

    def recommended_augment(self, size: int, **overrides: Any):
        """:class:`SimCLRAugment` with the index's augmentation recommendation (AdaInf), else SimCLR's defaults."""
        from curate.load.augment import SimCLRAugment

        return SimCLRAugment.from_params(size, self.index.metadata.get("augmentation") or {}, **overrides)

    def state_dict(self) -> dict[str, Any]:
        """Position of a single-process iteration (for DataLoader workers use :class:`ShardLoader`)."""
        return {"epoch": self.epoch, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self.epoch = int(state["epoch"])
        self._skip = {0: int(state["yielded"])}
        self._yielded = int(state["yielded"])

    def _check_state(self, state: dict[str, Any]) -> None:
        for k in ("seed", "rank", "world_size"):
            if k in state and int(state[k]) != getattr(self, k):
                raise CurateError(f"cannot resume: state has {k}={state[k]} but this dataset has {k}={getattr(self, k)}")

    def set_worker_skips(self, skips: dict[int, int], offset: int = 0) -> None:
        """Items already consumed per unit, and the rotation ``offset``: DataLoader worker k reads unit
        (k + offset) % num_workers (set by :class:`ShardLoader` on resume)."""
        self._skip = {int(k): int(v) for k, v in skips.items()}
        self._offset = int(offset)

    def __len__(self) -> int:
        """Items this rank yields in the current epoch (replication included)."""
        return int(sum(self.worker_lengths(1)))

    # ---- the plan of an epoch -------------------------------------------------------------
    def weights(self) -> np.ndarray:
        if self._weights is None:
            if self.index.metadata.get("uniform_weights", False) or "sample_weight" not in self.index.columns:
                self._weights = np.ones(self.num_rows, np.float64)
            else:
                parts = [pq.read_table(s.path, columns=["sample_weight"]).column(0).to_numpy(zero_copy_only=False)
                         for s in self.index.shards]
                w = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
                self._weights = np.nan_to_num(np.clip(w, 0, None), nan=1.0)
        return self._weights

    def _stream(self) -> np.ndarray:
        """Canonical row numbers in this epoch's stream order (blocks permuted when shuffling)."""
        nb = len(self._blocks)
        order = np.arange(nb)
        if self.shuffle and nb > 1:
            order = np.random.default_rng([self.seed, self.epoch, 0x5EED]).permutation(nb)
        starts, lens = self._block_start[:-1][order], np.diff(self._block_start)[order]
        if not len(lens):
            return np.zeros(0, np.int64)
        offs = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        return np.arange(int(lens.sum()), dtype=np.int64) + offs

    def _copies(self, rows: np.ndarray) -> np.ndarray:
        if self.weighting == "none":
            return np.ones(len(rows), np.int64)
        w = self.weights()
        if np.all(w == 1.0):
            return np.ones(len(rows), np.int64)
        u = np.random.default_rng([self.seed, self.epoch, 0xC0B1]).random(self.num_rows)
        base = np.floor(w)
        cop = (base + (u < (w - base))).astype(np.int64)
        return cop[rows]

    def _unit_rows(self, worker: int, num_workers: int, stream: np.ndarray | None = None,
                   rank: int | None = None) -> np.ndarray:
        """Canonical rows (with replication) of unit (rank, worker), in stream order."""
        stream = self._stream() if stream is None else stream
        n, units = len(stream), self.world_size * num_workers
        u = (self.rank if rank is None else rank) * num_workers + worker
        rows = stream[n * u // units: n * (u + 1) // units]
        return np.repeat(rows, self._copies(rows))

    def worker_lengths(self, num_workers: int, rank: int | None = None) -> list[int]:
        """Items each of ``num_workers`` DataLoader workers of this rank (or ``rank``) yields this epoch."""
        stream = self._stream()
        return [len(self._unit_rows(w, max(1, num_workers), stream, rank)) for w in range(max(1, num_workers))]

    def _unit_order(self, worker: int, num_workers: int) -> np.ndarray:
        rows = self._unit_rows(worker, num_workers)
        if not self.shuffle:
            return rows
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 0xB0FF])
        return rows[shuffle_buffer_order(len(rows), self.shuffle_buffer, rng)]

    def rank_shards(self) -> list[int]:
        """Shards this rank reads in the current epoch."""
        stream = self._stream()
        n = len(stream)
        rows = stream[n * self.rank // self.world_size: n * (self.rank + 1) // self.world_size]
        starts = np.asarray(self._shard_start, dtype=np.int64)
        return sorted(set((np.searchsorted(starts, rows, side="right") - 1).tolist()))

    def verify_shards(self, shards: list[int] | None = None) -> None:
        """Check sha256 now (default: this rank's shards), so DataLoader workers need not hash them again."""
        if not self.verify:
            return
        for s in self.rank_shards() if shards is None else shards:
            if s not in self._verified:
                verify_shard(self.index.shards[s], self.index_path)
                self._verified.add(s)

    # ---- reading --------------------------------------------------------------------
    def _file(self, s: int) -> pq.ParquetFile:
        f = self._files.get(s)
        if f is None:
            info = self.index.shards[s]
            if self.verify and s not in self._verified:
                verify_shard(info, self.index_path)
                self._verified.add(s)
            elif not os.path.isfile(info.path):
                raise CurateError(f"shard '{info.path}' listed in {self.index_path} is missing")
            f = pq.ParquetFile(info.path)
            groups = tuple(f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups))
            if f.metadata.num_rows != info.rows or groups != info.row_groups:
                raise CurateError(f"shard '{info.path}' has {f.metadata.num_rows} rows in row groups {list(groups)}, "
                                  f"but {self.index_path} records {info.rows} in {list(info.row_groups)}; the shard "
                                  f"and its index do not belong together: re-run `curate shard`")
            self._files[s] = f
        return f

    def _read_block(self, b: int, columns: list[str], pixels: bool = True) -> dict[str, list]:
        """Columns of block ``b`` as lists; with ``pixels`` (and plain decoding) also ``_px``: the
        images that are stored PNGs (what the shard stage writes) gathered as (C, H, W) arrays in
        one vectorised pass, None where a row needs a PNG decoder."""
        s, g, n = self._blocks[b]
        t = self._file(s).read_row_group(g, columns=columns)
        if t.num_rows != n:
            raise CurateError(f"shard '{self.index.shards[s].path}' row group {g} has {t.num_rows} rows, "
                              f"index.json says {n}; rerun `curate shard`")
        out = {c: t.column(c).to_pylist() for c in columns if c != "image"}
        px = None
        if pixels and "image" in columns and self.decode and self.size is None and self.channels is None:
            px = decode_stored_column(t.column("image"))
            out["_px"] = px
        if "image" in columns:
            # the PNG bytes are only needed where the fast path did not apply
            need = px is None or any(p is None for p in px)
            out["image"] = t.column("image").to_pylist() if need else None
        return out

    def _partner_rows(self, data: dict[str, list], kind: str) -> tuple[list[int], list[int]]:
        """Canonical rows of the block's ``kind`` partner ids: one vectorised lookup per block, made
        the first time a partner is not stored inline (inline-only shards never build the id index)."""
        key = f"_{kind}_rows"
        if key not in data:
            if self._store is None:
                self._store = _RowStore(self)
            lists = data[f"{kind}_ids"]
            starts = np.cumsum([0] + [len(x) if x else 0 for x in lists[:-1]]).tolist()
            rows = self._store.rows_of([sid for x in lists if x for sid in x]).tolist()
            data[key] = (rows, starts)  # partner j of row i: rows[starts[i] + j]
        return data[key]

    def _image(self, data: dict[str, list], i: int) -> torch.Tensor:
        px = data.get("_px")
        if px is not None and px[i] is not None:
            return torch.from_numpy(px[i])
        return _decode(data["image"][i], self.size, self.channels)

    def _columns(self) -> list[str]:
        have = set(self.index.columns)
        cols = [c for c in _BASE_COLUMNS if c in have]
        if self.pairs:
            cols += ["positive_ids", "negative_ids"] + [c for c in ("positive_images", "negative_images") if c in have]
        return cols

    def _item(self, data: dict[str, list], i: int, row: int, u: tuple[float, float] | None) -> dict[str, Any]:
        img = data["image"][i] if data["image"] is not None else None
        label = data["label"][i] if "label" in data else None
        weight = data["sample_weight"][i] if "sample_weight" in data else None
        item = {
            "image": self._image(data, i) if self.decode else img,
            "sample_id": data["sample_id"][i],
            "label": -1 if label is None else label,
            "group_id": (data["group_id"][i] or "") if "group_id" in data else "",
            "sample_weight": 1.0 if weight is None else weight,
            "is_synthetic": bool(data["is_synthetic"][i]) if "is_synthetic" in data else False,
            "index": row,
        }
        if self.pairs:
            for kind, pick in zip(self._partner_kinds(), u):
                pid, image = self._partner(data, i, kind, pick, item["image"])
                item[f"{kind}_id"], item[f"has_{kind}"], item[f"{kind}_image"] = pid, bool(pid), image
        return item

    def _partner_kinds(self) -> tuple[str, ...]:
        return ("positive", "negative") if self.pairs == "triplet" else ("positive",)

    def _partner(self, block: dict[str, list], i: int, kind: str, u: float, anchor: Any) -> tuple[str, Any]:
        """(partner id or "", its image) for row ``i`` of ``block``: candidate ``u * len`` of the row's
        ``kind`` ids, from the row's inline PNGs or any shard; the anchor's own image when there is none."""
        ids = block[f"{kind}_ids"][i] or []
        inline = block[f"{kind}_images"][i] if f"{kind}_images" in block else None
        if kind == "negative" and inline:  # the hardest negatives are stored with the anchor: draw among those
            ids = ids[:len(inline)]
        pid, data = "", anchor
        if ids:
            j = min(int(u * len(ids)), len(ids) - 1)
            if inline and inline[j] is not None:  # a removed near-duplicate stored with its anchor
                pid, data = ids[j], inline[j]
            else:
                rows, starts = self._partner_rows(block, kind)
                row = rows[starts[i] + j]
                if row >= 0:
                    pid, data = ids[j], self._store.image(row)
        if self.decode and isinstance(data, bytes):  # (undecoded mode reads no pixels: all bytes)
            data = _decode(data, self.size, self.channels)
        return pid, data

    def _plan(self):
        """This process's unit: (is main process, unit, rows still to yield in order, items already skipped)."""
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (worker + self._offset) % num_workers  # the unit this worker reads
        order = self._unit_order(worker, num_workers)
        skip = min(self._skip.get(worker, 0), len(order))
        if info is None:
            self._yielded = skip
        return info is None, worker, order, skip

    def _rows(self, todo: np.ndarray) -> Iterator[tuple[dict[str, list], int, int]]:
        """(block columns, index in block, canonical row) for each row of ``todo``, reading each block once.

        A block is read when its first row is due; each row keeps a reference to the block's columns
        until its last copy is emitted (memory ~ shuffle buffer + a block).
        """
        pending = np.bincount(todo, minlength=self.num_rows).tolist() if len(todo) else []
        cache: dict[int, tuple[dict[str, list], int]] = {}
        cols = self._columns()
        block_start = self._block_start.tolist()
        block_of = (np.searchsorted(self._block_start, todo, side="right") - 1).tolist()
        for j, row in enumerate(todo.tolist()):
            ent = cache.get(row)
            if ent is None:
                b = block_of[j]
                data = self._read_block(b, cols)
                start = block_start[b]
                for i in range(block_start[b + 1] - start):
                    if pending[start + i]:
                        cache[start + i] = (data, i)
                ent = cache[row]
            left = pending[row] - 1
            pending[row] = left
            if not left:
                del cache[row]
            yield ent[0], ent[1], row

    def _picks(self, worker: int, n: int, skip: int) -> list[list[float]] | None:
        """Partner draws of the unit's epoch, made up front so a resumed epoch picks the same partners."""
        if not self.pairs:
            return None
        return np.random.default_rng([self.seed, self.epoch, self.rank, worker, 0x9A1E]).random((n, 2))[skip:].tolist()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        main, worker, order, skip = self._plan()
        todo = order[skip:]
        picks = self._picks(worker, len(order), skip)
        for j, (data, i, row) in enumerate(self._rows(todo)):
            item = self._item(data, i, row, picks[j] if picks is not None else None)
            if main:
                self._yielded += 1
            yield item
        self._skip.pop(worker, None)

    def iter_batches(self, batch_size: int, drop_last: bool = False) -> Iterator[dict[str, Any]]:
        """The items of :meth:`__iter__`, ``batch_size`` at a time, already collated.

        Equal to collating consecutive items (what a DataLoader worker does), but built column-wise:
        no per-item dicts, images decoded straight into one stacked tensor (pairs and triplets
        too). The undecoded mode collates items.
        """
        from curate.load.loader import collate

        if not self.decode:
            buf: list[dict[str, Any]] = []
            for item in self:
                buf.append(item)
                if len(buf) == batch_size:
                    yield collate(buf)
                    buf = []
            if buf and not drop_last:
                yield collate(buf)
            return
        main, worker, order, skip = self._plan()
        todo = order[skip:]
        picks = self._picks(worker, len(order), skip)
        rows = self._rows(todo)
        n = len(todo)
        for a in range(0, n, batch_size):
            b = min(n, a + batch_size)
            if drop_last and b - a < batch_size:
                break
            got = [next(rows) for _ in range(b - a)]
            batch = self._collate_rows(got)
            for c, kind in enumerate(self._partner_kinds() if self.pairs else ()):
                found = [self._partner(d, i, kind, u[c], batch["image"][k])
                         for k, ((d, i, _), u) in enumerate(zip(got, picks[a:b]))]
                batch[f"{kind}_id"] = [pid for pid, _ in found]
                batch[f"has_{kind}"] = torch.tensor([bool(pid) for pid, _ in found], dtype=torch.bool)
                batch[f"{kind}_image"] = torch.stack([img for _, img in found])
            if main:
                self._yielded += b - a
            yield batch
        self._skip.pop(worker, None)

    def _collate_rows(self, got: list[tuple[dict[str, list], int, int]]) -> dict[str, Any]:
        imgs = [self._image(d, i) for d, i, _ in got]
        labels = [d["label"][i] if "label" in d else None for d, i, _ in got]
        weights = [d["sample_weight"][i] if "sample_weight" in d else None for d, i, _ in got]
        return {
            "image": torch.stack(imgs),
            "sample_id": [d["sample_id"][i] for d, i, _ in got],
            "label": torch.tensor([-1 if v is None else v for v in labels], dtype=torch.int64),
            "group_id": [(d["group_id"][i] or "") if "group_id" in d else "" for d, i, _ in got],
            "sample_weight": torch.tensor([1.0 if v is None else v for v in weights], dtype=torch.float64),
            "is_synthetic": torch.tensor([bool(d["is_synthetic"][i]) if "is_synthetic" in d else False
                                          for d, i, _ in got], dtype=torch.bool),
            "index": torch.tensor([r for _, _, r in got], dtype=torch.int64),
        }


class BatchStream(IterableDataset):
    """:meth:`ShardDataset.iter_batches` as an IterableDataset (for ``DataLoader(batch_size=None)``).

    With ``shared`` (an int64 tensor in shared memory: epoch, then the items each worker skips),
    every ``iter()`` takes the epoch and the resume point from it, so persistent DataLoader workers,
    which keep their own copy of the dataset, follow :meth:`ShardLoader.set_epoch` and resumes.
    """

    def __init__(self, dataset: ShardDataset, batch_size: int, drop_last: bool = False,
                 shared: torch.Tensor | None = None):
        self.dataset, self.batch_size, self.drop_last, self.shared = dataset, batch_size, drop_last, shared

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.shared is not None:
            info = get_worker_info()
            worker = info.id if info is not None else 0
            state = self.shared.tolist()  # epoch, rotation offset, skips by unit
            self.dataset.set_epoch(state[0])
            unit = (worker + state[1]) % max(1, len(state) - 2)
            self.dataset.set_worker_skips({unit: state[2 + unit]}, state[1])
        return self.dataset.iter_batches(self.batch_size, self.drop_last)
