"""Readers for ingest sources. Each module has ``plan(src, opts) -> [payload]`` and
``read(payload, opts) -> iterator of Item`` where an item is a sample row or a
:class:`Bad` record (the ingest stage applies the ``on_error`` policy)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from curate.errors import SampleError


@dataclass
class Bad:
    error: SampleError
    source_uri: str
    source_index: int | None = None


@dataclass(frozen=True)
class ReadOptions:
    max_pixels: int
    group_salt: str  # the run's resolved salt (curate.secrets), never the public default
    max_voxels: int | None = None  # a NIfTI volume / a multi-frame DICOM file, in pixels over all frames


def display_path(path: str) -> str:
    """``path`` as a storable string: a name that is not valid UTF-8 (Python keeps its bytes as surrogates)
    gets them written as ``\\xNN`` escapes, so tables, hashes and messages never fail on it. The file is
    still opened by its real name."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def salted_group(salt: str, *identity: Any) -> str:
    """A group id that identifies a patient / volume without revealing its identifiers."""
    blob = "\x1f".join(str(x) for x in identity)
    return hashlib.blake2b(f"{salt}\x1e{blob}".encode(), digest_size=8).hexdigest()


def redact_uri(salt: str, path: str) -> str:
    """The ``source_uri`` of a redacted path: a keyed BLAKE2 hash, ``redacted:<32 hex>``."""
    key = hashlib.blake2b(f"curate-path\x1e{salt}".encode(), digest_size=32).digest()
    name = str(path).encode("utf-8", "surrogateescape")  # any file name, UTF-8 or not
    return "redacted:" + hashlib.blake2b(name, key=key, digest_size=16).hexdigest()


def scrub(text: str, path: str, replacement: str) -> str:
    """``text`` with ``path`` and each of its file / folder names (3+ characters) replaced."""
    parts = [path, os.path.abspath(path)] + [c for c in str(path).replace("\\", "/").split("/") if len(c) >= 3]
    for s in sorted(set(parts), key=len, reverse=True):
        text = text.replace(s, replacement)
    return text


def file_sha256(path: str) -> tuple[str, bytes]:
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha256(data).hexdigest(), data


def chunks(items: list, size: int) -> list[list]:
    return [items[i: i + size] for i in range(0, len(items), size)]
