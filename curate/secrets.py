"""The run's salt for ``group_id`` and redacted paths, and where privacy facts are recorded.

A public salt lets anyone holding a patient identifier confirm membership by
recomputing ``group_id``. So the salt is, in this order:

1. ``group_secret:`` of the ingest stage (a project secret: ids stable across runs),
2. the environment variable ``CURATE_SECRET`` (same, kept out of the YAML),
3. otherwise a random 256-bit salt made on the first run and kept in
   ``RUN_DIR/secrets/salt`` (mode 0600): stable for reruns of that directory,
   different for every other run directory.

A project secret is stretched with scrypt (n=2^14, r=8, p=1) so that a weak
passphrase is slow to guess from a ``group_id``. The salt never goes into a
table, a shard, the card, ``summary.json`` or ``pipeline.json``;
``RUN_DIR/secrets/`` also holds the hash -> path maps of redacted sources.
"""

from __future__ import annotations

import hashlib
import os
import secrets as _random

from curate import io

SALT_FILE = "salt"
ENV = "CURATE_SECRET"
PER_RUN, PROJECT = "per-run random", "project secret"


def secrets_dir(run_dir: str) -> str:
    return io.join(run_dir, "secrets")


def _write_private(path: str, data: bytes) -> None:
    fs, p = io.fs_and_path(path)
    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
    if p.startswith("/") and os.path.isdir(os.path.dirname(p)):  # local: create 0600 exclusively
        os.chmod(os.path.dirname(p), 0o700)
        tmp = f"{p}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    else:
        io._atomic_write(path, lambda f: f.write(data))


def write_private_json(obj, path: str) -> None:
    import json

    _write_private(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def resolve_salt(run_dir: str, secret: str | None = None) -> tuple[str, str]:
    """``(salt, mode)``: the project secret (stretched) if given or in ``CURATE_SECRET``, else the run's own."""
    secret = secret or os.environ.get(ENV) or None
    if secret:
        key = hashlib.scrypt(secret.encode(), salt=b"curate-group-secret/1", n=2 ** 14, r=8, p=1, dklen=32)
        return key.hex(), PROJECT
    path = io.join(secrets_dir(run_dir), SALT_FILE)
    if io.exists(path):
        fs, p = io.fs_and_path(path)
        with fs.open(p, "rb") as f:
            salt = f.read().decode().strip()
        if len(salt) >= 32:
            return salt, PER_RUN
    salt = _random.token_hex(32)
    _write_private(path, salt.encode())
    return salt, PER_RUN


def salt_id(salt: str) -> str:
    """A short public tag of a salt (enters partition ids so a new salt recomputes); reveals nothing usable."""
    return hashlib.blake2b(f"curate-salt-id\x1e{salt}".encode(), digest_size=6).hexdigest()


def source_paths(run_dir: str, uris: list[str | None]) -> list[str | None]:
    """The file paths behind ``source_uri`` values: redacted ones (``redacted:<hash>``) looked up in the
    run's private path maps (``RUN_DIR/secrets/<stage>-paths/``), others unchanged. For stages that must
    reread a source file's header (quality's BurnedInAnnotation, decontaminate's patient route)."""
    if not any(u and u.startswith("redacted:") for u in uris):
        return list(uris)
    import json

    fs, root = io.fs_and_path(secrets_dir(run_dir))
    mapping: dict[str, str] = {}
    for f in sorted(fs.glob(f"{root}/*-paths/*.json")):
        with fs.open(f, "rb") as fh:
            mapping.update(json.loads(fh.read()))
    return [mapping.get(u, u) if u else u for u in uris]
