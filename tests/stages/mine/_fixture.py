"""A source stage that emits planted samples + embeddings + dedup decisions for mining tests."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import registry, schemas
from curate.config import StageParams
from curate.samples import samples_from_arrays
from curate.stage import Partition, SourceStage


class PlantedParams(StageParams):
    path: str


class Planted(SourceStage):
    key = "test.planted"
    outputs = ("samples", "embeddings", "decisions")

    def output_schemas(self):
        return {"samples": schemas.SAMPLES, "embeddings": schemas.embeddings_schema(1),
                "decisions": schemas.DECISIONS}

    Params = PlantedParams

    def plan(self, ctx):  # ``path`` is a directory of <pid>/<table>.parquet files (no pickle anywhere)
        return [Partition(pid) for pid in sorted(os.listdir(self.params.path))]

    def read(self, partition, ctx):
        d = os.path.join(self.params.path, partition.id)
        return {t: pq.read_table(os.path.join(d, f"{t}.parquet")) for t in self.outputs}


registry.register("test.planted", "tests.stages.mine._fixture:Planted")


def unit(d: int, main: int, c: float, other: int) -> np.ndarray:
    """A unit vector with cosine ``c`` to axis ``main``, the rest along axis ``other``."""
    v = np.zeros(d, np.float32)
    v[main] = c
    v[other] = np.sqrt(max(0.0, 1 - c * c))
    return v


def make_partitions(vectors: np.ndarray, path: str, n_parts: int = 2, decisions: list[dict] | None = None,
                    **columns) -> list[str]:
    """Write a planted dataset: row i has image i (unique pixels), embedding vectors[i], extra columns."""
    n = len(vectors)
    arrs = [np.full((4, 4), i % 256, np.uint8) + np.eye(4, dtype=np.uint8) * (i // 256) for i in range(n)]
    samples = samples_from_arrays(arrs, **columns)
    ids = samples.column("sample_id").to_pylist()
    emb = pa.table({"sample_id": ids, "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.astype(np.float32).ravel()), vectors.shape[1])})
    dec = decisions or []
    bounds = np.linspace(0, n, n_parts + 1).astype(int)
    for p in range(n_parts):
        a, b = bounds[p], bounds[p + 1]
        pid_ids = set(ids[a:b])
        d = pa.Table.from_pylist([r for r in dec if r["sample_id"] in pid_ids], schema=schemas.DECISIONS)
        out = os.path.join(path, f"p{p}")
        os.makedirs(out, exist_ok=True)
        for name, t in (("samples", samples.slice(a, b - a)), ("embeddings", emb.slice(a, b - a)), ("decisions", d)):
            pq.write_table(t, os.path.join(out, f"{name}.parquet"))
    return ids


def decision(sid, rep, score, method="phash", keep=False):
    return {"sample_id": sid, "method": method, "keep": keep, "representative_id": rep, "score": score,
            "cluster_id": None, "reason": "planted"}
