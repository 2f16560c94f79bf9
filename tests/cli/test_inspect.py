"""`curate inspect RUN_DIR --dedup`: threshold-help plots from a finished run."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from curate.cli import app
from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.stages.dedup._helpers import near_duplicate_images

runner = CliRunner()
PLOTS = ["hamming_nn_hist", "hamming_keep_curve", "hamming_montage", "cosine_nn_hist", "eps_keep_curve",
         "cosine_montage"]


def _run(tmp_path, hash_stages, n_unique=40, n_dups=12, semantic=True):
    images, _ = near_duplicate_images(n_unique, n_dups)
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(len(images)))
    stages = [{"stage": "test.arrays", "path": str(tmp_path / "x.npz"), "partition_size": 20},
              {"stage": "embed", "dim": 16}, *hash_stages]
    if semantic:
        stages.append({"stage": "dedup.semantic", "eps": 0.05})
    stages.append({"stage": "dedup.apply"})
    summary = run_pipeline(PipelineConfig(name="t", stages=stages), run_dir=str(tmp_path / "run"), scheduler="sync",
                           progress=False)
    return str(tmp_path / "run"), summary


def test_inspect_dedup_curves_match_the_stages(tmp_path):
    run_dir, summary = _run(tmp_path, [{"stage": "dedup.phash", "threshold": 8}])
    out = tmp_path / "plots"
    r = runner.invoke(app, ["inspect", run_dir, "--dedup", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for name in PLOTS:
        with Image.open(out / f"{name}.png") as img:
            assert img.size[0] > 300 and img.size[1] > 200
        assert f"{name}.png" in r.output
    rep = json.loads((out / "thresholds.json").read_text())
    n = 52
    # at the configured thresholds the curves reproduce what the stages decided
    sem = summary["stages"]["03_dedup_semantic"]["counters"]
    assert rep["cosine"]["keep_curve"]["0.05"] == round(sem["kept"] / n, 6) == round(40 / 52, 6)
    ph = summary["stages"]["02_dedup_phash"]["counters"]
    assert rep["hamming"]["keep_curve"]["8"] == round((n - ph.get("removed", 0)) / n, 6)
    assert rep["hamming"]["curve_rule"].startswith("the stage's rule")
    for part in ("cosine", "hamming"):
        kc = list(rep[part]["keep_curve"].values())
        assert all(a >= b for a, b in zip(kc, kc[1:])), part
    assert sum(rep["hamming"]["nn_hist"]) == n and rep["cosine"]["n"] == n


def test_inspect_bare_hashes_table_uses_components(tmp_path):
    run_dir, _ = _run(tmp_path, [{"stage": "test.ahash"}], 16, 4, semantic=False)
    r = runner.invoke(app, ["inspect", run_dir, "--dedup"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "run" / "inspect" / "dedup" / "thresholds.json").read_text())
    kc = list(rep["hamming"]["keep_curve"].values())
    assert rep["hamming"]["curve_rule"].startswith("connected components")
    assert kc[0] <= 16 / 20 and all(a >= b for a, b in zip(kc, kc[1:]))  # the 4 copies are within t=0..16


def test_inspect_without_hashes_and_bad_input(tmp_path):
    run_dir, _ = _run(tmp_path, [], 10, 2, semantic=False)
    r = runner.invoke(app, ["inspect", run_dir, "--dedup"])
    assert r.exit_code == 0, r.output
    assert "hamming: skipped" in r.output and "eps_keep_curve.png" in r.output
    r = runner.invoke(app, ["inspect", run_dir])
    assert r.exit_code == 2 and "--dedup" in r.output
    r = runner.invoke(app, ["inspect", str(tmp_path / "nope"), "--dedup"])
    assert r.exit_code == 2 and "summary.json" in r.output
