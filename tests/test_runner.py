"""The run engine: resume after SIGKILL, config-hash invalidation, lock, Dask scheduler."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

import tests._stages  # noqa: F401 - registers test.invert
from curate.config import PipelineConfig
from curate.errors import RunLockedError, StageError
from curate.io import RunLock
from curate.runner import Runner, run_pipeline
from tests.conftest import idx_pipeline, read_run_table, write_idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parts(run_dir, stage_dir):
    d = os.path.join(run_dir, stage_dir)
    return {f: pq.read_table(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".parquet")}


def _two_stage(img, lab, log_dir, **invert):
    cfg = idx_pipeline(img, lab, partition_size=60)
    cfg["stages"].append({"stage": "test.invert", "log_dir": str(log_dir), **invert})
    return PipelineConfig(**cfg)


def _calls(log_dir):
    return {f: open(os.path.join(log_dir, f)).read().count("x") for f in os.listdir(log_dir)}


def test_resume_skips_done_and_config_change_invalidates_downstream(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    logs = tmp_path / "logs"
    logs.mkdir()
    run = str(tmp_path / "run")
    s1 = run_pipeline(_two_stage(img, lab, logs), run, scheduler="sync", progress=False)
    assert s1["stages"]["01_test_invert"]["recomputed"] == 5 and set(_calls(logs).values()) == {1}
    s2 = run_pipeline(_two_stage(img, lab, logs), run, scheduler="sync", progress=False)
    assert s2["stages"]["00_ingest"]["recomputed"] == 0 and s2["stages"]["01_test_invert"]["recomputed"] == 0
    assert set(_calls(logs).values()) == {1}
    # change the upstream (ingest) config: both stages rerun
    cfg = _two_stage(img, lab, logs)
    cfg.stages[0]["max_pixels"] = 10_000
    s3 = run_pipeline(cfg, run, scheduler="sync", progress=False)
    assert s3["stages"]["00_ingest"]["recomputed"] == 5 and s3["stages"]["01_test_invert"]["recomputed"] == 5
    # --force reruns everything
    s4 = Runner(cfg, run, scheduler="sync", force=True, progress=False).run()
    assert s4["stages"]["00_ingest"]["recomputed"] == 5
    assert set(_calls(logs).values()) == {3}
    assert s4["accounting"] == {"ingested": 300, "kept": 300, "removed": 0, "quarantined": 0,
                                "synthetic_added": 0, "representatives_not_kept": 0, "groups_emptied": 0,
                                "balanced": True}


def test_partition_ids_come_from_data_not_workers(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    a = Runner(PipelineConfig(**idx_pipeline(img, lab)), str(tmp_path / "a"), scheduler="sync")
    b = Runner(PipelineConfig(**idx_pipeline(img, lab)), str(tmp_path / "b"), scheduler="sync", workers=7)
    assert [p.id for p in a.partitions(a.plans[0])] == [p.id for p in b.partitions(b.plans[0])]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    import numpy as np

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(12000, 28, 28), dtype=np.uint8)
    img = write_idx(str(tmp_path / "big-images-idx3-ubyte.gz"), images)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "kill", "stages": [
        {"stage": "ingest", "partition_size": 150, "sources": [{"type": "idx", "images": img}]}]}))
    killed = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-m", "curate", "run", str(pipeline), "--run-dir", killed,
                             "--scheduler", "sync", "--quiet"], cwd=REPO)
    stage = os.path.join(killed, "00_ingest")
    deadline = time.time() + 60
    while time.time() < deadline:
        done = [f for f in os.listdir(stage) if f.endswith(".json")] if os.path.isdir(stage) else []
        if len(done) >= 2:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {f: os.stat(os.path.join(stage, f)).st_mtime_ns for f in os.listdir(stage) if f.endswith(".json")}
    assert 2 <= len(done_before) < 80, f"the run should have been killed mid-stage ({len(done_before)} done)"
    cfg = PipelineConfig(**yaml.safe_load(pipeline.read_text()))
    summary = run_pipeline(cfg, killed, scheduler="sync", progress=False)  # stale lock of a dead pid is taken over
    assert summary["stages"]["00_ingest"]["recomputed"] == 80 - len(done_before)
    for f, mtime in done_before.items():  # completed partitions were not recomputed
        assert os.stat(os.path.join(stage, f)).st_mtime_ns == mtime
    clean = str(tmp_path / "clean")
    run_pipeline(cfg, clean, scheduler="sync", progress=False)
    a, b = _parts(killed, "00_ingest"), _parts(clean, "00_ingest")
    assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)
    assert not [f for f in os.listdir(stage) if f.startswith(".tmp")]


def test_lock_blocks_a_second_run(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    run = str(tmp_path / "run")
    with RunLock(run):
        with pytest.raises(RunLockedError, match="in use by another curate run"):
            run_pipeline(PipelineConfig(**idx_pipeline(img, lab)), run, scheduler="sync", progress=False)
    run_pipeline(PipelineConfig(**idx_pipeline(img, lab)), run, scheduler="sync", progress=False)
    assert not os.path.exists(os.path.join(run, "run.lock"))


def test_runtime_failure_names_stage_and_partition(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    logs = tmp_path / "logs"
    logs.mkdir()
    with pytest.raises(StageError, match=r"stage 'test_invert' failed on partition '[0-9a-f]+': RuntimeError: planted"):
        run_pipeline(_two_stage(img, lab, logs, fail_on="*"), str(tmp_path / "r"), scheduler="sync", progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_bin(name: str) -> list[str]:
    return [os.path.join(os.path.dirname(sys.executable), "dask"), name]


def test_real_dask_scheduler_and_two_workers_match_sync(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    logs = tmp_path / "logs"
    logs.mkdir()
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [subprocess.Popen(_dask_bin("scheduler") + ["--host", "127.0.0.1", "--port", str(port),
                                                        "--dashboard-address", ":0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)]
    try:
        time.sleep(1.5)
        for _ in range(2):
            procs.append(subprocess.Popen(_dask_bin("worker") + [addr, "--nthreads", "1", "--nworkers", "1",
                                                                 "--dashboard-address", ":0"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO))
        from distributed import Client

        with Client(addr, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
            assert len(c.scheduler_info()["workers"]) == 2
        dist = str(tmp_path / "dist")
        s = run_pipeline(_two_stage(img, lab, logs), dist, scheduler=addr, progress=False)
        assert s["scheduler"] == addr
        sync = str(tmp_path / "sync")
        run_pipeline(_two_stage(img, lab, logs), sync, scheduler="sync", progress=False)
        for stage in ("00_ingest", "01_test_invert"):
            a, b = _parts(dist, stage), _parts(sync, stage)
            assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)
        assert read_run_table(dist, "01_test_invert").num_rows == 300
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_embedded_local_cluster(tmp_path, idx_dataset):
    img, lab, *_ = idx_dataset
    s = run_pipeline(PipelineConfig(**idx_pipeline(img, lab)), str(tmp_path / "r"), workers=2, progress=False)
    assert s["scheduler"].startswith("local cluster (2 workers)") and s["accounting"]["kept"] == 300
