"""StageContext helpers."""

from __future__ import annotations

import pytest

from curate.errors import ConfigError
from curate.stage import StageContext


def _ctx(run_dir: str, stage: str) -> StageContext:
    return StageContext(run_dir=run_dir, stage=stage, stage_key="x", partition_id="p0", seed=0, on_error="raise")


def test_scratch_is_under_the_run_dir_per_stage_and_shared():
    ctx = _ctx("/runs/a", "03_mine_negatives")
    assert ctx.scratch() == "/runs/a/scratch/03_mine_negatives"
    assert ctx.scratch("encoded") == "/runs/a/scratch/03_mine_negatives/encoded"
    assert ctx.scratch("knn", shared=True) == "/runs/a/scratch/_shared/knn"
    # a map task's stage dir is NN_stage/_map: same scratch as the stage's reduce and tasks
    assert _ctx("/runs/a", "05_shard/_map").scratch("encoded") == "/runs/a/scratch/05_shard/encoded"
    # object storage: an fsspec URL every worker can reach, no local fallback
    assert _ctx("s3://bucket/run", "05_shard").scratch() == "s3://bucket/run/scratch/05_shard"


@pytest.mark.parametrize("bad", ["..", "a/b", ".hidden", ""])
def test_scratch_rejects_names_that_leave_it(bad):
    with pytest.raises(ConfigError):
        _ctx("/runs/a", "05_shard").scratch(bad)
