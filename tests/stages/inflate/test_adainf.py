import json

import numpy as np
import pytest
import torch

from curate.config import PipelineConfig
from curate.runner import run_pipeline
from curate.stages.inflate.adainf import (WEAK_AUG, adainf_arm, gap_settings, paper_settings, proxy_grid,
                                          real_share, replicated)
from tests.conftest import idx_pipeline, read_run_table


def test_paper_mode_numbers():
    s = paper_settings(50_000, 1_000_000)
    assert s["real_replication"] == 10
    assert s["augmentation"] == {"crop_min_scale": 0.2, "jitter_p": 0.4, "jitter_strength": 0.5}
    assert s["real_share"] == pytest.approx(1 / 3)


def test_gap_rule_limits_and_paper_operating_point():
    # no gap: generated data is as good as real -> plain union (dup 1)
    g = gap_settings(1000, 20000, precision=1.0)
    assert g["real_replication"] == 1.0 and g["real_share"] == pytest.approx(1000 / 21000)
    # the paper's point: 20x inflation, precision ~0.7 -> dup ~10, weak augmentation
    g = gap_settings(50_000, 1_000_000, precision=0.7)
    assert g["real_replication"] == pytest.approx(10.0, rel=0.05)
    assert g["augmentation"] == pytest.approx(WEAK_AUG, abs=0.01)
    # everything off-manifold: as much real as allowed
    g = gap_settings(1000, 20000, precision=0.0, max_dup=50)
    assert g["real_replication"] == 50
    # little inflation: augmentation stays close to SimCLR's
    g = gap_settings(1000, 100, precision=0.9)
    assert g["augmentation"]["crop_min_scale"] < 0.1 and g["aug_strength"] < 0.15


def test_replicated_mix_has_the_requested_share():
    real = torch.zeros(100, 1, 4, 4, dtype=torch.uint8)
    syn = torch.ones(300, 1, 4, 4, dtype=torch.uint8)
    x = replicated(real, syn, 2.5)
    assert x.shape[0] == 250 + 300 and int((x[:, 0, 0, 0] == 0).sum()) == 250
    assert real_share(100, 300, 2.5) == pytest.approx(250 / 550)


@pytest.mark.parametrize("mode", ["paper", "gap"])
def test_adainf_through_shard_and_loader(tmp_path, squares_idx, tiny_pipeline_dir, mode):
    from curate.load import ShardDataset

    img, lab, _, _ = squares_idx
    cfg = idx_pipeline(img, lab, partition_size=24)
    cfg["stages"] += [{"stage": "inflate.load", "path": str(tiny_pipeline_dir)},
                      {"stage": "inflate.generate", "n_images": 40, "images_per_partition": 20, "steps": 2,
                       "filter": False},
                      {"stage": "inflate.adainf", "mode": mode, "embed": {"encoder": "pixels", "dim": 8}},
                      {"stage": "shard"}]
    run = tmp_path / "run"
    run_pipeline(PipelineConfig(**cfg), run_dir=str(run), scheduler="sync", progress=False)
    row = read_run_table(run, "03_inflate_adainf").to_pylist()[0]
    assert row["n_real"] == 48 and row["n_synthetic"] == 40
    assert 0 <= row["precision"] <= 1 and row["fd"] >= 0 and row["encoder"].startswith("pixels")
    if mode == "paper":
        assert row["real_replication"] == 10 and json.loads(row["augmentation"]) == WEAK_AUG
        from curate.eval import load_run_data

        arm = adainf_arm(load_run_data(str(run)))
        assert arm.n_samples == 48 * 10 + 40 and arm.train_overrides == WEAK_AUG
        assert arm.materialise(0).shape[0] == 48 * 10 + 40
    else:
        expect = gap_settings(48, 40, row["precision"])
        assert row["real_replication"] == pytest.approx(expect["real_replication"])
    index = json.loads((run / "04_shard" / "shards" / "index.json").read_text())
    meta = index["metadata"]["adainf"]
    assert meta["real_replication"] == pytest.approx(row["real_replication"])
    assert meta["augmentation"] == json.loads(row["augmentation"])
    # the loader's epoch composition matches the requested real share
    ds = ShardDataset(str(run / "04_shard" / "shards"), shuffle_buffer=0, seed=0, decode=False)
    n_real = n_syn = 0
    for epoch in range(5):
        ds.set_epoch(epoch)
        for item in ds:
            n_syn += item["is_synthetic"]
            n_real += not item["is_synthetic"]
    assert n_real / (n_real + n_syn) == pytest.approx(row["real_share"], abs=0.03)
    # the data card reports the synthetic share and the AdaInf settings
    from curate.card.build import build_card

    md = open(build_card(str(run), str(tmp_path / "cards"))).read()
    assert "## Synthetic data and AdaInf" in md and "40 generated samples" in md
    assert f"| {mode} | {row['real_replication']:.3g} | {row['real_share']:.3f} |" in md


def test_proxy_grid_picks_the_best_cell():
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8))
    labels = torch.arange(40) % 2
    real[labels == 1] //= 4  # class 1 darker: learnable
    syn = torch.from_numpy(rng.integers(0, 256, (30, 1, 8, 8), dtype=np.uint8))
    best, cells = proxy_grid(real, labels, syn, [None, 0.5], [1.0],
                             {"steps": 2, "batch_size": 8, "arch": "resnet_tiny", "device": "cpu"},
                             probe_fraction=0.25)
    assert len(cells) == 2 and best == max(cells, key=lambda c: c["linear_acc"])
    assert all(0.0 <= c["linear_acc"] <= 1.0 for c in cells)
    assert cells[0]["real_replication"] == 1.0 and cells[1]["real_share"] == pytest.approx(0.5, abs=0.05)


@pytest.mark.slow
def test_proxy_mode_stage_end_to_end(tmp_path, squares_idx, tiny_pipeline_dir):
    img, lab, _, _ = squares_idx
    cfg = idx_pipeline(img, lab, partition_size=24)
    cfg["stages"] += [{"stage": "inflate.load", "path": str(tiny_pipeline_dir)},
                      {"stage": "inflate.generate", "n_images": 20, "steps": 2, "filter": False},
                      {"stage": "inflate.adainf", "mode": "proxy", "proxy_shares": [None, 0.5],
                       "proxy_strengths": [0.0, 1.0], "proxy_steps": 2, "proxy_batch_size": 8,
                       "embed": {"encoder": "pixels", "dim": 8}}]
    run = tmp_path / "run"
    run_pipeline(PipelineConfig(**cfg), run_dir=str(run), scheduler="sync", progress=False)
    row = read_run_table(run, "03_inflate_adainf").to_pylist()[0]
    grid = json.loads(row["details"])["grid"]
    assert 2 <= len(grid) <= 4 and row["mode"] == "proxy"  # cells whose share is unreachable collapse
    best = max(grid, key=lambda c: c["linear_acc"])
    assert row["aug_strength"] == best["aug_strength"] and row["real_replication"] >= 1
