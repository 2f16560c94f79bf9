"""Counts and accounting: every ingested input is kept, removed or quarantined.

``ingested = kept + removed + quarantined`` is computed from the tables on disk
(not from counters), written to ``RUN_DIR/summary.json`` and printed.

* ingested    - rows the source stages produced + inputs they quarantined
* quarantined - quarantine entries of source stages (incl. on_error=skip) + samples a later stage quarantined
* removed     - ingested rows in ``removals`` tables (dedup.apply's removal log)
* kept        - real (non-synthetic) rows of the final ``samples`` overlay that no
  later stage quarantined

Two invariants of dedup are checked from the same tables: every removed sample
names a representative in the final kept set (``representatives_not_kept``),
and no duplicate group - a connected component of removal -> representative
edges - has lost all its members (``groups_emptied``). Both must be 0; a run
where either is not fails like an unbalanced one. Filter removals (quality,
outliers, decontaminate: ``schemas.is_filter``) have no representative and are
left out of both checks; they count as removed.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import io, schemas
from curate.stage import StageContext, Upstream


def _stage_rows(run_dir: str, stage_dir: str) -> tuple[dict[str, int], dict[str, int], int]:
    rows: collections.Counter = collections.Counter()
    counters: collections.Counter = collections.Counter()
    parts = io.list_partitions(run_dir, stage_dir, None, ext="json")
    for pid in parts:
        m = io.read_json(io.manifest_path(run_dir, stage_dir, pid))
        rows.update(m.get("rows", {}))
        counters.update(m.get("stats", {}))
    return dict(rows), dict(counters), len(parts)


def accounting(run_dir: str, upstream: list[Upstream], source_dirs: set[str]) -> dict[str, Any]:
    ctx = StageContext(run_dir=run_dir, stage="summary", stage_key="summary", partition_id=None, seed=0,
                       on_error="raise", upstream=tuple(upstream))
    ingested = quarantined = 0
    later_q = ctx.quarantined_sample_ids()  # source stages quarantine inputs, not samples: no ids there
    ingested_ids: list = []
    for up in upstream:
        if up.dirname in source_dirs:
            rows, _, _ = _stage_rows(run_dir, up.dirname)
            quarantined += rows.get("quarantine", 0)
            ingested += rows.get("samples", 0) + rows.get("quarantine", 0)
            for pid in io.list_partitions(run_dir, up.dirname):
                ingested_ids.append(io.read_parquet(io.part_path(run_dir, up.dirname, pid),
                                                    columns=["sample_id"]).column("sample_id").combine_chunks())
    samples = ctx.read_all("samples", columns=["sample_id", "is_synthetic"]) if ctx.has("samples") else None
    kept = synthetic = 0
    if samples is not None and samples.num_rows:
        real = samples.filter(pc.invert(samples.column("is_synthetic")))
        ids = real.column("sample_id").to_pylist()
        kept = sum(1 for x in ids if x not in later_q)
        synthetic = samples.num_rows - real.num_rows
    removed = 0
    lost = {"representatives_not_kept": 0, "groups_emptied": 0}
    if ctx.has("removals"):
        rem = ctx.read_all("removals", columns=["sample_id", "representative_id", "method"])
        ids = rem.column("sample_id")
        dup = [not schemas.is_filter(m) for m in rem.column("method").to_pylist()]
        # only ingested rows are part of the balance (dedup after inflate may also remove generated rows)
        removed = int(pc.sum(pc.is_in(ids, pa.concat_arrays(ingested_ids))).as_py() or 0) if ingested_ids else 0
        kept_ids = set() if samples is None else set(samples.column("sample_id").to_pylist()) - later_q
        lost = dedup_losses([s for s, d in zip(ids.to_pylist(), dup) if d],
                            [r for r, d in zip(rem.column("representative_id").to_pylist(), dup) if d], kept_ids)
    quarantined += len(later_q)
    return {
        "ingested": ingested,
        "kept": kept,
        "removed": removed,
        "quarantined": quarantined,
        "synthetic_added": synthetic,
        **lost,
        "balanced": kept + removed + quarantined == ingested and not any(lost.values()),
    }


def dedup_losses(removed: list[str], reps: list[str | None], kept: set[str]) -> dict[str, int]:
    """How many removals name a representative that is not kept, and how many duplicate groups
    (components of removed -> representative edges) have no kept member."""
    import numpy as np

    from curate.ops.unionfind import components

    names = sorted(set(removed) | {r for r in reps if r is not None})
    pos = {s: k for k, s in enumerate(names)}
    src = np.array([pos[s] for s, r in zip(removed, reps) if r is not None], np.int64)
    dst = np.array([pos[r] for r in reps if r is not None], np.int64)
    labels = components(len(names), src, dst)
    alive = np.zeros(len(names), bool)
    np.logical_or.at(alive, labels, np.array([s in kept for s in names], bool))
    groups = np.unique(labels)
    return {"representatives_not_kept": sum(1 for r in reps if r not in kept),
            "groups_emptied": int((~alive[groups]).sum())}


def write_summary(run_dir: str, cfg, plans, seconds: float, scheduler: str = "") -> dict[str, Any]:
    from curate.stage import SourceStage

    stages = {}
    upstream = []
    for plan in plans:
        d = plan.spec.dirname
        rows, counters, nparts = _stage_rows(run_dir, d)
        stages[d] = {"key": plan.spec.key, "config_hash": plan.cfg_hash, "partitions": nparts,
                     "rows": rows, "counters": counters, "params": plan.spec.params_json(), **plan.stats}
        upstream.append(Upstream(d, tuple(plan.cls.outputs)))
    sources = {p.spec.dirname for p in plans if issubclass(p.cls, SourceStage)}
    summary = {
        "pipeline": cfg.name,
        "run_dir": run_dir,
        "seed": cfg.seed,
        "scheduler": scheduler,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(seconds, 2),
        "stages": stages,
        "accounting": accounting(run_dir, upstream, sources),
    }
    io.write_json(summary, io.join(run_dir, "summary.json"))
    return summary


def status(run_dir: str) -> dict[str, Any]:
    """What is in a run directory: stages, partitions done, rows (reads manifests only)."""
    fs, p = io.fs_and_path(run_dir)
    if not fs.exists(p):
        from curate.errors import ConfigError

        raise ConfigError(f"run directory '{run_dir}' does not exist; run `curate run PIPELINE.yaml --run-dir {run_dir}`")
    out = {"run_dir": run_dir, "locked": io.exists(io.join(run_dir, "run.lock")), "stages": {}}
    for name in sorted(x.rsplit("/", 1)[-1] for x in fs.ls(p, detail=False)):
        if len(name) > 3 and name[:2].isdigit() and name[2] == "_":
            rows, counters, nparts = _stage_rows(run_dir, name)
            out["stages"][name] = {"partitions_done": nparts, "rows": rows, "counters": counters}
    summary = io.join(run_dir, "summary.json")
    if io.exists(summary):
        out["summary"] = io.read_json(summary)
    return out
