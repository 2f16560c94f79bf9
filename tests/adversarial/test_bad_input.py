"""Bad configuration fails before any compute with exit 2 and a message naming the problem (issue 12)."""

from __future__ import annotations

import os

import pytest
import torch
from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()


def _pipeline(tmp_path, idx_dataset, *stages: str, extra: str = "") -> str:
    img, lab, *_ = idx_dataset
    text = f"name: t\nstages:\n  - stage: ingest\n    sources: [{{type: idx, images: {img}, labels: {lab}}}]\n"
    text += "".join(f"  - stage: {s}\n" for s in stages) + extra
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return str(p)


def _fails(args: list[str], *needles: str) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    flat = " ".join(r.output.split())
    for n in needles:
        assert n in flat, flat
    return flat


@pytest.mark.parametrize("stages, needles", [
    (["embed", "dedup.phash", "shard"], ["stages[3] (shard)", "dedup.phash (stages[2])", "dedup.apply"]),
    (["embed", "dedup.semantic", "mine.negatives", "dedup.apply", "shard"],
     ["stages[3] (mine.negatives)", "dedup.semantic (stages[2])", "dedup.apply"]),
    (["embed", "dedup.exact", "dedup.apply", "dedup.phash", "mine.positives"],
     ["stages[5] (mine.positives)", "dedup.phash (stages[4])"]),
    (["dedup.semantic", "embed"], ["stages[1] (dedup.semantic)", "'embeddings'", "embed"]),
    (["mine.negatives"], ["stages[1] (mine.negatives)", "'embeddings'"]),
    (["inflate.generate"], ["stages[1] (inflate.generate)", "'generator'", "inflate.train"]),
])
def test_impossible_stage_orders_exit_2_in_validate_and_run(tmp_path, idx_dataset, stages, needles):
    p = _pipeline(tmp_path, idx_dataset, *stages)
    _fails(["validate", p], *needles)
    run_dir = tmp_path / "r"
    _fails(["run", p, "--run-dir", str(run_dir), "--scheduler", "sync", "--quiet", "--no-card"], *needles)
    assert not run_dir.exists()  # rejected at plan time: nothing was computed or written


def test_pipeline_without_a_source_stage_exit_2(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("stages:\n  - stage: embed\n  - stage: shard\n")
    _fails(["validate", str(p)], "stages[0] (embed)", "'samples'", "ingest")


def test_valid_orders_still_validate(tmp_path, idx_dataset):
    for stages in (["embed", "dedup.phash", "dedup.semantic", "dedup.apply", "mine.positives", "mine.negatives", "shard"],
                   ["shard"], ["embed", "mine.negatives", "shard"], ["dedup.apply", "shard"]):
        r = runner.invoke(app, ["validate", _pipeline(tmp_path, idx_dataset, *stages)])
        assert r.exit_code == 0, (stages, r.output)


@pytest.mark.parametrize("assignment, needles", [
    ("stages.99.x=1", ["stages.99.x=1", "index 99 is out of range"]),
    ("stages.x.y=1", ["is a list", "not 'x'"]),
    ("name.sub=1", ["name.sub=1", "'name' is a str"]),
    ("ingest.partition_size=[1,", ["not valid YAML", "quote it"]),
    ("nosuchstage.x=1", ["no stage named 'nosuchstage'", "ingest"]),
    ("ingest..x=1", ["empty key segment"]),
    ("stages.0.partition_size=0", ["partition_size"]),
])
def test_set_errors_exit_2(tmp_path, idx_dataset, assignment, needles):
    p = _pipeline(tmp_path, idx_dataset)
    _fails(["validate", p, "--set", assignment], *needles)


def test_set_still_overrides(tmp_path, idx_dataset):
    p = _pipeline(tmp_path, idx_dataset, "embed")
    r = runner.invoke(app, ["validate", p, "--set", "stages.1.dim=8", "--set", "ingest.partition_size=7"])
    assert r.exit_code == 0, r.output


def test_run_dir_that_is_a_file_exit_2(tmp_path, idx_dataset):
    p = _pipeline(tmp_path, idx_dataset)
    f = tmp_path / "afile"
    f.write_text("x")
    _fails(["run", p, "--run-dir", str(f), "--scheduler", "sync", "--quiet", "--no-card"], str(f), "not a directory")
    assert f.read_text() == "x"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_device_cuda_without_gpu_exit_2_before_compute(tmp_path, idx_dataset):
    p = _pipeline(tmp_path, idx_dataset, extra="  - stage: embed\n    device: cuda\n")
    _fails(["validate", p], "stages[1] (embed)", "device 'cuda'", "no CUDA device")
    run_dir = tmp_path / "r"
    _fails(["run", p, "--run-dir", str(run_dir), "--scheduler", "sync", "--quiet", "--no-card"], "no CUDA device")
    assert not os.path.exists(run_dir)  # ingest did not run
