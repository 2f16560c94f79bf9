"""``decontaminate``: remove from the pretraining set every sample that leaks an evaluation set.

Evaluation sets are read with the ingest readers (same source keys as ``ingest.sources``) inside
this stage; they are never written to the run's samples or shards. A pretraining sample is removed
when it matches any evaluation sample by one of the routes (checked in this order; all matches are
logged in the ``contamination`` table):

* ``exact``     - identical canonical pixels (``pixel_hash``);
* ``phash``     - 64-bit pHash within ``phash_threshold`` bits (Zauner 2010; ``curate.ops.phash``);
* ``embedding`` - cosine >= ``embedding_threshold`` under the run's own ``embed`` stage (same encoder
  and, for ``pixels``, the same fitted PCA), when the pipeline embeds before this stage;
* ``patient`` / ``study`` - DICOM PatientID / StudyInstanceUID equal, compared as salted hashes
  (hashed with the run's secret salt, see ``curate.secrets``) read from the file headers: no patient of a test set
  stays in pretraining even when its images differ. Raw identifiers are never written.

A removal is a filter decision (method ``decontaminate:<set>``, no representative; the matched
evaluation sample id in ``cluster_id``, route and score in the reason). Counters
``<set>:<route>`` give how many pretraining samples each route found per set.

YAML::

    - stage: decontaminate
      eval_sets:
        - name: test
          sources: [{type: dicom, path: data/split/test}]
      phash_threshold: 4       # null: route off
      embedding_threshold: 0.98
      patient: true
      study: true
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate import imaging, io, schemas, secrets
from curate.config import StageParams
from curate.ops import faiss_knn, phash
from curate.sources import salted_group
from curate.stage import GlobalStage, StageContext
from curate.stages import filters
from curate.stages.dedup._decisions import concat_mapped
from curate.stages.ingest import Ingest, IngestParams, Source
from curate.stages.quality.medical import header_tags

ROUTES = ("exact", "phash", "embedding", "patient", "study")


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    sources: list[Source] = Field(..., min_length=1)


class DecontaminateParams(StageParams):
    eval_sets: list[EvalSet] = Field(..., min_length=1)
    exact: bool = True
    phash_threshold: int | None = Field(4, ge=0, le=32, description="pHash Hamming radius; null disables")
    embedding_threshold: float | None = Field(0.98, gt=0, le=1, description="cosine; null disables")
    patient: bool = True
    study: bool = True


MAP_SCHEMA = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("pixel_hash", pa.string(), nullable=False),
    pa.field("phash", pa.uint64()),
    pa.field("patient", pa.string()),
    pa.field("study", pa.string()),
])


def _salt(ctx: StageContext) -> str:
    """The run's secret salt (``curate.secrets``): run and evaluation identifiers are hashed with the same one."""
    return secrets.resolve_salt(ctx.run_dir)[0]


def _keys(table: pa.Table, salt: str, run_dir: str | None = None) -> dict[str, list]:
    """pHash and salted patient / study keys of a samples table (redacted paths resolved in ``run_dir``)."""
    arrays = [imaging.decode_png(b) for b in table.column("image").to_pylist()]
    ph = phash.hash_arrays(arrays)[0] if arrays else np.zeros(0, np.uint64)
    patient, study, seen = [], [], {}
    uris = table.column("source_uri").to_pylist()
    for uri, path in zip(uris, secrets.source_paths(run_dir, uris) if run_dir else uris):
        if uri not in seen:
            tags = header_tags(path, ("PatientID", "StudyInstanceUID"))
            seen[uri] = (None, None) if tags is None else tuple(
                salted_group(salt, kind, tags[t]) if tags[t] else None
                for kind, t in (("patient", "PatientID"), ("study", "StudyInstanceUID")))
        patient.append(seen[uri][0])
        study.append(seen[uri][1])
    return {"phash": ph, "patient": patient, "study": study}


