"""Card sections of quality, outliers and decontaminate: thresholds, galleries, per-route counts."""

from __future__ import annotations

import os

from PIL import Image

from curate.card.build import build_card
from curate.config import PipelineConfig
from curate.runner import run_pipeline
from tests.stages.quality._images import planted


def test_card_lists_thresholds_galleries_and_routes(tmp_path):
    d, ev = tmp_path / "imgs", tmp_path / "eval"
    d.mkdir(), ev.mkdir()
    imgs = planted()
    for name, a in imgs.items():
        Image.fromarray(a).save(d / f"{name}.png")
    Image.fromarray(imgs["clean_cat"]).save(ev / "leak.png")
    cfg = PipelineConfig(name="c", stages=[
        {"stage": "ingest", "sources": [{"type": "folder", "path": str(d), "labels": "none"}]},
        {"stage": "embed", "encoder": "random_cnn", "image_size": 16},
        {"stage": "quality", "dark": {"action": "remove"}},
        {"stage": "outliers"},
        {"stage": "decontaminate", "eval_sets": [{"name": "held_out", "sources": [
            {"type": "folder", "path": str(ev), "labels": "none"}]}]},
        {"stage": "dedup.apply"}])
    run_pipeline(cfg, run_dir=str(tmp_path / "run"), scheduler="sync", progress=False)
    md_path = build_card(str(tmp_path / "run"), out_dir=str(tmp_path / "cards"), name="c")
    md = open(md_path).read()
    assert "## Data quality" in md and "| dark | 0.32 | remove | 3 |" in md
    assert "## Outliers" in md and "## Decontamination against evaluation sets" in md
    assert "| held\\_out | 1 | 1 | 1 |" in md
    for png in ("quality_worst.png", "outliers_top.png"):
        assert os.path.getsize(tmp_path / "cards" / "c" / png) > 1000
