import json

from typer.testing import CliRunner

from curate.cli import app
from curate.stages.inflate.adainf import with_inflate_stages


def test_with_inflate_stages_replaces_and_places_before_shard():
    base = [{"stage": "ingest"}, {"stage": "dedup.apply"}, {"stage": "shard"}]
    new = [{"stage": "inflate.load", "path": "p"}, {"stage": "inflate.generate"}, {"stage": "inflate.adainf"}]
    assert [s["stage"] for s in with_inflate_stages(base, new)] == [
        "ingest", "dedup.apply", "inflate.load", "inflate.generate", "inflate.adainf", "shard"]
    again = with_inflate_stages(with_inflate_stages(base, new), [{"stage": "inflate.train"}])
    assert [s["stage"] for s in again] == ["ingest", "dedup.apply", "inflate.train", "shard"]


def test_cli_inflate_help_states_defaults_and_runs(tmp_path, squares_idx, tiny_pipeline_dir):
    r = CliRunner()
    res = r.invoke(app, ["inflate", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "default: paper" in res.output and "default: 10000" in res.output
    img, lab, _, _ = squares_idx
    run = str(tmp_path / "run")
    res = r.invoke(app, ["ingest", img, "--out", run, "--scheduler", "sync", "-q"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["inflate", run, "--pipeline", str(tmp_path / "missing"), "-s", "sync", "-q"])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = r.invoke(app, ["inflate", run, "--pipeline", str(tiny_pipeline_dir), "-n", "6", "--sampling-steps", "2",
                         "--no-filter", "-s", "sync", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["generate"]["generated"] == 6 and data["adainf"]["real_replication"] == 10
    assert data["summary"]["accounting"]["synthetic_added"] == 6 and data["summary"]["accounting"]["balanced"]
