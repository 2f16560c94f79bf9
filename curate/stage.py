"""The stage API: pure functions on Arrow tables; the runner schedules them.

Three kinds of stage:

* :class:`Stage` - ``process(table, ctx) -> table`` on one partition (embed,
  dedup.apply, shard encoding ...). Partitions come from the primary input.
* :class:`GlobalStage` - work that must see every partition (LSH buckets,
  k-means, FAISS search): an optional per-partition ``map`` pre-pass (cached and
  resumable like any partition), then ``reduce(ctx)`` which returns one output
  table per partition id. ``ctx.map(fn, items)`` fans independent pieces out as
  Dask tasks without the stage knowing Dask. A stage that defines ``finish``
  returns a small per-partition *state* from ``reduce`` instead, and the runner
  calls ``finish(table, ctx, state)`` per partition as worker tasks, so the
  heavy rows (images) never pass through the driver.
* :class:`SourceStage` - ``plan(ctx)`` lists partitions (id + payload) derived
  from the data, ``read(payload, ctx)`` produces one.

A stage declares which tables it reads (``inputs``, the first is primary) and
writes (``outputs``, the first is primary). A table name resolves to the latest
upstream stage that wrote that partition ("overlay by partition id"), so a
stage that adds partitions (inflate.generate) or rewrites them (dedup.apply)
composes without special cases. ``requires`` (default: the primary input) must
be written by an earlier stage, and a stage with ``needs_settled = ("decisions",)``
(shard, mining) must follow a stage that ``settles`` them (dedup.apply) whenever a
dedup stage runs before it: :func:`curate.config.check_order` rejects other orders
at plan time.

Expensive state (models, indexes) is built once per worker in ``setup()``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import pyarrow as pa

from curate import io, schemas
from curate.config import StageParams
from curate.errors import SampleError

SCRATCH_DIR = "scratch"  # RUN_DIR/scratch/<stage dir>/: temporary files of tasks (StageContext.scratch)

@dataclass(frozen=True)
class Upstream:
    """One earlier stage as seen from a later one: its directory and the tables it wrote."""

    dirname: str
    outputs: tuple[str, ...]


@dataclass
class Partition:
    id: str
    payload: Any = None
    rows_hint: int | None = None


@dataclass
class StageContext:
    """What a stage may see while processing one partition (or reducing all)."""

    run_dir: str
    stage: str  # the stage's directory name, e.g. "02_dedup_phash"
    stage_key: str
    partition_id: str | None
    seed: int
    on_error: str
    upstream: tuple[Upstream, ...] = ()
    counters: collections.Counter = field(default_factory=collections.Counter)
    quarantined: list[dict] = field(default_factory=list)
    partitions: tuple[str, ...] = ()
    mapper: Callable[[Callable, list], list] | None = None

    # ---- reading upstream tables -------------------------------------------------
    def _path(self, up: Upstream, table: str, pid: str) -> str:
        return io.part_path(self.run_dir, up.dirname, pid, None if table == up.outputs[0] else table)

    def producers(self, table: str) -> list[Upstream]:
        """Upstream stages that write ``table``, oldest first."""
        return [u for u in self.upstream if table in u.outputs]

    def has(self, table: str) -> bool:
        return bool(self.producers(table))

    def read(self, table: str, pid: str | None = None, columns: list[str] | None = None) -> pa.Table | None:
        """The latest upstream version of ``table`` for partition ``pid`` (default: this one)."""
        pid = pid or self.partition_id
        for up in reversed(self.producers(table)):
            path = self._path(up, table, pid)
            if io.exists(path):
                return io.read_parquet(path, columns=columns)
        return None

    def read_from(self, up: Upstream, table: str, pid: str | None = None,
                  columns: list[str] | None = None) -> pa.Table | None:
        """``table`` as one given upstream stage wrote it for partition ``pid`` (default: this one)."""
        path = self._path(up, table, pid or self.partition_id)
        return io.read_parquet(path, columns=columns) if io.exists(path) else None

    def partition_ids(self, table: str) -> list[str]:
        """Every partition id of ``table`` over all its producers (overlay)."""
        seen: dict[str, None] = {}
        for up in self.producers(table):
            sub = None if table == up.outputs[0] else table
            for pid in io.list_partitions(self.run_dir, up.dirname, sub):
                seen[pid] = None
        return sorted(seen)

    def read_all(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """The overlay of ``table`` over all partitions, concatenated in partition order."""
        parts = [self.read(table, pid, columns) for pid in self.partition_ids(table)]
        parts = [p for p in parts if p is not None]
        if not parts:
            schema = schemas.TABLES.get(table)
            if schema is None:
                raise KeyError(f"no upstream stage wrote table '{table}'")
            return schema.empty_table() if columns is None else schema.empty_table().select(columns)
        return pa.concat_tables(parts, promote_options="permissive")

    def read_every(self, table: str, columns: list[str] | None = None) -> list[tuple[str, pa.Table]]:
        """``table`` from every producing stage separately: [(stage dir, all partitions)]."""
        out = []
        for up in self.producers(table):
            sub = None if table == up.outputs[0] else table
            parts = [io.read_parquet(io.part_path(self.run_dir, up.dirname, pid, sub), columns=columns)
                     for pid in io.list_partitions(self.run_dir, up.dirname, sub)]
            if parts:
                out.append((up.dirname, pa.concat_tables(parts, promote_options="permissive")))
        return out

    def quarantined_sample_ids(self) -> set[str]:
        """sample_ids that any upstream stage quarantined after ingest (its quarantine rows name them)."""
        out: set[str] = set()
        for up in self.upstream:
            for pid in io.list_partitions(self.run_dir, up.dirname, "quarantine"):
                q = io.read_parquet(io.part_path(self.run_dir, up.dirname, pid, "quarantine"), columns=["sample_id"])
                out.update(x for x in q.column("sample_id").to_pylist() if x is not None)
        return out

    # ---- scratch space ----------------------------------------------------------
    def scratch(self, *parts: str, shared: bool = False) -> str:
        """An fsspec folder for this stage's temporary files: ``RUN_DIR/scratch/<stage dir>[/<parts>]``
        (``shared``: ``RUN_DIR/scratch/_shared/<parts>``, for files several stages reuse, such as the kNN
        index of the mining stages). It lives in the run directory, so every worker that sees the run
        directory (a shared disk, object storage) sees it; nothing goes to a worker's own ``/tmp``. The
        folder is not created (object stores have none); write files below it with :mod:`curate.io`."""
        for p in parts:
            io.check_name(p, "scratch folder")
        owner = "_shared" if shared else io.check_name(self.stage.split("/")[0], "stage directory")
        return io.join(self.run_dir, SCRATCH_DIR, owner, *parts)

    # ---- errors, counters ------------------------------------------------------
    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def sample_error(self, err: SampleError, source_uri: str, source_index: int | None = None,
                     sample_id: str | None = None) -> None:
        """Apply the stage's ``on_error`` policy to one bad sample."""
        if self.on_error == "raise":
            where = f"{source_uri}" + (f"[{source_index}]" if source_index is not None else "")
            raise SampleError(err.reason, f"{where}: {err.detail}")
        self.counters[f"{'skipped' if self.on_error == 'skip' else 'quarantined'}_{err.reason}"] += 1
        self.quarantined.append(dict(source_uri=source_uri, source_index=source_index, sample_id=sample_id,
                                     stage=self.stage_key, reason=err.reason,
                                     detail=err.detail + (" (on_error=skip)" if self.on_error == "skip" else "")))

    def quarantine_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.quarantined, schema=schemas.QUARANTINE)

    # ---- parallel map for global stages ------------------------------------------
    def map(self, fn: Callable, items: Iterable) -> list:
        """Run ``fn(item)`` for every item, in parallel where the runner can (Dask tasks)."""
        items = list(items)
        if self.mapper is None:
            return [fn(x) for x in items]
        return self.mapper(fn, items)


