"""train-encoder on a run directory: kept / ingested samples, mined hard negatives from the pairs table."""

import numpy as np
import pytest

import tests.eval._stages  # noqa: F401 - registers test.mark_odd
from curate.config import PipelineConfig
from curate.errors import ConfigError
from curate.runner import run_pipeline
from curate.train import train_from_run


@pytest.fixture
def run(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", train_images=rng.integers(0, 255, (24, 12, 12), dtype=np.uint8),
             train_labels=np.arange(24) % 3)
    run = str(tmp_path / "run")
    run_pipeline(PipelineConfig(name="t", stages=[
        {"stage": "ingest", "sources": [{"type": "npz", "path": str(tmp_path / "t.npz")}]},
        {"stage": "test.mark_odd"}, {"stage": "dedup.apply"},
        {"stage": "embed", "encoder": "pixels", "dim": 8},
        {"stage": "mine.negatives", "num_negatives": 2, "range_max": 8}]),
        run_dir=run, scheduler="sync", progress=False)
    return run


def test_kept_ingested_and_hard_negatives(run, tmp_path):
    kw = dict(steps=1, batch_size=8, arch="resnet_nano", device="cpu", progress=False)
    kept = train_from_run(run, out=str(tmp_path / "a.safetensors"), **kw)
    ingested = train_from_run(run, which="ingested", out=str(tmp_path / "b.safetensors"), **kw)
    assert kept.stats["samples"] == 12 and ingested.stats["samples"] == 24
    neg = train_from_run(run, out=str(tmp_path / "c.safetensors"), hard_negatives=2, **kw)
    assert neg.stats["anchors_with_negatives"] > 0 and np.isfinite(neg.losses).all()


def test_hard_negatives_need_a_pairs_table(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", train_images=rng.integers(0, 255, (8, 8, 8), dtype=np.uint8))
    run = str(tmp_path / "run")
    run_pipeline(PipelineConfig(name="t", stages=[{"stage": "ingest", "sources": [{"type": "npz",
                                                                                   "path": str(tmp_path / "t.npz")}]}]),
                 run_dir=run, scheduler="sync", progress=False)
    with pytest.raises(ConfigError, match="mine.negatives"):
        train_from_run(run, steps=1, batch_size=4, hard_negatives=2, progress=False)
    with pytest.raises(ConfigError, match="kept"):
        train_from_run(run, which="everything", steps=1, progress=False)
