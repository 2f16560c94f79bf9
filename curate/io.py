"""Run-directory I/O on fsspec paths: atomic Parquet writes, manifests, the lock.

Layout of a run directory::

    RUN_DIR/
      run.lock                         held while a run is active
      pipeline.json                    the resolved pipeline of the last run
      NN_<stage>/part-<pid>.parquet    primary output of partition <pid>
      NN_<stage>/<table>/part-<pid>.parquet   secondary outputs (quarantine, ...)
      NN_<stage>/part-<pid>.json       manifest, written last: rows, stats, config hash
      scratch/NN_<stage>/...           a stage's temporary files (StageContext.scratch), every worker's
      scratch/_shared/...              files stages share (the mining stages' kNN index)
      summary.json

Every file is written to a temporary name and renamed into place, and the
manifest comes last, so a killed run never leaves a partition that looks done.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import time
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import ConfigError, RunLockedError

PART_PREFIX = "part-"


def fs_and_path(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, p = fsspec.core.url_to_fs(str(path))
    return fs, p


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is safe as one path component (``[A-Za-z0-9_.-]``, no leading dot); else ConfigError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 200:
        raise ConfigError(f"{what} {name!r} cannot be used as a file name: use letters, digits, '_', '.' and '-' "
                          f"only, not starting with '.' (no '/', '..' or spaces)")
    return name


def join(*parts: str) -> str:
    """``parts`` joined with ``/``; every part after the first must stay below it (no ``..`` component)."""
    parts = tuple(str(p) for p in parts if p != "")
    for p in parts[1:]:
        if ".." in p.replace("\\", "/").split("/"):
            raise ConfigError(f"path component {p!r} would leave {parts[0]!r}; stage, table and file names may "
                              f"not contain '..'")
    return "/".join(p.rstrip("/") for p in parts)


def part_path(run_dir: str, stage_dir: str, pid: str, table: str | None = None, ext: str = "parquet") -> str:
    """``RUN_DIR/<stage_dir>[/<table>]/part-<pid>.<ext>``; every component is checked with :func:`check_name`."""
    for c in stage_dir.split("/"):
        check_name(c, "stage directory")
    check_name(pid, "partition id")
    check_name(ext, "file extension")
    if table:
        check_name(table, "table")
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


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _describe(other: dict) -> str:
    since = other.get("since")
    when = time.strftime("%H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {other.get('pid', '?')} on {other.get('host', '?')}, started {when}"


class RunLock:
    """One curate run per run directory, held for the whole run; a second one fails with exit 3.

    Local run directories (and NFS/shared POSIX file systems with working
    ``flock``): an exclusive ``fcntl.flock`` on ``RUN_DIR/run.lock``, which
    holds ``{pid, host, since}``. The kernel decides who wins a race, and a
    crashed run's lock disappears with its process, so an empty, half-written or
    stale lock file never blocks. After locking, the file must still be the one
    at the path (same inode): a loser that opened the file just before the
    winner removed it retries instead of holding a deleted file.

    fsspec run directories (``s3://`` ...) have no locks: best effort. The lock
    file is created if absent, read back after a short pause, and owned only if
    it still carries this run's token; an existing lock blocks unless it was
    written on this host by a process that is gone. Two runs starting within the
    pause can still both proceed there: do not start two runs on one remote
    directory at once.
    """

    settle_s = 0.2  # remote protocol: pause before reading the lock back

    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir).rstrip("/")
        self.path = join(self.run_dir, "run.lock")
        self.held = False
        self._fd: int | None = None
        self._token = uuid.uuid4().hex

    def _me(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "token": self._token}

    def _locked(self, other: dict) -> RunLockedError:
        return RunLockedError(f"run directory '{self.run_dir}' is in use by another curate run ({_describe(other)}). "
                              f"Wait for it to finish, or use another --run-dir.")

    def __enter__(self) -> "RunLock":
        fs, p = fs_and_path(self.path)
        fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
        if _is_local(fs):
            self._acquire_local(p)
        else:
            self._acquire_remote()
        self.held = True
        return self

    # ---- local: flock ------------------------------------------------------------
    def _acquire_local(self, p: str) -> None:
        import fcntl

        while True:
            fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise self._locked(self._read_holder(p)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(p).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed it between our open and flock: try again on the new file
                os.close(fd)
                continue
            data = json.dumps(self._me()).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            self._fd = fd
            return

    @staticmethod
    def _read_holder(p: str) -> dict:
        # the holder writes its pid right after locking; give it a moment before reporting "unknown"
        for _ in range(20):
            try:
                with open(p, "rb") as f:
                    other = json.loads(f.read() or b"null")
                if isinstance(other, dict) and other.get("pid"):
                    return other
            except FileNotFoundError:  # released meanwhile
                return {}
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        return {}

    # ---- remote: best effort -----------------------------------------------------------
    def _acquire_remote(self) -> None:
        if exists(self.path):
            try:
                other = read_json(self.path)
            except Exception:  # noqa: BLE001 - half-written: treat as absent
                other = {}
            if isinstance(other, dict) and other.get("pid") and not self._stale(other):
                raise self._locked(other)
        write_json(self._me(), self.path)
        time.sleep(self.settle_s)
        try:
            back = read_json(self.path)
        except Exception:  # noqa: BLE001
            back = {}
        if back.get("token") != self._token:
            raise self._locked(back)

    @staticmethod
    def _stale(other: dict) -> bool:
        """A lock written on this host by a process that no longer exists."""
        if other.get("host") != socket.gethostname() or not other.get("pid"):
            return False
        try:
            os.kill(int(other["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False
        return False

    def __exit__(self, *exc: object) -> None:
        if not self.held:
            return
        self.held = False
        if self._fd is not None:
            fs, p = fs_and_path(self.path)
            try:
                os.unlink(p)  # while still locked: a waiter that opened it will see the inode change
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
            return
        try:
            if read_json(self.path).get("token") == self._token:
                remove(self.path)
        except Exception:  # noqa: BLE001 - already gone
            pass
