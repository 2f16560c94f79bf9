"""No stage writes outside its stage directory or the scratch space of the run directory: not to TMPDIR,
not to HOME, not next to the inputs, not to ad-hoc folders of the run dir. Runs the demo pipeline (every stage family: ingest, embed, dedup, apply, mining,
shard) in a fresh process whose TMPDIR and HOME are empty folders, and compares file listings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _listing(root, skip=()) -> set[str]:
    out = set()
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip]
        out.update(os.path.relpath(os.path.join(d, f), root) for f in files)
        out.update(os.path.relpath(os.path.join(d, x), root) + "/" for x in dirs)
    return out


@pytest.mark.slow
def test_demo_pipeline_writes_only_inside_its_run_dir(tmp_path):
    from curate.demo import materialize

    work, tmp, home = tmp_path / "work", tmp_path / "tmpdir", tmp_path / "home"
    for d in (work, tmp, home):
        d.mkdir()
    materialize(str(work / "data" / "demo"))
    before = _listing(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MPLCONFIGDIR", "TORCH_HOME", "HF_"))}
    env.update(TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp), HOME=str(home), PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "curate", "run", os.path.join(REPO, "pipelines", "demo.yaml"), "--scheduler", "sync",
           "--quiet", "--no-card"]
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    run_dir = work / "runs" / "demo"
    assert (run_dir / "summary.json").exists()
    assert list(run_dir.glob("*_shard/shards/index.json"))
    assert _listing(tmp) == set(), "written to TMPDIR"
    assert _listing(home) == set(), "written to HOME"
    assert _listing(work, skip={str(work / "runs")}) == before, "written next to the inputs"
    assert {p.name for p in (work / "runs").iterdir()} == {"demo"}
    # inside the run dir: stage directories, the scratch space and the runner's own files only
    stray = {p.name for p in run_dir.iterdir()} - {"scratch", "pipeline.json", "summary.json", "secrets"}
    assert all(n[:2].isdigit() and n[2] == "_" for n in stray), sorted(stray)
    # the mining stages' kNN index lives in the run dir's scratch space
    assert list((run_dir / "scratch" / "_shared" / "knn").glob("*/index.faiss"))
