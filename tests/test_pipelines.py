"""Every shipped pipeline validates; the medical one runs end to end on the embedded demo data."""

from __future__ import annotations

import glob
import json
import os

import pytest
from typer.testing import CliRunner

from curate.cli import app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = sorted(glob.glob(os.path.join(REPO, "pipelines", "*.yaml")))
FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from curate.demo import materialize

    d = tmp_path_factory.mktemp("demo")
    materialize(str(d / "data" / "demo"))
    return d


def test_all_five_pipelines_ship():
    names = {os.path.basename(p) for p in PIPELINES}
    assert {"demo.yaml", "fashion_mnist.yaml", "medical_reduce.yaml", "hard_negatives.yaml",
            "adainf_inflate.yaml"} <= names


@pytest.mark.parametrize("path", PIPELINES, ids=[os.path.basename(p) for p in PIPELINES])
def test_pipeline_validates(path, demo_dir, monkeypatch):
    if "fashion-mnist" in open(path).read() and not os.path.exists(FASHION):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.chdir(demo_dir)
    r = CliRunner().invoke(app, ["validate", path])
    assert r.exit_code == 0, r.output
    assert "valid" in r.output


def test_medical_reduce_end_to_end(demo_dir, monkeypatch):
    monkeypatch.chdir(demo_dir)
    r = CliRunner().invoke(app, ["run", os.path.join(REPO, "pipelines", "medical_reduce.yaml"), "--scheduler", "sync",
                                 "--quiet", "--card-dir", "cards"])
    assert r.exit_code == 0, r.output
    summary = json.load(open(demo_dir / "runs" / "medical_reduce" / "summary.json"))
    a = summary["accounting"]
    assert a["balanced"] and a["ingested"] == 158 and a["quarantined"] == 18
    # the same MR image in 5 transfer syntaxes and the RLE copy of the 10-frame MR are exact duplicates
    assert summary["stages"]["02_dedup_exact"]["rows"]["decisions"] == 140
    assert a["removed"] >= 14 and 0 < a["kept"] < 140
    index = json.load(open(demo_dir / "runs" / "medical_reduce" / "06_shard" / "shards" / "index.json"))
    assert sum(s["rows"] for s in index["shards"]) == a["kept"]
    assert (demo_dir / "cards" / "medical_reduce.md").exists()
