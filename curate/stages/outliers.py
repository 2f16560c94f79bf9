"""``outliers``: kNN-distance uniqueness on the embeddings, flag or remove the most unusual samples.

Uniqueness is FiftyOne Brain's ``compute_uniqueness``: the distances to a sample's 3 nearest
neighbours (itself excluded), weighted 0.6 / 0.3 / 0.1 and averaged; ``uniqueness_norm`` divides by
the run's maximum. Embeddings are L2-normalised, so the euclidean distance is ``sqrt(2 - 2 cos)``
(exact inner-product search, ``curate.ops.faiss_knn``). A sample is an outlier when its uniqueness
lies above ``q3 + iqr_factor * IQR`` of all samples (Tukey's far-out fence), or, with
``top_fraction``, when it is among that share of the most unique (ties by sample_id). With
``action: remove`` outliers get filter decisions (method ``outliers``, no representative).

YAML::

    - stage: outliers
      k: 3
      iqr_factor: 3.0
      top_fraction: null     # e.g. 0.01: flag the 1 % most unique instead of the fence
      action: flag           # or remove
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curate import schemas
from curate.config import StageParams
from curate.ops import faiss_knn
from curate.stage import GlobalStage, StageContext
from curate.stages import filters
from curate.stages.dedup._decisions import concat_mapped

FIFTYONE_WEIGHTS = (0.6, 0.3, 0.1)


class OutlierParams(StageParams):
    k: int = Field(3, ge=1, le=64, description="neighbours (FiftyOne: 3)")
    weights: list[float] | None = Field(None, description="per-neighbour weights; default FiftyOne's 0.6/0.3/0.1 "
                                                          "for k=3, uniform otherwise")
    iqr_factor: float = Field(3.0, gt=0, description="outlier when uniqueness > q3 + f * IQR")
    top_fraction: float | None = Field(None, gt=0, lt=1, description="flag this share of the most unique instead")
    action: Literal["flag", "remove"] = "flag"

    @model_validator(mode="after")
    def _weights(self) -> "OutlierParams":
        if self.weights is not None and len(self.weights) != self.k:
            raise ValueError(f"outliers: `weights` has {len(self.weights)} entries but k={self.k}; give one per neighbour")
        return self

    def neighbour_weights(self) -> np.ndarray:
        if self.weights is not None:
            return np.asarray(self.weights, np.float64)
        return np.asarray(FIFTYONE_WEIGHTS if self.k == 3 else [1.0] * self.k, np.float64)


def uniqueness(x: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    """FiftyOne uniqueness of every row of L2-normalised ``x``: mean(weights * distance to the k nearest)."""
    n = len(x)
    if n < 2:
        return np.zeros(n)
    sims, ids = faiss_knn.exact_search(x, x, min(k + 1, n))
    self_col = ids == np.arange(n)[:, None]
    d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims.astype(np.float64)))
    # drop the sample itself (or, for exact copies ranked first, the last column)
    keep = np.where(self_col.any(axis=1, keepdims=True), ~self_col, np.arange(d.shape[1]) < d.shape[1] - 1)
    d = d[keep].reshape(n, -1)[:, :k]
    w = weights[: d.shape[1]]
    return (d * w).mean(axis=1)


class Outliers(GlobalStage):
    key = "outliers"
    version = "1"
    Params = OutlierParams
    inputs = ("embeddings",)
    outputs = ("outliers", "decisions")
    map_schema = schemas.embeddings_schema(1)

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        return table

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, dict[str, pa.Table]]:
        p: OutlierParams = self.params
        tables = [mapped[pid] for pid in ctx.partitions if pid in mapped and mapped[pid].num_rows]
        dim = tables[0].schema.field("embedding").type.list_size if tables else 1
        table, part = concat_mapped(ctx, {pid: t for pid, t in mapped.items()}, schemas.embeddings_schema(dim))
        n = table.num_rows
        x = (table.column("embedding").combine_chunks().flatten().to_numpy().reshape(n, dim).astype(np.float32)
             if n else np.zeros((0, dim), np.float32))
        u = uniqueness(faiss_knn.normalise(x) if n else x, p.k, p.neighbour_weights())
        ids = np.array(table.column("sample_id").to_pylist(), dtype=object)
        if p.top_fraction is not None:
            m = int(np.ceil(p.top_fraction * n))
            order = np.lexsort((ids.astype(str), -u)) if n else np.zeros(0, np.int64)
            flag = np.zeros(n, bool)
            flag[order[:m]] = True
            rule = f"top {p.top_fraction:.3g} by uniqueness"
        else:
            q1, q3 = np.percentile(u, [25, 75]) if n else (0.0, 0.0)
            fence = q3 + p.iqr_factor * (q3 - q1)
            flag = u > fence
            rule = f"> fence {fence:.4g} (q3 + {p.iqr_factor:g} IQR)"
        norm = u / u.max() if n and u.max() > 0 else np.zeros(n)
        ctx.count("outliers", int(flag.sum()))
        out = pa.table({"sample_id": pa.array(ids.tolist(), pa.string()), "uniqueness": pa.array(u, pa.float64()),
                        "uniqueness_norm": pa.array(norm, pa.float64()), "outlier": pa.array(flag, pa.bool_())},
                       schema=schemas.OUTLIERS)
        gone = np.flatnonzero(flag) if p.action == "remove" else np.zeros(0, np.int64)
        ctx.count("removed", int(gone.size))
        dec = filters.decisions(ids[gone].tolist(), ["outliers"] * gone.size, u[gone].tolist(),
                                [f"outlier: uniqueness {u[i]:.4g} {rule}" for i in gone])
        dec_part = part[gone]
        return {pid: {"outliers": out.filter(pa.array(part == k)), "decisions": dec.filter(pa.array(dec_part == k))}
                for k, pid in enumerate(ctx.partitions)}