class Stage:
    """A per-partition stage. Subclasses set ``key``, ``Params``, ``inputs``, ``outputs``."""

    key: ClassVar[str] = ""
    version: ClassVar[str] = "1"  # bump to invalidate old outputs when behaviour changes
    Params: ClassVar[type[StageParams]] = StageParams
    inputs: ClassVar[tuple[str, ...]] = ("samples",)
    outputs: ClassVar[tuple[str, ...]] = ("samples",)
    # plan-time order checks (curate.config.check_order): tables an earlier stage must have written
    # (None: the primary input), tables this stage resolves (dedup.apply: decisions), and tables that must be
    # resolved before this stage when an earlier stage wrote them (shard, mining: the kept set only)
    requires: ClassVar[tuple[str, ...] | None] = None
    settles: ClassVar[tuple[str, ...]] = ()
    needs_settled: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: StageParams):
        self.params = params

    def output_schemas(self) -> dict[str, pa.Schema]:
        """Declared schema of every output table; override when one depends on params."""
        return {name: schemas.TABLES[name] for name in self.outputs}

    def setup(self) -> None:
        """Build expensive state (a model, an index) once per worker."""

    def process(self, table: pa.Table, ctx: StageContext) -> pa.Table | dict[str, pa.Table]:
        raise NotImplementedError

    def new_partitions(self, ctx: StageContext) -> list[str]:
        """Ids of partitions this stage adds beyond its primary input's (e.g. ``syn-00000``); their input
        table is None. Decided at plan time from params and upstream tables, never from the worker count."""
        return []


class GlobalStage(Stage):
    """A stage that must see all partitions: ``map`` per partition, then ``reduce``."""

    map_schema: ClassVar[pa.Schema | None] = None  # schema of map() output; None: no map pass

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        raise NotImplementedError

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, pa.Table | dict[str, pa.Table]]:
        """Return ``{partition_id: output}`` for every partition in ``ctx.partitions`` (with ``finish``:
        ``{partition_id: state}``, a small picklable value handed to that partition's ``finish``)."""
        raise NotImplementedError

    def finish(self, table: pa.Table, ctx: StageContext, state: Any) -> pa.Table | dict[str, pa.Table]:
        """Optional per-partition pass after ``reduce``, run as a worker task on the primary input."""
        raise NotImplementedError

    @classmethod
    def has_finish(cls) -> bool:
        return cls.finish is not GlobalStage.finish


class SourceStage(Stage):
    """A stage that reads data from outside the run directory."""

    inputs: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...] | None] = ()

    def plan(self, ctx: StageContext) -> list[Partition]:
        raise NotImplementedError

    def read(self, partition: Partition, ctx: StageContext) -> pa.Table:
        raise NotImplementedError


# One instance per (stage key, config hash) per worker process: setup() runs once.
_INSTANCES: dict[tuple[str, str], Stage] = {}


def instance(cls: type[Stage], params: StageParams, cache_key: str) -> Stage:
    key = (cls.key, cache_key)
    inst = _INSTANCES.get(key)
    if inst is None:
        inst = cls(params)
        inst.setup()
        _INSTANCES[key] = inst
    return inst
