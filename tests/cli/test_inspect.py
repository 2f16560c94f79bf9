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


def _run(tmp_path, hashes=True):
    images, _ = near_duplicate_images(40, 12)
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(len(images)))
    stages = [{"stage": "test.arrays", "path": str(tmp_path / "x.npz"), "partition_size": 20},
              {"stage": "embed", "dim": 16}]
    if hashes:
        stages.append({"stage": "test.ahash"})
    stages += [{"stage": "dedup.semantic", "eps": 0.05}, {"stage": "dedup.apply"}]
    run_pipeline(PipelineConfig(name="t", stages=stages), run_dir=str(tmp_path / "run"), scheduler="sync",
                 progress=False)
    return str(tmp_path / "run")


def test_inspect_dedup_writes_readable_plots(tmp_path):
    run_dir = _run(tmp_path)
    out = tmp_path / "plots"
    r = runner.invoke(app, ["inspect", run_dir, "--dedup", "--out", str(out)])
    assert r.exit_code == 0, r.output
    names = ["hamming_nn_hist", "hamming_keep_curve", "hamming_montage", "cosine_nn_hist", "eps_keep_curve",
             "cosine_montage"]
    for name in names:
        with Image.open(out / f"{name}.png") as img:
            assert img.size[0] > 300 and img.size[1] > 200
        assert f"{name}.png" in r.output
    rep = json.loads((out / "thresholds.json").read_text())
    # 12 planted copies: at eps 0.05 SemDeDup keeps 40 of 52; the curve is monotone here
    assert rep["cosine"]["keep_curve"]["0.05"] == round(40 / 52, 6)
    kc = list(rep["cosine"]["keep_curve"].values())
    assert all(a >= b for a, b in zip(kc, kc[1:]))
    hc = list(rep["hamming"]["keep_curve"].values())
    assert hc[0] <= 1.0 and all(a >= b for a, b in zip(hc, hc[1:]))
    assert sum(rep["hamming"]["nn_hist"]) == 52 and rep["cosine"]["n"] == 52


def test_inspect_without_hashes_and_without_flag(tmp_path):
    run_dir = _run(tmp_path, hashes=False)
    r = runner.invoke(app, ["inspect", run_dir, "--dedup"])
    assert r.exit_code == 0, r.output
    assert "hamming: skipped" in r.output and "eps_keep_curve.png" in r.output
    r = runner.invoke(app, ["inspect", run_dir])
    assert r.exit_code == 2 and "--dedup" in r.output
    r = runner.invoke(app, ["inspect", str(tmp_path / "nope"), "--dedup"])
    assert r.exit_code == 2 and "summary.json" in r.output
