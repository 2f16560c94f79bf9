import json

from typer.testing import CliRunner

from curate.cli import app
from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.conftest import idx_pipeline

runner = CliRunner()


def test_mine_shard_inspect_on_an_existing_run(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    cfg = idx_pipeline(img, lab, partition_size=100)
    cfg["stages"].append({"stage": "embed", "dim": 8, "fit_samples": 100})
    run = str(tmp_path / "run")
    run_pipeline(PipelineConfig(**cfg), run, scheduler="sync", progress=False)

    r = runner.invoke(app, ["mine", run, "--scheduler", "sync", "-q", "-k", "3", "--no-guard", "label"])
    assert r.exit_code == 0, r.output
    stages = [s["stage"] for s in json.load(open(f"{run}/pipeline.json"))["stages"]]
    assert stages == ["ingest", "embed", "mine.positives", "mine.negatives"]

    r = runner.invoke(app, ["shard", run, "--scheduler", "sync", "-q", "--max-rows", "128"])
    assert r.exit_code == 0, r.output
    assert "300 samples in 3 shards" in r.output
    # mining again with other params keeps shard last and reruns it
    r = runner.invoke(app, ["mine", run, "--scheduler", "sync", "-q", "-k", "2", "--no-positives"])
    assert r.exit_code == 0, r.output
    stages = [s["stage"] for s in json.load(open(f"{run}/pipeline.json"))["stages"]]
    assert stages[-1] == "shard" and stages.count("mine.negatives") == 1
    from curate.load import ShardDataset
    it = next(iter(ShardDataset(run, pairs="triplet")))
    assert it["has_negative"]

    out = str(tmp_path / "m.png")
    r = runner.invoke(app, ["inspect", run, "--pairs", "-o", out, "--anchors", "3"])
    assert r.exit_code == 0, r.output
    from PIL import Image
    im = Image.open(out)
    assert im.size[1] == 3 * (72 + 12)


def test_cli_errors_are_clear(tmp_path):
    r = runner.invoke(app, ["mine", str(tmp_path)])
    assert r.exit_code == 2 and "no pipeline.json" in r.output
    r = runner.invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 2 and "--pairs" in r.output
