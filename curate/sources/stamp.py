"""What an ingest partition depends on: its input files, their stamp, and whether a worker sees them.

A partition's id hashes its payload, and the payload carries a *stamp* of the
files it reads, so a file rewritten in place gives its partition a new id: that
partition and everything downstream of it rerun, the others are still skipped
(resume keyed by data, ARCHITECTURE principle 4).

* ``mtime`` (default): path + size + modification time in ns, one ``stat`` per file
  (what make, rsync and datatrove's file listings use);
* ``content``: sha256 of the bytes; catches a rewrite that keeps size and mtime,
  but reads every input on the driver at plan time.
"""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Iterable

from curate.errors import CurateError

MODES = ("mtime", "content")


class InputNotVisibleError(CurateError):
    """A worker cannot see an input file that the driver listed when it planned the run (exit 1)."""


def payload_files(payload: dict) -> list[str]:
    """Every local file a source payload reads (folder entries, sidecars, arrays, volumes, series)."""
    files: list[str] = []
    for entry in payload.get("files") or ():
        if isinstance(entry, str):  # dicom: a list of paths
            files.append(entry)
        elif isinstance(entry, (list, tuple)):  # folder: [path, label, label_name, text_path]
            files.append(entry[0])
            if len(entry) > 3 and entry[3]:
                files.append(entry[3])
        # dict entries are inputs the plan already found bad (not a file, unreadable): nothing to read
    for key in ("path", "labels"):
        if isinstance(payload.get(key), str):
            files.append(payload[key])
    return list(dict.fromkeys(files))


def _file_sha256(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def stamp(files: Iterable[str], mode: str, cache: dict[str, str] | None = None) -> str:
    """A short digest of ``files`` that changes when one of them is rewritten, added or removed."""
    if mode not in MODES:
        raise ValueError(f"change_detection must be one of {MODES}, got {mode!r}")
    cache = {} if cache is None else cache
    h = hashlib.sha256()
    for f in files:
        key = f"{mode}\x1f{f}"
        if key not in cache:
            try:
                if mode == "content":
                    cache[key] = _file_sha256(f)
                else:
                    st = os.stat(f)
                    cache[key] = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError as err:  # the reader quarantines it with the real reason
                cache[key] = f"error:{type(err).__name__}"
        h.update(f"{f}\x1e{cache[key]}\x1d".encode("utf-8", "surrogateescape"))  # any file name
    return h.hexdigest()[:16]


def where() -> str:
    """This process's host (and Dask worker address, when it is one), for infrastructure errors."""
    host = socket.gethostname()
    try:
        from distributed import get_worker

        return f"worker {get_worker().address} on host {host}"
    except (ImportError, ValueError):
        return f"host {host} (pid {os.getpid()})"


def missing_input(path: str) -> InputNotVisibleError:
    return InputNotVisibleError(
        f"{where()} cannot see input '{path}', which existed when the run was planned; every worker "
        f"must see the inputs at the same absolute path (a shared file system). The file was not "
        f"quarantined; fix the mount (or restore the file) and rerun the same command to resume")


def check_visible(files: Iterable[str]) -> None:
    """Raise :class:`InputNotVisibleError` for the first file this process cannot see."""
    for f in files:
        if not os.path.exists(f):
            raise missing_input(f)
