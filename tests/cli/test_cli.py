"""CLI exit codes and messages (typer CliRunner)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import tests._stages  # noqa: F401
from curate.cli import app

runner = CliRunner()


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("run", "validate", "status", "ingest", "demo-data"):
        assert cmd in r.output


def test_validate_ok_and_bad_key_exit_2(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    good = tmp_path / "good.yaml"
    good.write_text(f"stages:\n  - stage: ingest\n    sources: [{{type: idx, images: {img}}}]\n")
    r = runner.invoke(app, ["validate", str(good)])
    assert r.exit_code == 0 and "valid" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"stages:\n  - stage: ingest\n    colour: red\n    sources: [{{type: idx, images: {img}}}]\n")
    r = runner.invoke(app, ["validate", str(bad)])
    assert r.exit_code == 2 and "colour" in r.output and "Traceback" not in r.output


def test_run_missing_file_exit_2_and_runtime_error_exit_1(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    r = runner.invoke(app, ["run", str(tmp_path / "missing.yaml"), "--run-dir", str(tmp_path / "r")])
    assert r.exit_code == 2 and "not found" in r.output
    p = tmp_path / "p.yaml"
    p.write_text(f"stages:\n  - stage: ingest\n    sources: [{{type: idx, images: {img}}}]\n"
                 f"  - stage: test.invert\n    fail_on: '*'\n")
    r = runner.invoke(app, ["run", str(p), "--run-dir", str(tmp_path / "r"), "--scheduler", "sync", "--quiet", "--no-card"])
    assert r.exit_code == 1 and "test_invert" in r.output and "partition" in r.output
    assert "Traceback" not in r.output


def test_run_json_dry_run_status_and_ingest(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    p = tmp_path / "p.yaml"
    p.write_text(f"name: t\nstages:\n  - stage: ingest\n    partition_size: 100\n    sources: [{{type: idx, images: {img}, labels: {lab}}}]\n")
    run_dir = str(tmp_path / "r")
    r = runner.invoke(app, ["run", str(p), "--run-dir", run_dir, "--dry-run", "--json"])
    assert r.exit_code == 0
    plan = json.loads(r.output)["stages"]
    assert plan[0]["partitions"] == 3 and plan[0]["will_skip"] == 0
    assert plan[0]["inputs"] == ["(sources)"] and plan[0]["outputs"] == ["samples"]
    r = runner.invoke(app, ["run", str(p), "--run-dir", run_dir, "--dry-run"])
    assert r.exit_code == 0 and f"plan for t in {run_dir}" in r.output.replace("\n", "")
    r = runner.invoke(app, ["run", str(p), "--run-dir", run_dir, "--scheduler", "sync", "--quiet", "--no-card"])
    assert r.exit_code == 0 and "ingested 300 = kept 300 + removed 0 + quarantined 0" in r.output
    r = runner.invoke(app, ["run", str(p), "--run-dir", run_dir, "--dry-run", "--json"])
    assert json.loads(r.output)["stages"][0]["will_skip"] == 3
    r = runner.invoke(app, ["status", run_dir, "--json"])
    assert json.loads(r.output)["stages"]["00_ingest"]["partitions_done"] == 3
    r = runner.invoke(app, ["ingest", img, "--out", str(tmp_path / "r2"), "--scheduler", "sync", "--quiet"])
    assert r.exit_code == 0 and "idx" in r.output and "ingested 300" in r.output
    r = runner.invoke(app, ["status", str(tmp_path / "nope")])
    assert r.exit_code == 2
