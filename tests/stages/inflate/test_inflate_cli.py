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


def test_cli_help_defaults_match_the_stages():
    """The CLI declares no defaults of its own (flags default to None); its help states the stages'."""
    from curate import registry

    train = registry.get("inflate.train").Params()
    gen = registry.get("inflate.generate").Params()
    ada = registry.get("inflate.adainf").Params()
    res = CliRunner().invoke(app, ["inflate", "--help"], env={"COLUMNS": "300"})
    text = " ".join(res.output.split())
    for value in (train.steps, train.batch_size, gen.n_images, gen.sampler, gen.steps, ada.mode, int(ada.dup)):
        assert f"default: {value}" in text
    assert "default: " + ",".join(map(str, train.block_out_channels)) in text


def test_rerun_with_other_execution_flags_reruns_nothing(tmp_path, squares_idx, tiny_pipeline_dir):
    img, lab, _, _ = squares_idx
    run = str(tmp_path / "run")
    r = CliRunner()
    assert r.invoke(app, ["ingest", img, "--out", run, "--scheduler", "sync", "-q"]).exit_code == 0
    args = ["inflate", run, "--pipeline", str(tiny_pipeline_dir), "-n", "4", "--sampling-steps", "2", "--no-filter",
            "-s", "sync", "--json"]
    assert r.invoke(app, args).exit_code == 0
    # again, without repeating the options: the run's own settings stay, so nothing is recomputed
    res = r.invoke(app, ["inflate", run, "--pipeline", str(tiny_pipeline_dir), "-s", "sync", "--json"])
    assert res.exit_code == 0, res.output
    stages = json.loads(res.output)["summary"]["stages"]
    assert all(st["recomputed"] == 0 for st in stages.values()), {k: v["recomputed"] for k, v in stages.items()}
