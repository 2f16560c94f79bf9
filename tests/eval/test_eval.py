import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tests.eval._stages  # noqa: F401 - registers test.mark_odd
from curate.cli import app
from curate.config import PipelineConfig
from curate.errors import ConfigError
from curate.eval import Arm, evaluate_arms, knn_accuracy, linear_probe, load_probe, match_channels, run_arms
from curate.runner import run_pipeline

TINY = {"steps": 2, "batch_size": 8, "arch": "resnet_tiny", "device": "cpu"}


def _images(n, size=12, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size), np.uint8)
    y = np.arange(n) % 2
    for i in range(n):
        if y[i]:
            x[i, :, rng.integers(2, size - 2)] = 255  # vertical bar
        else:
            x[i, rng.integers(2, size - 2), :] = 255  # horizontal bar
    return x, y


@pytest.fixture
def probe_npz(tmp_path):
    xtr, ytr = _images(40, seed=1)
    xte, yte = _images(20, seed=2)
    p = tmp_path / "probe.npz"
    np.savez(p, train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte)
    return str(p)


@pytest.fixture
def deduped_run(tmp_path):
    x, y = _images(24)
    src = tmp_path / "pre.npz"
    np.savez(src, train_images=x, train_labels=y)
    run = str(tmp_path / "run")
    run_pipeline(PipelineConfig(name="t", stages=[{"stage": "ingest", "sources": [{"type": "npz", "path": str(src)}]},
                                                  {"stage": "test.mark_odd"}, {"stage": "dedup.apply"}]),
                 run_dir=run, scheduler="sync", progress=False)
    return run


def test_probe_and_knn_on_known_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 4
    y = torch.arange(90) % 3
    x = centers[y] + torch.randn(90, 8, generator=g)
    assert linear_probe(x[:60], y[:60], x[60:], y[60:]) == 1.0
    assert knn_accuracy(x[:60], y[:60], x[60:], y[60:], k=5) == 1.0
    # labels unrelated to the features: chance level, not 100%
    shuffled = y[torch.randperm(90, generator=g)]
    assert linear_probe(x[:60], shuffled[:60], x[60:], shuffled[60:]) < 0.7
    with pytest.raises(ValueError, match=">= 0"):
        knn_accuracy(x, -torch.ones(90), x, y)


def test_probe_loaders(probe_npz, tmp_path):
    p = load_probe(probe_npz)
    assert p.train_images.shape == (40, 1, 12, 12) and p.test_images.shape == (20, 1, 12, 12)
    assert p.train_labels.tolist()[:4] == [0, 1, 0, 1]
    sub = p.subsample(10, 5)
    assert sub.train_images.shape[0] == 10 and sub.test_images.shape[0] == 5
    q = load_probe(probe_npz + ":train", probe_npz + ":test")
    assert torch.equal(q.test_images, p.test_images)
    rgb = match_channels(p.train_images, 3)
    assert rgb.shape[1] == 3 and torch.equal(match_channels(rgb, 1), p.train_images)
    with pytest.raises(ConfigError, match="not found"):
        load_probe(str(tmp_path / "none"))


def test_fashion_mnist_idx_layout(tmp_path):
    from tests.conftest import write_idx

    x, y = _images(6)
    for split in ("train", "t10k"):
        write_idx(str(tmp_path / f"{split}-images-idx3-ubyte.gz"), x)
        write_idx(str(tmp_path / f"{split}-labels-idx1-ubyte.gz"), y.astype(np.uint8))
    p = load_probe(str(tmp_path))
    assert p.train_images.shape == (6, 1, 12, 12) and p.test_labels.tolist() == y.tolist()


def test_run_arms_full_curated_random(deduped_run):
    full, curated, random = run_arms(deduped_run, ["full", "curated", "random"])
    assert (full.n_samples, curated.n_samples, random.n_samples) == (24, 12, 12)
    a, b = random.materialise(0), random.materialise(1)
    assert a.shape == (12, 1, 12, 12) and not torch.equal(a, b)  # redrawn per seed
    assert torch.equal(random.materialise(0), a)  # seeded
    with pytest.raises(ConfigError, match="no synthetic"):
        run_arms(deduped_run, ["inflated"])
    with pytest.raises(ConfigError, match="unknown arm"):
        run_arms(deduped_run, ["fulll"])


def test_evaluate_arms_on_tiny_data(deduped_run, probe_npz, tmp_path):
    arms = run_arms(deduped_run, ["full", "curated", "random"])
    weighted = lambda seed: arms[1].materialise(seed)  # noqa: E731 - a pluggable arm, e.g. `inflated`
    arms.append(Arm("inflated", weighted, n_samples=12, train_overrides={"crop_min_scale": 0.2, "jitter_p": 0.4}))
    report = evaluate_arms(arms, load_probe(probe_npz), TINY, seeds=[0, 1], log=None)
    assert [r.arm for r in report.results] == ["full", "full", "curated", "curated", "random", "random",
                                               "inflated", "inflated"]
    s = report.summary()
    assert s["curated"]["n_samples"] == 12 and s["full"]["seeds"] == 2
    assert all(0.0 <= r.linear_acc <= 1.0 and 0.0 <= r.knn_acc <= 1.0 for r in report.results)
    table = report.table()
    assert "| curated | 12 (50%) |" in table and "±" in table
    paths = report.write(str(tmp_path / "out"))
    data = json.load(open(paths["json"]))
    assert data["arms"]["inflated"]["train_overrides"]["crop_min_scale"] == 0.2
    assert data["config"]["steps"] == 2 and len(data["results"]) == 8
    assert os.path.getsize(paths["png"]) > 1000
    with pytest.raises(ConfigError, match="equal budget"):
        Arm("x", arms[0].data, train_overrides={"steps": 10})


def test_cli_eval(deduped_run, probe_npz, tmp_path):
    out = str(tmp_path / "ev")
    res = CliRunner().invoke(app, ["eval", deduped_run, "--probe", probe_npz, "--steps", "1", "--batch-size", "8",
                                   "--arch", "resnet_tiny", "--seeds", "0", "--device", "cpu", "--out", out, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data["summary"]) == {"full", "curated", "random"}
    assert os.path.exists(os.path.join(out, "eval.png"))
    bad = CliRunner().invoke(app, ["eval", deduped_run, "--probe", probe_npz, "--seeds", "a,b"])
    assert bad.exit_code == 2 and "--seeds" in bad.output


def test_adainf_arm_is_registered_and_needs_an_adainf_table(deduped_run):
    from curate.errors import ConfigError

    with pytest.raises(ConfigError, match="inflate.adainf"):
        run_arms(deduped_run, ["adainf"])
