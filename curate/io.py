"""Run-directory I/O on fsspec paths: atomic Parquet writes, manifests, the lock.

Layout of a run directory::

    RUN_DIR/
      run.lock                         held while a run is active
      pipeline.json                    the resolved pipeline of the last run
      NN_<stage>/part-<pid>.parquet    primary output of partition <pid>
      NN_<stage>/<table>/part-<pid>.parquet   secondary outputs (quarantine, ...)
      NN_<stage>/part-<pid>.json       manifest, written last: rows, stats, config hash
      summary.json

Every file is written to a temporary name and renamed into place, and the
manifest comes last, so a killed run never leaves a partition that looks done.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import RunLockedError

PART_PREFIX = "part-"


def fs_and_path(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, p = fsspec.core.url_to_fs(str(path))
    return fs, p


def join(*parts: str) -> str:
    return "/".join(str(p).rstrip("/") for p in parts if p != "")


def part_path(run_dir: str, stage_dir: str, pid: str, table: str | None = None, ext: str = "parquet") -> str:
    if table:
        return join(run_dir, stage_dir, table, f"{PART_PREFIX}{pid}.{ext}")
    return join(run_dir, stage_dir, f"{PART_PREFIX}{pid}.{ext}")


def manifest_path(run_dir: str, stage_dir: str, pid: str) -> str:
    return part_path(run_dir, stage_dir, pid, ext="json")


def exists(path: str) -> bool:
    fs, p = fs_and_path(path)
    return fs.exists(p)


def _atomic_write(path: str, write) -> None:
    fs, p = fs_and_path(path)
    parent = p.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{p.rsplit('/', 1)[1]}"
    try:
        with fs.open(tmp, "wb") as f:
            write(f)
        fs.mv(tmp, p)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def write_parquet(table: pa.Table, path: str, **kwargs: Any) -> None:
    """Write ``table`` atomically (temp file + rename)."""
    kwargs.setdefault("compression", "zstd")
    _atomic_write(path, lambda f: pq.write_table(table, f, **kwargs))


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    fs, p = fs_and_path(path)
    return pq.read_table(p, filesystem=fs, columns=columns)


def write_json(obj: Any, path: str) -> None:
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    _atomic_write(path, lambda f: f.write(data))


def read_json(path: str) -> Any:
    fs, p = fs_and_path(path)
    with fs.open(p, "rb") as f:
        return json.loads(f.read())


def list_partitions(run_dir: str, stage_dir: str, table: str | None = None, ext: str = "parquet") -> list[str]:
    """Partition ids with a file in ``stage_dir`` (or its ``table`` sub-directory)."""
    fs, p = fs_and_path(join(run_dir, stage_dir, table or ""))
    if not fs.exists(p):
        return []
    out = []
    for name in fs.ls(p, detail=False):
        base = name.rsplit("/", 1)[-1]
        if base.startswith(PART_PREFIX) and base.endswith("." + ext):
            out.append(base[len(PART_PREFIX): -len(ext) - 1])
    return sorted(out)


def remove(path: str) -> None:
    fs, p = fs_and_path(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)


def makedirs(path: str) -> None:
    fs, p = fs_and_path(path)
    fs.makedirs(p, exist_ok=True)


class RunLock:
    """A lock file in the run directory; a second run on the same directory fails clearly.

    A lock left by a process that died on this host is taken over.
    """

    def __init__(self, run_dir: str):
        self.path = join(run_dir, "run.lock")
        self.held = False

    def __enter__(self) -> "RunLock":
        fs, p = fs_and_path(self.path)
        fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        if fs.exists(p):
            try:
                other = read_json(self.path)
            except Exception:  # noqa: BLE001 - a half-written lock is as good as none
                other = {}
            if not self._stale(other):
                raise RunLockedError(
                    f"run directory '{self.path.rsplit('/', 1)[0]}' is in use by another curate run "
                    f"(pid {other.get('pid')} on {other.get('host')}, started "
                    f"{time.strftime('%H:%M:%S', time.localtime(other.get('since', 0)))}). Wait for it to "
                    f"finish, or use another --run-dir. If that process is gone, delete {self.path}."
                )
        if p.startswith("/") or fs.protocol in ("file", ("file", "local")):
            # exclusive create: two runs racing for the same directory cannot both win
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                os.remove(p)  # stale lock verified above
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
        else:
            write_json(me, self.path)
        self.held = True
        return self

    @staticmethod
    def _stale(other: dict) -> bool:
        if other.get("host") != socket.gethostname() or not other.get("pid"):
            return False
        try:
            os.kill(int(other["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def __exit__(self, *exc: object) -> None:
        if self.held:
            remove(self.path)
            self.held = False
