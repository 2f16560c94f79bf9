"""Image folders: PNG / JPEG / TIFF / BMP (any file is tried; non-images are quarantined).

Labels come from the first sub-folder under the root (``root/<label>/.../x.png``),
the ImageFolder convention. A ``<stem>.txt`` file next to an image is its paired text.
Multi-page TIFFs give one sample per page.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Iterator

from curate import imaging
from curate.errors import SampleError
from curate.samples import sample_row
from curate.sources import Bad, ReadOptions, chunks, display_path, file_sha256, stamp

TEXT_SUFFIXES = {".txt"}
SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


log = logging.getLogger("curate.ingest")


def _key(entry) -> str:
    return entry if isinstance(entry, str) else entry["path"]


_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}


def _bad(path: str, reason: str, detail: str) -> dict:
    return {"path": path, "reason": reason, "detail": detail}


def _listing(root: str, text_sidecar: bool) -> list:
    """Walk ``root`` in sorted order: ``path`` strings of regular files, plus a :func:`_bad` entry for
    every name that is not one (FIFO, socket, device: opening those would block or read forever), for
    every broken link and for every sub-directory that cannot be listed."""
    out: list = []

    def unreadable(err: OSError) -> None:
        out.append(_bad(err.filename, "unreadable_directory", f"cannot list directory: {err.strerror or err}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name in SKIP_NAMES:
                continue
            path = os.path.join(dirpath, name)
            try:
                mode = os.stat(path).st_mode
            except OSError as err:
                broken = isinstance(err, FileNotFoundError) and os.path.islink(path)
                out.append(_bad(path, "unreadable", "broken symbolic link" if broken else f"cannot stat: {err}"))
                continue
            if not stat.S_ISREG(mode):
                kind = _KINDS.get(stat.S_IFMT(mode), f"file type {stat.S_IFMT(mode):o}")
                out.append(_bad(path, "not_a_regular_file", f"{kind}, not a regular file; skipped without opening"))
            elif not (text_sidecar and os.path.splitext(name)[1].lower() in TEXT_SUFFIXES):
                out.append(path)
    return out


def plan(src, partition_size: int, claimed: set[str] | None = None) -> list[dict]:
    """Partitions of ``partition_size`` entries; an entry is ``[path, label, label_name, text_path]``
    or a bad-input dict (quarantined by :func:`read` without touching the file). Files whose real path is
    in ``claimed`` (listed by an earlier folder source: nested or linked roots) are left out with a
    warning, and the others are added to it, so no file is ingested twice."""
    root = src.path
    listing = _listing(root, src.text_sidecar)
    if claimed is not None:
        real = {k: os.path.realpath(k) for k in map(_key, listing)}
        repeated = [e for e in listing if real[_key(e)] in claimed]
        if repeated:
            log.warning("ingest: %d file(s) under %s are already listed by an earlier folder source; "
                        "ingesting each once", len(repeated), root)
            listing = [e for e in listing if real[_key(e)] not in claimed]
        claimed.update(real[_key(e)] for e in listing)
    names = {e for e in listing if isinstance(e, str)}
    rels = {f: os.path.relpath(f, root) for f in names}
    classes = sorted({r.split(os.sep)[0] for r in rels.values() if os.sep in r}) if src.labels == "subfolders" else []
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    for e in listing:
        if isinstance(e, dict):
            entries.append(e)
            continue
        r = rels[e]
        name = r.split(os.sep)[0] if os.sep in r and classes else None
        side = os.path.splitext(e)[0] + ".txt"
        text = side if src.text_sidecar and os.path.isfile(side) and side != e else None
        entries.append([e, index.get(name) if name else None, name, text])
    return [{"files": c, "text_sidecar": src.text_sidecar} for c in chunks(entries, partition_size)]


def read(payload: dict, opts: ReadOptions) -> Iterator:
    for entry in payload["files"]:
        if isinstance(entry, dict):
            yield Bad(SampleError(entry["reason"], display_path(entry["detail"])), display_path(entry["path"]))
            continue
        path, label, label_name, side = entry
        uri, label_name = display_path(path), None if label_name is None else display_path(label_name)
        try:
            digest, data = file_sha256(path)
        except FileNotFoundError:
            raise stamp.missing_input(path) from None
        except OSError as err:
            yield Bad(SampleError("unreadable", f"cannot read file: {err}"), uri)
            continue
        text = None
        if side:
            try:
                with open(side, encoding="utf-8", errors="replace") as f:
                    text = f.read().strip()
            except FileNotFoundError:
                raise stamp.missing_input(side) from None
            except OSError as err:
                yield Bad(SampleError("unreadable", f"cannot read text sidecar {side}: {err}"), uri)
                continue
        if not data:
            yield Bad(SampleError("empty_file", "file has 0 bytes"), uri)
            continue
        try:  # every frame decoded before any is yielded: a file is kept whole or quarantined whole
            frames = list(imaging.decode_frames(data, opts.max_pixels))
        except SampleError as err:
            yield Bad(err, uri)
            continue
        for i, arr in enumerate(frames):
            yield sample_row(arr, uri, i, label=label, label_name=label_name, text=text, source_hash=digest)
