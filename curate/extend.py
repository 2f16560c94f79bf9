"""Add or re-parameterise stages of an existing run (``curate mine RUN_DIR``, ``curate shard RUN_DIR``).

The run's own ``pipeline.json`` is the starting point; a new stage replaces the
stage with the same key (keeping its place, so what follows it reruns) or is
inserted before the first stage that must come after it (mining before
``shard``). The runner then resumes: finished upstream partitions are skipped by
their config hash, so only the new stages and what depends on them compute.
"""

from __future__ import annotations

from typing import Any

from curate import io
from curate.config import PipelineConfig
from curate.errors import ConfigError

# a stage is inserted before the first existing stage listed for it
_BEFORE = {
    "mine.positives": ("mine.negatives", "inflate.train", "inflate.load", "inflate.generate", "inflate.adainf",
                       "shard"),
    "mine.negatives": ("inflate.train", "inflate.load", "inflate.generate", "inflate.adainf", "shard"),
    "shard": (),
}


def run_pipeline_of(run_dir: str) -> dict[str, Any]:
    path = io.join(run_dir, "pipeline.json")
    if not io.exists(path):
        raise ConfigError(f"'{run_dir}' is not a curate run directory (no pipeline.json); run "
                          f"`curate run PIPELINE.yaml --run-dir {run_dir}` first")
    return io.read_json(path)


def extend_pipeline(run_dir: str, stages: list[dict[str, Any]]) -> PipelineConfig:
    """The run's pipeline with ``stages`` (dicts with a ``stage`` key) merged into the entries of the same
    stage (given keys override) or inserted; validated."""
    data = run_pipeline_of(run_dir)
    current = [dict(s) for s in data.get("stages", [])]
    for new in stages:
        key = new["stage"]
        same = [i for i, s in enumerate(current) if s.get("stage") == key and s.get("name") == new.get("name")]
        if same:  # options given now override, the rest of the existing entry stays
            current[same[0]] = {**current[same[0]], **new}
            continue
        after = _BEFORE.get(key, ())
        pos = next((i for i, s in enumerate(current) if s.get("stage") in after), len(current))
        current.insert(pos, dict(new))
    cfg = PipelineConfig(name=data.get("name", "pipeline"), seed=data.get("seed", 0), stages=current)
    cfg.specs()
    return cfg
