"""Readers for ingest sources. Each module has ``plan(src, opts) -> [payload]`` and
``read(payload, opts) -> iterator of Item`` where an item is a sample row or a
:class:`Bad` record (the ingest stage applies the ``on_error`` policy)."""

from __future__ import annotations

import hashlib
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
    group_salt: str


def salted_group(salt: str, *identity: Any) -> str:
    """A group id that identifies a patient / volume without revealing its identifiers."""
    blob = "\x1f".join(str(x) for x in identity)
    return hashlib.blake2b(f"{salt}\x1e{blob}".encode(), digest_size=8).hexdigest()


def file_sha256(path: str) -> tuple[str, bytes]:
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha256(data).hexdigest(), data


def chunks(items: list, size: int) -> list[list]:
    return [items[i: i + size] for i in range(0, len(items), size)]
