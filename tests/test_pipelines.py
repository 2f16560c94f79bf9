"""Every shipped pipeline validates; the medical one runs end to end on the embedded demo data."""

from __future__ import annotations

import glob
import json
import os
import shutil

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
    # the README's split for pipelines/decontaminate.yaml: the test part shares patients with pretraining
    pre, test = d / "data" / "decon" / "pretrain", d / "data" / "decon" / "test"
    pre.mkdir(parents=True), test.mkdir(parents=True)
    for f in (d / "data" / "demo" / "dicom").iterdir():
        shutil.copyfile(f, (test if f.name in ("US1_UNCR.dcm", "MR_small_jp2klossless.dcm") else pre) / f.name)
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
    assert summary["stages"]["03_dedup_exact"]["rows"]["decisions"] == 140
    assert a["removed"] >= 14 and 0 < a["kept"] < 140
    index = json.load(open(demo_dir / "runs" / "medical_reduce" / "07_shard" / "shards" / "index.json"))
    assert sum(s["rows"] for s in index["shards"]) == a["kept"]
    assert (demo_dir / "cards" / "medical_reduce.md").exists()


def test_decontaminate_end_to_end(demo_dir, monkeypatch):
    import json

    monkeypatch.chdir(demo_dir)
    r = CliRunner().invoke(app, ["run", os.path.join(REPO, "pipelines", "decontaminate.yaml"), "--run-dir", "runs/decon",
                                 "--scheduler", "sync", "--quiet"])
    assert r.exit_code == 0, r.output
    s = json.load(open("runs/decon/summary.json"))
    c = s["stages"]["03_decontaminate"]["counters"]
    # US1_UNCR's patient owns examples_rgb_color (other pixels); MR_small_jp2klossless = MR_small's pixels
    assert c["test:patient"] == 5 and c["test:exact"] == 4 and s["accounting"]["balanced"]
