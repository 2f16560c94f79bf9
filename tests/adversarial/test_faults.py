"""Faults on clusters and changing inputs (issue 12, items 6-11).

Relative paths with workers started elsewhere, a scheduler without workers or
lost mid-run, a worker killed mid-stage, inputs rewritten in place, FIFOs /
sockets / unreadable directories in an image folder, and shards replaced under
a process that already verified them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

import tests._stages  # noqa: F401 - registers test.invert
from curate import imaging
from curate.config import PipelineConfig, load_pipeline
from curate.errors import CurateError, StageError
from curate.runner import Runner, run_pipeline
from tests.conftest import read_run_table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
# the curate CLI with the test stages registered (test.invert)
CLI = [PY, "-c", "import runpy, tests._stages; runpy.run_module('curate', run_name='__main__')"]
DASK = os.path.join(os.path.dirname(sys.executable), "dask")


# ---------------------------------------------------------------------------- fixtures
def _png(path, seed: int, size: int = 12) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _folder(root, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    os.makedirs(root, exist_ok=True)
    return {f"img{i}.png": _png(os.path.join(root, f"img{i}.png"), seed + i) for i in range(n)}


def _pipeline(root, partition_size: int = 2, **ingest) -> PipelineConfig:
    return PipelineConfig(name="f", stages=[
        {"stage": "ingest", "partition_size": partition_size, "sources": [{"type": "folder", "path": str(root)}],
         **ingest},
        {"stage": "test.invert"}])


def _by_file(table) -> dict[str, np.ndarray]:
    return {os.path.basename(u): imaging.decode_png(b)
            for u, b in zip(table.column("source_uri").to_pylist(), table.column("image").to_pylist())}


def _files(run_dir) -> dict[str, bytes]:
    """Every table file of a run (parquet parts and shards), by relative path."""
    out = {}
    for d, _, fs in os.walk(run_dir):
        for f in fs:
            if f.endswith(".parquet") and not f.startswith(".tmp"):
                p = os.path.join(d, f)
                out[os.path.relpath(p, run_dir)] = open(p, "rb").read()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, deadline: float) -> None:
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"dask scheduler did not open port {port}")


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def dask_cluster(base, n_workers: int):
    """A real ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1, each started
    in its own working directory ``base/w<i>`` (so relative paths mean nothing to them)."""
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": REPO}
    logs = os.path.join(base, "logs")
    os.makedirs(logs, exist_ok=True)

    def start(args, cwd, name):
        os.makedirs(cwd, exist_ok=True)
        with open(os.path.join(logs, name), "wb") as log:
            return subprocess.Popen([DASK, *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)

    procs = {"scheduler": start(["scheduler", "--host", "127.0.0.1", "--port", str(port),
                                 "--dashboard-address", ":0"], os.path.join(base, "sched"), "scheduler.log"),
             "workers": []}
    try:
        _wait_port(port, time.time() + 60)
        for i in range(n_workers):
            procs["workers"].append(start(["worker", addr, "--nthreads", "1", "--nworkers", "1", "--host",
                                           "127.0.0.1", "--dashboard-address", ":0", "--no-nanny"],
                                          os.path.join(base, f"w{i}"), f"worker{i}.log"))
        if n_workers:
            from distributed import Client

            with Client(addr, timeout="30s") as c:
                c.wait_for_workers(n_workers, timeout=90)
        yield addr, procs
    finally:
        _stop([*procs["workers"], procs["scheduler"]])


def _curate(args, cwd, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": REPO, "NO_COLOR": "1", **env})


def _wait_for(pred, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(f"curate exited ({proc.returncode}) before {what}: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _manifests(run_dir, stage_dir) -> int:
    d = os.path.join(run_dir, stage_dir)
    return len([f for f in os.listdir(d) if f.endswith(".json")]) if os.path.isdir(d) else 0


# ------------------------------------------------------------- item 8: changed inputs
def test_rewritten_file_reruns_its_partition_and_downstream_only(tmp_path):
    root = tmp_path / "imgs"
    _folder(root, 6)
    run = str(tmp_path / "run")
    s1 = run_pipeline(_pipeline(root), run, scheduler="sync", progress=False)
    assert s1["stages"]["00_ingest"]["recomputed"] == 3
    s2 = run_pipeline(_pipeline(root), run, scheduler="sync", progress=False)
    assert s2["stages"]["00_ingest"]["recomputed"] == 0 and s2["stages"]["01_test_invert"]["recomputed"] == 0
    new = _png(root / "img2.png", seed=99)  # rewritten in place, other pixels
    s3 = run_pipeline(_pipeline(root), run, scheduler="sync", progress=False)
    assert s3["stages"]["00_ingest"]["recomputed"] == 1 and s3["stages"]["01_test_invert"]["recomputed"] == 1
    assert s3["stages"]["00_ingest"]["partitions"] == 3 and s3["accounting"]["ingested"] == 6
    ingested, inverted = _by_file(read_run_table(run, "00_ingest")), _by_file(read_run_table(run, "01_test_invert"))
    assert len(ingested) == len(inverted) == 6
    np.testing.assert_array_equal(ingested["img2.png"], new)
    np.testing.assert_array_equal(inverted["img2.png"], 255 - new)
    # the stale partition is gone from both stages
    assert len([f for f in os.listdir(os.path.join(run, "01_test_invert")) if f.endswith(".parquet")]) == 3


def test_content_change_detection_sees_a_rewrite_with_same_size_and_mtime(tmp_path):
    root = tmp_path / "imgs"
    _folder(root, 3)
    path = root / "img3.bmp"  # uncompressed: other pixels, same size
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    st = os.stat(path)

    def pids(mode):
        r = Runner(_pipeline(root, change_detection=mode), str(tmp_path / mode), scheduler="sync")
        return [p.id for p in r.partitions(r.plans[0])]

    before = {m: pids(m) for m in ("mtime", "content")}
    new = np.full((8, 8, 3), 200, np.uint8)
    Image.fromarray(new).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    # partitions of 2 in listing order: (img0, img1), (img2, img3.bmp)
    assert pids("mtime") == before["mtime"]  # size + mtime cannot see it: the documented trade-off
    now = pids("content")
    assert now[0] == before["content"][0] and now[1] != before["content"][1]
    run = str(tmp_path / "content")
    run_pipeline(_pipeline(root, change_detection="content"), run, scheduler="sync", progress=False)
    np.testing.assert_array_equal(_by_file(read_run_table(run, "00_ingest"))["img3.bmp"], new)


# ---------------------------------------------------- item 9: FIFOs, sockets, bad dirs
@contextmanager
def _alarm(seconds: int):
    def boom(*_):
        raise TimeoutError(f"ingest hung for {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_fifo_socket_and_unreadable_directory_are_quarantined_not_opened(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    _folder(root / "cats", 2)
    _folder(root / "dogs", 1, seed=7)
    os.mkfifo(root / "cats" / "pipe.png")
    os.mkfifo(root / "cats" / "img0.txt")  # a FIFO where a caption sidecar would be
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "dogs" / "sock.png"))
    secret = root / "secret"
    _folder(secret, 2, seed=20)
    os.chmod(secret, 0)
    real_scandir = os.scandir

    def scandir(path="."):  # root ignores permissions: make the listing fail as it would for a user
        if os.fspath(path) == str(secret):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    try:
        with _alarm(60):
            run = str(tmp_path / "run")
            summary = run_pipeline(_pipeline(root, partition_size=3), run, scheduler="sync", progress=False)
    finally:
        sock.close()
        os.chmod(secret, 0o755)
    q = read_run_table(run, "00_ingest", "quarantine").to_pylist()
    reasons = sorted((os.path.relpath(r["source_uri"], root), r["reason"]) for r in q)
    assert reasons == [("cats/img0.txt", "not_a_regular_file"), ("cats/pipe.png", "not_a_regular_file"),
                       ("dogs/sock.png", "not_a_regular_file"), ("secret", "unreadable_directory")]
    assert all(r["detail"] for r in q) and any("FIFO" in r["detail"] for r in q)
    samples = read_run_table(run, "00_ingest")
    assert samples.num_rows == 3 and samples.column("text").to_pylist() == [None] * 3
    acc = summary["accounting"]
    assert (acc["ingested"], acc["kept"], acc["quarantined"], acc["balanced"]) == (7, 3, 4, True)


def test_infer_source_does_not_open_a_fifo(tmp_path):
    from curate.sources.infer import infer_source

    _folder(tmp_path / "d", 1)
    os.mkfifo(tmp_path / "d" / "x.dcm")
    with _alarm(30):
        assert infer_source(str(tmp_path / "d"))["type"] == "folder"


# --------------------------------------------------- item 6: absolute paths, visibility
def test_relative_paths_are_made_absolute_on_the_driver(tmp_path, monkeypatch):
    _folder(tmp_path / "data" / "imgs", 2)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"name": "rel", "run_dir": "runs/rel", "stages": [
        {"stage": "ingest", "sources": [{"type": "folder", "path": "data/imgs"}]},
        {"stage": "embed", "encoder": "pixels"}]}))
    monkeypatch.chdir(tmp_path)
    cfg = load_pipeline("p.yaml")
    runner = Runner(cfg, scheduler="sync")
    assert runner.run_dir == str(tmp_path / "runs" / "rel")
    src = runner.plans[0].spec.params.sources[0]
    assert src.path == str(tmp_path / "data" / "imgs")
    payload = runner.partitions(runner.plans[0])[0].payload
    assert all(os.path.isabs(e[0]) for e in payload["files"])
    monkeypatch.chdir(tmp_path / "data")  # the plan means the same files from anywhere
    assert runner.partitions(runner.plans[0])[0].payload == payload


def test_a_planned_file_the_worker_cannot_see_fails_the_stage_and_is_not_quarantined(tmp_path, monkeypatch):
    from curate.sources import folder

    root = tmp_path / "imgs"
    _folder(root, 4)
    real_plan = folder.plan

    def plan_then_unmount(src, size, *rest):
        out = real_plan(src, size, *rest)
        os.remove(root / "img3.png")  # gone between planning (driver) and reading (worker)
        return out

    monkeypatch.setattr(folder, "plan", plan_then_unmount)
    run = str(tmp_path / "run")
    with pytest.raises(StageError, match=rf"cannot see input '{root / 'img3.png'}'.*{socket.gethostname()}|"
                                         rf"{socket.gethostname()}.*cannot see input '{root / 'img3.png'}'"):
        run_pipeline(_pipeline(root), run, scheduler="sync", progress=False)
    qdir = os.path.join(run, "00_ingest", "quarantine")
    quarantined = read_run_table(run, "00_ingest", "quarantine").to_pylist() if os.path.isdir(qdir) else []
    assert not [r for r in quarantined if "img3" in r["source_uri"]]


# ------------------------------------------------------------------ item 7: schedulers
def test_scheduler_without_workers_times_out_with_a_message(tmp_path):
    _folder(tmp_path / "imgs", 2)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"name": "nw", "stages": [
        {"stage": "ingest", "sources": [{"type": "folder", "path": "imgs"}]}]}))
    with dask_cluster(str(tmp_path / "cluster"), 0) as (addr, _):
        t0 = time.time()
        res = _curate(["run", "p.yaml", "--run-dir", "run", "--scheduler", addr, "--no-card"], tmp_path,
                      timeout=120, CURATE_WORKER_WAIT="2")
    assert res.returncode == 2, res.stderr
    assert f"no Dask workers connected to {addr}" in res.stderr and f"dask worker {addr}" in res.stderr
    assert "Traceback" not in res.stderr and time.time() - t0 < 60


def test_scheduler_lost_mid_run_exits_1_without_traceback(tmp_path):
    _folder(tmp_path / "imgs", 8)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"name": "lost", "stages": [
        {"stage": "ingest", "partition_size": 1, "sources": [{"type": "folder", "path": "imgs"}]},
        {"stage": "test.invert", "sleep": 1.0}]}))
    run = tmp_path / "run"
    with dask_cluster(str(tmp_path / "cluster"), 1) as (addr, procs):
        proc = subprocess.Popen([*CLI, "run", "p.yaml", "--run-dir", "run", "--scheduler", addr,
                                 "--no-card", "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
        try:
            _wait_for(lambda: _manifests(run, "01_test_invert") >= 1, 120, "the first test.invert partition", proc)
            procs["scheduler"].kill()
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, err
    assert f"lost the Dask scheduler {addr}" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err


# -------------------------------------- item 11: killed worker, workers in other dirs
def test_killed_worker_and_workers_in_other_dirs_give_the_sync_tables(tmp_path):
    """Relative paths in the YAML, 3 workers started in 3 other directories, one SIGKILLed mid-stage:
    the tables are byte-identical to a ``--scheduler sync`` run."""
    proj = tmp_path / "proj"
    _folder(proj / "data" / "a", 10)
    _folder(proj / "data" / "b", 10, seed=50)
    shutil.copy(proj / "data" / "a" / "img3.png", proj / "data" / "b" / "copy.png")  # an exact duplicate
    (proj / "p.yaml").write_text(yaml.safe_dump({"name": "faults", "stages": [
        {"stage": "ingest", "partition_size": 2, "sources": [{"type": "folder", "path": "data"}]},
        {"stage": "test.invert", "sleep": 0.4},
        {"stage": "dedup.exact"},
        {"stage": "dedup.apply"},
        {"stage": "shard", "max_rows": 8}]}))
    sync = _curate(["run", "p.yaml", "--run-dir", "runs/sync", "--scheduler", "sync", "--no-card", "--quiet"], proj)
    assert sync.returncode == 0, sync.stderr
    dist_dir = proj / "runs" / "dist"
    with dask_cluster(str(tmp_path / "cluster"), 3) as (addr, procs):
        proc = subprocess.Popen([*CLI, "run", "p.yaml", "--run-dir", "runs/dist", "--scheduler", addr,
                                 "--no-card", "--quiet"], cwd=proj, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
        try:
            _wait_for(lambda: _manifests(dist_dir, "01_test_invert") >= 2, 180, "test.invert to be under way", proc)
            assert _manifests(dist_dir, "01_test_invert") < 11, "the worker should die mid-stage"
            procs["workers"][0].kill()
            out, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert "ingested 21 = kept 20 + removed 1 + quarantined 0" in out
    a, b = _files(proj / "runs" / "sync"), _files(dist_dir)
    assert sorted(a) == sorted(b) and len(a) > 20
    assert [k for k in a if a[k] != b[k]] == []
    for w in ("w0", "w1", "w2"):  # nothing was written relative to the workers' own directories
        assert "runs" not in os.listdir(tmp_path / "cluster" / w)


# ------------------------------------------------------ item 10: the verification cache
def _shard_files(out_dir) -> list[str]:
    from curate.load.index import read_index

    return [s.path for s in read_index(str(out_dir)).shards]


def test_shard_replaced_by_another_valid_shard_is_caught_by_a_new_dataset(tmp_path):
    from curate.load.dataset import ShardDataset
    from curate.load.index import ShardIntegrityError
    from tests.load._shards import make_shards

    out = tmp_path / "shards"
    samples, *_ = make_shards(out, n=30, max_rows=10, rg=5)
    first = [x["sample_id"] for x in ShardDataset(str(out), shuffle=False, decode=False)]
    assert sorted(first) == sorted(samples.column("sample_id").to_pylist())
    files = _shard_files(out)
    time.sleep(0.01)
    shutil.copy(files[1], files[0])  # a valid shard, same size and rows, other samples
    with pytest.raises(ShardIntegrityError, match=rf"shard '{files[0]}' is corrupt or was modified"):
        list(ShardDataset(str(out), shuffle=False, decode=False))


def test_shard_rows_are_checked_against_the_index(tmp_path):
    from curate.load.dataset import ShardDataset
    from tests.load._shards import make_shards

    out = tmp_path / "shards"
    make_shards(out, n=25, max_rows=10, rg=5)
    files = _shard_files(out)
    shutil.copy(files[0], files[2])  # more rows (and row groups) than the index records
    with pytest.raises(CurateError, match=rf"shard '{files[2]}' has \d+ rows .* records \d+ in .*re-run `curate shard`"):
        list(ShardDataset(str(out), shuffle=False, decode=False, verify=False))
