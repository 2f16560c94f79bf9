"""``dedup.apply``: join every upstream decision table into the kept set and a removal log.

Finding duplicates and removing them are separate steps (datatrove #370:
users could not tell what was removed and why). For each partition this stage
reads the ``decisions`` of *every* upstream dedup stage (exact, phash,
minhash, semantic - in pipeline order) and

* writes the kept ``samples`` (primary output): rows no method removed and no
  stage quarantined;
* writes ``removals``: one row per removed sample - the decision of the
  *first* method (in pipeline order) that removed it, so every removed sample
  names who it duplicates (``representative_id``), how closely (``score``)
  and in which cluster.

Samples a stage quarantined after ingest (e.g. embed could not decode them)
are neither kept nor logged as removed: ``curate.stats`` counts them as
quarantined, so ``ingested = kept + removed + quarantined`` holds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate import io, schemas
from curate.config import StageParams
from curate.stage import Stage, StageContext


class ApplyParams(StageParams):
    methods: list[str] | None = Field(None, description="apply only decisions whose method is listed "
                                                        "(e.g. [exact, phash]); default: all")


class ApplyDedup(Stage):
    key = "dedup.apply"
    version = "1"
    Params = ApplyParams
    inputs = ("samples", "decisions")
    settles = ("decisions",)
    outputs = ("samples", "removals")

    def process(self, table: pa.Table, ctx: StageContext) -> dict[str, pa.Table]:
        p: ApplyParams = self.params
        ids = table.column("sample_id").to_pylist()
        present = set(ids)
        removal: dict[str, dict] = {}
        for up in ctx.producers("decisions"):
            path = io.part_path(ctx.run_dir, up.dirname, ctx.partition_id,
                                None if up.outputs[0] == "decisions" else "decisions")
            if not io.exists(path):
                continue
            dec = io.read_parquet(path)
            dec = dec.filter(pc.invert(dec.column("keep")))
            if p.methods is not None:
                dec = dec.filter(pc.is_in(dec.column("method"), pa.array(p.methods, pa.string())))
            n_new = 0
            for row in dec.to_pylist():
                sid = row["sample_id"]
                if sid in present and sid not in removal:  # the first method that removed it wins
                    removal[sid] = row
                    n_new += 1
            ctx.count(f"removed_by_{up.dirname}", n_new)
        quarantined = ctx.quarantined_sample_ids() & present
        for sid in quarantined:
            removal.pop(sid, None)
        drop = set(removal) | quarantined
        mask = np.fromiter((sid not in drop for sid in ids), bool, len(ids))
        kept = table.filter(pa.array(mask, pa.bool_()))
        log_rows = [removal[sid] for sid in ids if sid in removal]  # input order: deterministic
        removals = pa.Table.from_pylist(log_rows, schema=schemas.DECISIONS)
        ctx.count("kept", kept.num_rows)
        ctx.count("removed", removals.num_rows)
        ctx.count("excluded_quarantined", len(quarantined))
        return {"samples": kept, "removals": removals}
