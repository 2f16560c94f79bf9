"""Run a pipeline: the only module that knows Dask.

Each partition of each stage is one task: read inputs from the run directory,
``process``, write outputs atomically, write the manifest last. The driver only
plans, collects manifests and shows progress. Resume = skip every partition
whose manifest carries the current config hash (chained over upstream stages,
so a changed stage invalidates itself and everything downstream).

Schedulers: ``sync`` (in-process, for debugging), an embedded
``distributed.LocalCluster`` sized to the machine (default), or an existing
cluster given as ``tcp://HOST:PORT`` (or ``CURATE_SCHEDULER``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow as pa

from curate import io, registry, schemas, stats
from curate.config import PipelineConfig, StageParams, StageSpec, absolute_path, check_run_dir, config_hash
from curate.errors import ClusterError, ConfigError, CurateError, SampleError, StageError
from curate.stage import GlobalStage, Partition, SourceStage, Stage, StageContext, Upstream, instance

log = logging.getLogger("curate")

MAP_DIR = "_map"
WORKER_WAIT_S = 30.0  # default wait for the first Dask worker of an existing cluster (CURATE_WORKER_WAIT)


# --------------------------------------------------------------------------- tasks
@dataclass
class Task:
    """Everything a worker needs to run one partition of one stage (picklable)."""

    kind: str  # "source" | "process" | "map" | "finish"
    key: str
    params: StageParams
    stage_dir: str
    run_dir: str
    pid: str
    cfg_hash: str
    seed: int
    upstream: tuple[Upstream, ...]
    payload: Any = None


def _partition_seed(seed: int, stage_dir: str, pid: str) -> int:
    h = hashlib.sha256(f"{seed}/{stage_dir}/{pid}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def _context(task: Task) -> StageContext:
    return StageContext(run_dir=task.run_dir, stage=task.stage_dir, stage_key=task.key,
                        partition_id=task.pid, seed=_partition_seed(task.seed, task.stage_dir, task.pid),
                        on_error=task.params.on_error, upstream=task.upstream)


def _write_outputs(stage: Stage, ctx: StageContext, out: pa.Table | dict[str, pa.Table], stage_dir: str,
                   pid: str) -> dict[str, int]:
    if isinstance(out, pa.Table):
        out = {stage.outputs[0]: out}
    declared = stage.output_schemas()
    unknown = set(out) - set(declared)
    if unknown:
        raise CurateError(f"stage {stage.key} returned undeclared tables {sorted(unknown)}")
    rows = {}
    for name, schema in declared.items():
        table = out.get(name)
        if table is None:
            table = schema.empty_table()
        table = schemas.check_schema(table, schema, f"{stage.key} output '{name}'")
        sub = None if name == stage.outputs[0] else name
        io.write_parquet(table, io.part_path(ctx.run_dir, stage_dir, pid, sub))
        rows[name] = table.num_rows
    q = ctx.quarantine_table()
    io.write_parquet(q, io.part_path(ctx.run_dir, stage_dir, pid, "quarantine"))
    rows["quarantine"] = q.num_rows
    return rows


def run_task(task: Task) -> dict[str, Any]:
    """Run one partition; return its manifest (or an error record). Runs on a worker."""
    t0 = time.perf_counter()
    try:
        cls = registry.get(task.key)
        stage = instance(cls, task.params, task.cfg_hash)
        ctx = _context(task)
        if task.kind == "source":
            out = stage.read(Partition(task.pid, task.payload), ctx)
            rows = _write_outputs(stage, ctx, out, task.stage_dir, task.pid)
        elif task.kind == "process":
            table = ctx.read(stage.inputs[0])
            out = stage.process(table, ctx)
            rows = _write_outputs(stage, ctx, out, task.stage_dir, task.pid)
        elif task.kind == "finish":  # payload: (state from reduce, reduce-level counters or None)
            state, counters = task.payload
            if counters:
                ctx.counters.update(counters)
            out = stage.finish(ctx.read(stage.inputs[0]), ctx, state)
            rows = _write_outputs(stage, ctx, out, task.stage_dir, task.pid)
        elif task.kind == "map":
            table = ctx.read(stage.inputs[0])
            mapped = schemas.check_schema(stage.map(table, ctx), stage.map_schema, f"{stage.key} map output")
            # a map task's stage_dir is already the stage's MAP_DIR (see _run_global)
            io.write_parquet(mapped, io.part_path(task.run_dir, task.stage_dir, task.pid))
            q = ctx.quarantine_table()
            io.write_parquet(q, io.part_path(task.run_dir, task.stage_dir, task.pid, "quarantine"))
            rows = {"map": mapped.num_rows, "quarantine": q.num_rows}
        else:  # pragma: no cover - programming error
            raise ValueError(task.kind)
    except (CurateError, SampleError) as err:
        return {"error": str(err), "traceback": traceback.format_exc(), "partition": task.pid}
    except Exception as err:  # noqa: BLE001 - reported with stage and partition by the driver
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(), "partition": task.pid}
    manifest = {"partition": task.pid, "stage": task.key, "config_hash": task.cfg_hash, "rows": rows,
                "stats": dict(ctx.counters), "seconds": round(time.perf_counter() - t0, 4)}
    io.write_json(manifest, io.manifest_path(task.run_dir, task.stage_dir, task.pid))
    return manifest


# ----------------------------------------------------------------------- executors
class SyncExecutor:
    """Runs tasks one after another in this process (``--scheduler sync``)."""

    name = "sync"

    def as_completed(self, fn: Callable, items: list) -> Iterator[Any]:
        for item in items:
            yield fn(item)

    def map(self, fn: Callable, items: list) -> list:
        return [fn(x) for x in items]

    def close(self) -> None:
        pass


def _cluster_failure(err: BaseException) -> bool:
    """True for the errors a client sees when its scheduler or comms go away (not a task's own error)."""
    import asyncio
    import concurrent.futures

    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    return isinstance(err, (asyncio.CancelledError, concurrent.futures.CancelledError, CommClosedError,
                            ConnectionError, asyncio.TimeoutError, TimeoutError, KilledWorker))


class DaskExecutor:
    """Runs tasks on a Dask distributed cluster (embedded LocalCluster or remote).

    An existing cluster must have a worker within ``worker_wait`` seconds (else :class:`ConfigError`);
    a scheduler lost mid-run is a :class:`ClusterError` (exit 1), and rerunning resumes."""

    def __init__(self, address: str | None, workers: int | None, worker_wait: float | None = None):
        import dask
        from distributed import Client, LocalCluster

        dask.config.set({"distributed.worker.daemon": False})
        self.cluster = None
        if address:
            try:
                self.client = Client(address, timeout="10s")
            except OSError as err:
                raise ConfigError(f"cannot reach Dask scheduler at {address}: {err}. Start one with "
                                  f"`dask scheduler` and `dask worker {address}`, or use --scheduler sync") from None
            self.name = address
            # a lost scheduler is reported once, as a ClusterError; not as reconnect tracebacks
            # (CURATE_DEBUG=1 keeps distributed's client log)
            if not os.environ.get("CURATE_DEBUG"):
                logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
            self._wait_for_workers(address, worker_wait)
        else:
            n = workers or max(1, os.cpu_count() or 1)
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
            self.name = f"local cluster ({n} workers)"

    def _wait_for_workers(self, address: str, wait: float | None) -> None:
        if wait is None:
            wait = float(os.environ.get("CURATE_WORKER_WAIT") or WORKER_WAIT_S)
        try:
            self.client.wait_for_workers(1, timeout=wait)
        except (TimeoutError, OSError) as err:
            self._quiet_close()
            if not isinstance(err, TimeoutError) and not _cluster_failure(err):
                raise
            raise ConfigError(f"no Dask workers connected to {address} within {wait:g} s; start one with "
                              f"`dask worker {address}` (curate installed, the run dir and inputs visible), "
                              f"wait longer with CURATE_WORKER_WAIT=SECONDS, or use --scheduler sync") from None

    def _lost(self, err: BaseException) -> ClusterError:
        from distributed.scheduler import KilledWorker

        self._quiet_close()
        if isinstance(err, KilledWorker):
            return ClusterError(f"a task killed every Dask worker that ran it ({err}); a worker ran out of memory "
                                f"or crashed: give workers more memory (or lower partition_size) and rerun to resume")
        return ClusterError(f"lost the Dask scheduler {self.name} during the run "
                            f"({type(err).__name__}{': ' + str(err) if str(err) else ''}); finished partitions "
                            f"are kept: restart the scheduler and workers and rerun the same command to resume")

    def as_completed(self, fn: Callable, items: list) -> Iterator[Any]:
        from distributed import as_completed

        try:
            futures = self.client.map(fn, items, pure=False)
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException as err:
            if _cluster_failure(err):
                raise self._lost(err) from err
            raise

    def map(self, fn: Callable, items: list) -> list:
        try:
            return self.client.gather(self.client.map(fn, items, pure=False))
        except BaseException as err:
            if _cluster_failure(err):
                raise self._lost(err) from err
            raise

    def _quiet_close(self) -> None:
        logging.getLogger("distributed").setLevel(logging.CRITICAL)  # no reconnect tracebacks after we gave up
        try:
            self.client.close(timeout=2)
        except BaseException:  # noqa: BLE001 - the scheduler is gone: nothing to close cleanly
            pass
        self.closed = True

    def close(self) -> None:
        if getattr(self, "closed", False):
            return
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(scheduler: str | None, workers: int | None, worker_wait: float | None = None):
    scheduler = scheduler or os.environ.get("CURATE_SCHEDULER") or "local"
    if scheduler == "sync":
        return SyncExecutor()
    if scheduler == "local":
        return DaskExecutor(None, workers)
    if scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        return DaskExecutor(scheduler, workers, worker_wait)
    raise ConfigError(f"--scheduler '{scheduler}': use 'sync', 'local' or a Dask address like tcp://HOST:8786")


# -------------------------------------------------------------------------- driver
@dataclass
class StagePlan:
    spec: StageSpec
    cls: type[Stage]
    cfg_hash: str
    upstream: tuple[Upstream, ...]
    stats: dict[str, Any] = field(default_factory=dict)


def plan_stages(cfg: PipelineConfig) -> list[StagePlan]:
    plans, upstream, h = [], [], ""
    for spec in cfg.specs():
        cls = registry.get(spec.key)
        h = config_hash(spec, h, cls.version)
        plans.append(StagePlan(spec, cls, h, tuple(upstream)))
        upstream.append(Upstream(spec.dirname, tuple(cls.outputs)))
    return plans


def _done(run_dir: str, stage_dir: str, pid: str, cfg_hash: str) -> bool:
    path = io.manifest_path(run_dir, stage_dir, pid)
    if not io.exists(path):
        return False
    try:
        return io.read_json(path).get("config_hash") == cfg_hash
    except Exception:  # noqa: BLE001 - unreadable manifest: recompute
        return False


def _remove_stale(run_dir: str, stage_dir: str, keep: set[str], subdirs: tuple[str, ...]) -> None:
    for sub in (None, *subdirs):
        for pid in io.list_partitions(run_dir, stage_dir, sub):
            if pid not in keep:
                io.remove(io.part_path(run_dir, stage_dir, pid, sub))
    for pid in io.list_partitions(run_dir, stage_dir, None, ext="json"):
        if pid not in keep:
            io.remove(io.manifest_path(run_dir, stage_dir, pid))


class Runner:
    """Plans and executes a pipeline in a run directory."""

    def __init__(self, cfg: PipelineConfig, run_dir: str | None = None, scheduler: str | None = None,
                 workers: int | None = None, force: bool = False, progress: bool = True,
                 worker_wait: float | None = None):
        self.cfg = cfg
        run_dir = run_dir or cfg.run_dir
        if not run_dir:
            raise ConfigError("no run directory: pass --run-dir or set `run_dir:` in the pipeline")
        # absolute on the driver: a worker started in another directory writes to the same place
        self.run_dir = absolute_path(str(run_dir)).rstrip("/")
        check_run_dir(self.run_dir)
        self.scheduler, self.workers, self.force, self.progress = scheduler, workers, force, progress
        self.worker_wait = worker_wait
        self.plans = plan_stages(cfg)

    # ---- planning (also used by --dry-run) ----------------------------------------
    def _base_ctx(self, plan: StagePlan, pid: str | None = None) -> StageContext:
        return StageContext(run_dir=self.run_dir, stage=plan.spec.dirname, stage_key=plan.spec.key,
                            partition_id=pid, seed=self.cfg.seed, on_error=plan.spec.params.on_error,
                            upstream=plan.upstream)

    def partitions(self, plan: StagePlan) -> list[Partition]:
        if issubclass(plan.cls, SourceStage):
            stage = plan.cls(plan.spec.params)
            return stage.plan(self._base_ctx(plan))
        ctx = self._base_ctx(plan)
        pids = ctx.partition_ids(plan.cls.inputs[0])
        if plan.cls.new_partitions is not Stage.new_partitions:  # a stage that adds partitions (inflate.generate)
            pids += [p for p in plan.cls(plan.spec.params).new_partitions(ctx) if p not in pids]
        return [Partition(pid) for pid in pids]

    def dry_run(self) -> list[dict[str, Any]]:
        rows = []
        for plan in self.plans:
            try:
                parts = self.partitions(plan)
                n = len(parts)
                done = sum(_done(self.run_dir, plan.spec.dirname, p.id, plan.cfg_hash) for p in parts)
            except CurateError:
                raise
            except Exception:  # noqa: BLE001 - inputs not there yet
                n, done = None, 0
            if n == 0 and not issubclass(plan.cls, SourceStage):
                n = None  # known only once upstream has run
            rows.append({"stage": plan.spec.dirname, "key": plan.spec.key, "kind": _kind(plan.cls),
                         "inputs": list(plan.cls.inputs) or ["(sources)"], "outputs": list(plan.cls.outputs),
                         "config_hash": plan.cfg_hash, "partitions": n,
                         "will_skip": 0 if self.force else done})
        return rows

    # ---- execution ------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        with io.RunLock(self.run_dir):
            stages = [{k: ("**********" if k.endswith("_secret") and v else v) for k, v in st.items()}
                      if isinstance(st, dict) else st for st in self.cfg.stages]  # secrets never hit the disk
            io.write_json({"name": self.cfg.name, "description": self.cfg.description, "seed": self.cfg.seed,
                           "stages": stages},
                          io.join(self.run_dir, "pipeline.json"))
            executor = make_executor(self.scheduler, self.workers, self.worker_wait)
            try:
                with _progress(self.progress) as bar:
                    for plan in self.plans:
                        self._run_stage(plan, executor, bar)
            finally:
                executor.close()
            summary = stats.write_summary(self.run_dir, self.cfg, self.plans, time.perf_counter() - t0,
                                          scheduler=executor.name)
        return summary

    def _tasks(self, plan: StagePlan, kind: str, parts: list[Partition], stage_dir: str) -> list[Task]:
        return [Task(kind, plan.spec.key, plan.spec.params, stage_dir, self.run_dir, p.id, plan.cfg_hash,
                     self.cfg.seed, plan.upstream, p.payload)
                for p in parts if self.force or not _done(self.run_dir, stage_dir, p.id, plan.cfg_hash)]

    def _execute(self, plan: StagePlan, executor, tasks: list[Task], bar, label: str) -> list[dict]:
        manifests = []
        task_id = bar.add_task(label, total=len(tasks)) if bar is not None else None
        for result in executor.as_completed(run_task, tasks):
            if "error" in result:
                raise StageError(plan.spec.name, result["partition"], result["error"]).with_traceback(None) \
                    from _Remote(result["traceback"])
            manifests.append(result)
            if bar is not None:
                bar.advance(task_id)
        return manifests

    def _run_stage(self, plan: StagePlan, executor, bar) -> None:
        t0 = time.perf_counter()
        stage_dir = plan.spec.dirname
        parts = self.partitions(plan)
        keep = {p.id for p in parts}
        secondary = tuple(plan.cls.outputs[1:]) + ("quarantine",)
        _remove_stale(self.run_dir, stage_dir, keep, secondary)
        label = f"{stage_dir}"
        if issubclass(plan.cls, GlobalStage):
            ran = self._run_global(plan, executor, parts, bar, label)
        else:
            tasks = self._tasks(plan, "source" if issubclass(plan.cls, SourceStage) else "process", parts, stage_dir)
            self._execute(plan, executor, tasks, bar, label)
            ran = len(tasks)
        plan.stats = {"partitions": len(parts), "recomputed": ran, "seconds": round(time.perf_counter() - t0, 3)}

    def _run_global(self, plan: StagePlan, executor, parts: list[Partition], bar, label: str) -> int:
        stage_dir = plan.spec.dirname
        todo = [p for p in parts if self.force or not _done(self.run_dir, stage_dir, p.id, plan.cfg_hash)]
        if not todo:
            return 0
        stage = instance(plan.cls, plan.spec.params, plan.cfg_hash)
        mapped: dict[str, pa.Table] = {}
        map_dir = io.join(stage_dir, MAP_DIR)
        if plan.cls.map_schema is not None:
            tasks = self._tasks(plan, "map", parts, map_dir)
            self._execute(plan, executor, tasks, bar, f"{label} (map)")
            for p in parts:
                mapped[p.id] = io.read_parquet(io.part_path(self.run_dir, map_dir, p.id))
        ctx = self._base_ctx(plan)
        ctx.partitions = tuple(p.id for p in parts)
        ctx.mapper = executor.map
        t0 = time.perf_counter()
        try:
            outputs = stage.reduce(ctx, mapped)
        except (CurateError, SampleError):
            raise
        except Exception as err:  # noqa: BLE001
            raise StageError(plan.spec.name, "(all)", f"{type(err).__name__}: {err}") from err
        seconds = time.perf_counter() - t0
        missing = set(ctx.partitions) - set(outputs)
        if missing:
            raise StageError(plan.spec.name, "(all)", f"reduce returned no output for partitions {sorted(missing)[:5]}")
        if plan.cls.has_finish():
            # reduce-level counters and quarantine go with the first partition
            if ctx.quarantined:
                raise StageError(plan.spec.name, "(all)", "a stage with finish() must quarantine in finish, not reduce")
            first = ctx.partitions[0] if ctx.partitions else None
            payloads = {pid: (outputs[pid], dict(ctx.counters) if pid == first else None) for pid in ctx.partitions}
            tasks = [Task("finish", plan.spec.key, plan.spec.params, stage_dir, self.run_dir, p.id, plan.cfg_hash,
                          self.cfg.seed, plan.upstream, payloads[p.id]) for p in parts]
            self._execute(plan, executor, tasks, bar, f"{label} (finish)")
            return len(ctx.partitions)
        for pid in ctx.partitions:
            pctx = self._base_ctx(plan, pid)
            if pid == ctx.partitions[0]:  # reduce-level counters and quarantine go with the first partition
                pctx.counters, pctx.quarantined = ctx.counters, ctx.quarantined
            rows = _write_outputs(stage, pctx, outputs[pid], stage_dir, pid)
            io.write_json({"partition": pid, "stage": plan.spec.key, "config_hash": plan.cfg_hash, "rows": rows,
                           "stats": dict(pctx.counters), "seconds": round(seconds / len(ctx.partitions), 4)},
                          io.manifest_path(self.run_dir, stage_dir, pid))
        return len(ctx.partitions)


class _Remote(Exception):
    """Carries a worker's traceback text for ``--debug``."""

    def __str__(self) -> str:
        return self.args[0]


def _kind(cls: type[Stage]) -> str:
    if issubclass(cls, SourceStage):
        return "source"
    if issubclass(cls, GlobalStage):
        return "global"
    return "map"


@contextmanager
def _progress(enabled: bool):
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        yield bar


def run_pipeline(cfg: PipelineConfig, run_dir: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Python entry point: ``run_pipeline(load_pipeline("p.yaml"), scheduler="sync")``."""
    return Runner(cfg, run_dir, **kwargs).run()
