"""Filter decisions: removals with a reason and a score but no representative.

quality, outliers and decontaminate remove a sample for what it is, not in favour of a kept
duplicate, so their decision rows have ``keep = False`` and ``representative_id = null`` and a method
that :func:`curate.schemas.is_filter` recognises; ``dedup.apply`` removes them without a duplicate edge.
"""

from __future__ import annotations

import pyarrow as pa

from curate import schemas


def decisions(ids: list[str], methods: list[str], scores: list[float | None], reasons: list[str],
              details: list[str | None] | None = None) -> pa.Table:
    """One removal row per id; ``details`` (e.g. the matched evaluation sample) go to ``cluster_id``."""
    assert all(schemas.is_filter(m) for m in methods), "filter methods only"
    n = len(ids)
    return pa.table({
        "sample_id": pa.array(ids, pa.string()),
        "method": pa.array(methods, pa.string()),
        "keep": pa.array([False] * n, pa.bool_()),
        "representative_id": pa.nulls(n, pa.string()),
        "score": pa.array([None if s is None or s != s else float(s) for s in scores], pa.float64()),
        "cluster_id": pa.array(details if details is not None else [None] * n, pa.string()),
        "reason": pa.array(reasons, pa.string()),
    }, schema=schemas.DECISIONS)
