"""Reading ``index.json`` (written last by the ``shard`` stage) and verifying shard checksums.

Layout (paths are relative to the index's folder, so the folder can be copied)::

    {"format": "curate.shards", "version": 1, "num_samples": N,
     "shards": [{"path": "shard-00000.parquet", "rows": r, "bytes": b, "sha256": "...",
                 "row_groups": [rows, ...]}, ...],
     "schema": [{"name": "image", "type": "binary"}, ...],
     "metadata": {"seed": 0, "uniform_weights": true, "adainf": {...} | null,
                  "augmentation": {...} | null, ...}}
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from curate.errors import CurateError
from curate.schemas import SHARD_FORMAT as FORMAT, SHARD_INDEX_NAME as INDEX_NAME  # noqa: F401 - re-exported


class ShardIntegrityError(CurateError):
    """A shard's bytes do not match the sha256 recorded in index.json."""


@dataclass(frozen=True)
class ShardInfo:
    path: str  # absolute
    rows: int
    bytes: int
    sha256: str
    row_groups: tuple[int, ...]


@dataclass
class ShardIndex:
    path: str
    shards: list[ShardInfo]
    schema: list[dict[str, str]]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def columns(self) -> list[str]:
        return [c["name"] for c in self.schema]


def resolve_index(path: str | os.PathLike) -> str:
    """``path`` may be index.json itself, its folder, a shard stage folder or a run dir."""
    p = os.fspath(path)
    if os.path.isfile(p):
        return p
    if os.path.isdir(p):
        for cand in (os.path.join(p, INDEX_NAME), os.path.join(p, "shards", INDEX_NAME)):
            if os.path.isfile(cand):
                return cand
        found = sorted(
            os.path.join(p, d, "shards", INDEX_NAME) for d in os.listdir(p)
            if os.path.isfile(os.path.join(p, d, "shards", INDEX_NAME))
        )
        if found:
            return found[-1]
    raise CurateError(f"no shard index at '{p}': pass the index.json written by the `shard` stage "
                      f"(RUN_DIR/NN_shard/shards/index.json) or a run dir that has one; run `curate shard RUN_DIR` first")


def read_index(path: str | os.PathLike) -> ShardIndex:
    p = resolve_index(path)
    try:
        with open(p) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise CurateError(f"{p}: cannot read shard index: {err}; rerun `curate shard` to rewrite it") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "shards" not in data:
        raise CurateError(f"{p}: not a curate shard index (expected format '{FORMAT}'); rerun `curate shard`")
    base = os.path.dirname(os.path.abspath(p))
    shards = []
    for i, s in enumerate(data["shards"]):
        try:
            shards.append(ShardInfo(os.path.join(base, s["path"]), int(s["rows"]), int(s["bytes"]), str(s["sha256"]),
                                    tuple(int(r) for r in s.get("row_groups") or [s["rows"]])))
        except (KeyError, TypeError, ValueError) as err:
            raise CurateError(f"{p}: shards[{i}] is malformed ({err}); rerun `curate shard`") from None
    return ShardIndex(p, shards, list(data.get("schema", [])), dict(data.get("metadata", {})))


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# (path, device, inode, size, mtime_ns, sha256 in the index) of files hashed in this process: a file
# replaced or rewritten since (another valid shard copied over it) has another key and is hashed again
_VERIFIED: set[tuple] = set()


def verify_shard(shard: ShardInfo, index_path: str = "") -> None:
    """Check size and sha256 once per process and file version; raise :class:`ShardIntegrityError`."""
    try:
        st = os.stat(shard.path)
    except OSError:
        st = None
    if st is None or not os.path.isfile(shard.path):
        raise ShardIntegrityError(f"shard '{shard.path}' listed in {index_path or 'index.json'} is missing; "
                                  f"copy the whole shards folder or rerun `curate shard`")
    key = (shard.path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, shard.sha256)
    if key in _VERIFIED:
        return
    size = st.st_size
    digest = sha256_file(shard.path)
    if size != shard.bytes or digest != shard.sha256:
        raise ShardIntegrityError(
            f"shard '{shard.path}' is corrupt or was modified: sha256 {digest[:16]}... ({size} bytes) but "
            f"{index_path or 'index.json'} records {shard.sha256[:16]}... ({shard.bytes} bytes); re-copy the file "
            f"or rerun `curate shard` (pass verify=False to skip this check at your own risk)")
    _VERIFIED.add(key)
