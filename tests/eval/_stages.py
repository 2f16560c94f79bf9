"""A test-only dedup finder: marks every odd ``source_index`` a duplicate of the row before it."""

from __future__ import annotations

import pyarrow as pa

from curate import registry, schemas
from curate.stage import Stage


class MarkOdd(Stage):
    key = "test.mark_odd"
    inputs = ("samples",)
    outputs = ("decisions",)

    def process(self, table: pa.Table, ctx) -> pa.Table:
        ids = table.column("sample_id").to_pylist()
        idx = table.column("source_index").to_pylist()
        rows = [{"sample_id": s, "method": "test", "keep": i % 2 == 0,
                 "representative_id": None if i % 2 == 0 else ids[k - 1], "score": 1.0, "cluster_id": str(i // 2),
                 "reason": None if i % 2 == 0 else "odd"} for k, (s, i) in enumerate(zip(ids, idx))]
        return pa.Table.from_pylist(rows, schema=schemas.DECISIONS)


registry.register("test.mark_odd", "tests.eval._stages:MarkOdd")
