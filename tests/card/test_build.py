"""The data card: header parses, every PNG exists and opens, numbers equal summary.json."""

from __future__ import annotations

import json
import re

import yaml
from PIL import Image
from typer.testing import CliRunner

from curate.cli import app


def test_card_for_a_tiny_run(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"nope")
    p = tmp_path / "p.yaml"
    p.write_text(f"name: tiny\nstages:\n  - stage: ingest\n    partition_size: 100\n    sources:\n"
                 f"      - {{type: idx, images: {img}, labels: {lab}}}\n      - {{type: folder, path: {bad}}}\n")
    run_dir = tmp_path / "tiny"
    cards = tmp_path / "cards"
    r = CliRunner().invoke(app, ["run", str(p), "--run-dir", str(run_dir), "--scheduler", "sync", "--quiet",
                                 "--card-dir", str(cards)])
    assert r.exit_code == 0, r.output
    md = (cards / "tiny.md").read_text()
    header = yaml.safe_load(md.split("---")[1])
    assert header["pretty_name"].startswith("tiny") and header["size_categories"] == ["n<1K"]
    assert {"license", "task_categories", "tags"} <= set(header)
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(pngs) >= 3
    for rel in pngs:
        with Image.open(cards / rel) as im:
            im.verify()
    summary = json.loads((run_dir / "summary.json").read_text())
    a = summary["accounting"]
    assert f"**{a['ingested']:,} ingested = {a['kept']:,} kept + {a['removed']:,} removed + {a['quarantined']:,} quarantined**" in md
    assert (a["ingested"], a["kept"], a["quarantined"]) == (301, 300, 1)
    assert "| quarantined (00_ingest) | not_an_image | 1 |" in md
    assert "## Privacy" in md and "## Reproducibility" in md and summary["stages"]["00_ingest"]["config_hash"] in md


def test_card_names_the_encoder_auto_resolved_to(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    p = tmp_path / "p.yaml"
    p.write_text(f"name: emb\nstages:\n  - stage: ingest\n    partition_size: 100\n    sources:\n"
                 f"      - {{type: idx, images: {img}, labels: {lab}}}\n  - stage: embed\n    fit_samples: 200\n")
    cards = tmp_path / "cards"
    r = CliRunner().invoke(app, ["run", str(p), "--run-dir", str(tmp_path / "run"), "--scheduler", "sync", "--quiet",
                                 "--card-dir", str(cards)])
    assert r.exit_code == 0, r.output
    (card,) = cards.glob("*.md")
    md = card.read_text()
    line = next(x for x in md.splitlines() if x.startswith("- 01") and ": encoder `gradpix" in x)
    assert "`encoder: auto` resolved to `gradpix-32px-g-pca128`" in line and "128-d, L2-normalised" in line