class Decontaminate(GlobalStage):
    key = "decontaminate"
    version = "1"
    Params = DecontaminateParams
    inputs = ("samples",)
    outputs = ("decisions", "contamination")
    map_schema = MAP_SCHEMA

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        k = _keys(table, _salt(ctx), ctx.run_dir)
        return pa.table({"sample_id": table.column("sample_id"), "pixel_hash": table.column("pixel_hash"),
                         "phash": pa.array(k["phash"], pa.uint64()), "patient": pa.array(k["patient"], pa.string()),
                         "study": pa.array(k["study"], pa.string())}, schema=MAP_SCHEMA)

    # ---- evaluation sets ---------------------------------------------------------------
    def _read_eval(self, es: EvalSet, ctx: StageContext) -> pa.Table:
        # read in place, never redacted: nothing of an evaluation set is written to the run
        ing = Ingest(IngestParams(sources=[s.model_copy(update={"redact_paths": False}) for s in es.sources]))
        sub = dataclasses.replace(ctx, stage=f"eval_{es.name}", stage_key="ingest", counters=ctx.counters.__class__(),
                                  quarantined=[], on_error="quarantine")
        parts = [ing.read(part, sub) for part in ing.plan(sub)]
        ctx.count(f"{es.name}:eval_samples", sum(t.num_rows for t in parts))
        ctx.count(f"{es.name}:eval_unreadable", len(sub.quarantined))
        return pa.concat_tables(parts) if parts else schemas.SAMPLES.empty_table()

    def _embedder(self, ctx: StageContext):
        """The run's embed stage rebuilt from pipeline.json, with a context that sees what it saw."""
        producers = ctx.producers("embeddings")
        if not producers:
            return None, None
        up = producers[-1]
        entries = io.read_json(io.join(ctx.run_dir, "pipeline.json"))["stages"]
        entry = dict(entries[int(up.dirname[:2])])
        from curate import registry

        cls = registry.get(entry.pop("stage"))
        emb = cls(cls.Params(**entry))
        emb.setup()
        before = ctx.upstream[: [u.dirname for u in ctx.upstream].index(up.dirname)]
        return emb, dataclasses.replace(ctx, stage=up.dirname, upstream=before, partition_id=None,
                                        counters=ctx.counters.__class__(), quarantined=[])

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, dict[str, pa.Table]]:
        p: DecontaminateParams = self.params
        table, part = concat_mapped(ctx, mapped, MAP_SCHEMA)
        ids = np.array(table.column("sample_id").to_pylist(), dtype=object)
        n = ids.size
        x = None
        emb = None
        if p.embedding_threshold is not None:
            emb, emb_ctx = self._embedder(ctx)
            if emb is not None:
                e = ctx.read_all("embeddings")
                pos = {s: i for i, s in enumerate(e.column("sample_id").to_pylist())}
                d = e.schema.field("embedding").type.list_size
                allx = e.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, d)
                rows = np.array([pos.get(s, -1) for s in ids], np.int64)
                x = np.zeros((n, d), np.float32)
                x[rows >= 0] = allx[rows[rows >= 0]]
                has_x = rows >= 0
        matches: list[tuple[int, int, int, str, float]] = []  # (row, set, route, eval id, score)
        for si, es in enumerate(p.eval_sets):
            ev = self._read_eval(es, ctx)
            ev_ids = ev.column("sample_id").to_pylist()
            if not ev_ids:
                continue
            k = _keys(ev, _salt(ctx))
            found = {r: 0 for r in ROUTES}

            def add(rows, route, eval_idx, score):
                for r, j, s in zip(rows, eval_idx, score):
                    matches.append((int(r), si, ROUTES.index(route), ev_ids[int(j)], float(s)))
                found[route] += len(rows)
            if p.exact:
                where = {h: j for j, h in reversed(list(enumerate(ev.column("pixel_hash").to_pylist())))}
                hit = [(i, where[h]) for i, h in enumerate(table.column("pixel_hash").to_pylist()) if h in where]
                add([a for a, _ in hit], "exact", [b for _, b in hit], [1.0] * len(hit))
            if p.phash_threshold is not None and n:
                tr = table.column("phash").to_numpy()
                for a in range(0, n, 4096):
                    dist = np.bitwise_count(tr[a: a + 4096, None] ^ k["phash"][None, :])
                    j = dist.argmin(axis=1)
                    best = dist[np.arange(len(j)), j]
                    r = np.flatnonzero(best <= p.phash_threshold)
                    add(r + a, "phash", j[r], 1.0 - best[r] / 64.0)
            if x is not None and n:
                ex = emb.process(ev, emb_ctx)
                d = ex.schema.field("embedding").type.list_size
                evx = ex.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, d)
                at = {s: j for j, s in enumerate(ev_ids)}
                ex_pos = [at[s] for s in ex.column("sample_id").to_pylist()]
                sims, j = faiss_knn.exact_search(evx, x, 1)
                r = np.flatnonzero(has_x & (sims[:, 0] >= p.embedding_threshold))
                add(r, "embedding", [ex_pos[int(t)] for t in j[r, 0]], sims[r, 0])
            for route, on in (("patient", p.patient), ("study", p.study)):
                if not on:
                    continue
                where = {h: j for j, h in reversed(list(enumerate(k[route]))) if h is not None}
                hit = [(i, where[h]) for i, h in enumerate(table.column(route).to_pylist()) if h in where]
                add([a for a, _ in hit], route, [b for _, b in hit], [1.0] * len(hit))
            for route, c in found.items():
                ctx.count(f"{es.name}:{route}", c)
        matches.sort()
        first: dict[int, tuple] = {}
        for m in matches:
            first.setdefault(m[0], m)
        ctx.count("removed", len(first))
        names = [es.name for es in p.eval_sets]
        rows = sorted(first)
        dec = filters.decisions(
            [ids[r] for r in rows], [f"decontaminate:{names[first[r][1]]}" for r in rows],
            [first[r][4] for r in rows],
            [f"decontaminate: matches evaluation set '{names[first[r][1]]}' by {ROUTES[first[r][2]]} "
             f"(score {first[r][4]:.4g})" for r in rows], [first[r][3] for r in rows])
        con = pa.table({"sample_id": pa.array([ids[m[0]] for m in matches], pa.string()),
                        "eval_set": pa.array([names[m[1]] for m in matches], pa.string()),
                        "route": pa.array([ROUTES[m[2]] for m in matches], pa.string()),
                        "eval_sample_id": pa.array([m[3] for m in matches], pa.string()),
                        "score": pa.array([m[4] for m in matches], pa.float64())}, schema=schemas.CONTAMINATION)
        d_part = np.array([part[r] for r in rows], np.int64)
        c_part = np.array([part[m[0]] for m in matches], np.int64)
        return {pid: {"decisions": dec.filter(pa.array(d_part == k)), "contamination": con.filter(pa.array(c_part == k))}
                for k, pid in enumerate(ctx.partitions)}
