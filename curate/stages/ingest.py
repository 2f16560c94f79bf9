"""ingest: read raw images into the canonical ``samples`` table.

Sources (``type:``): ``folder`` (PNG/JPEG/TIFF/BMP, labels from sub-folders,
``<stem>.txt`` captions), ``npz`` (MedMNIST layout), ``idx`` (Fashion-MNIST
layout), ``parquet`` (image-bytes column), ``dicom`` (series, windowing),
``nifti`` (volumes sliced along an axis).

Every sample is decoded to canonical 8-bit gray/RGB PNG; ``pixel_hash`` is the
content hash of those pixels, ``sample_id`` adds the source position so that it
is unique. Partitions come from the data (source path + file list or row
range + a stamp of the files' size and mtime, or content), so the worker
count never changes them and a file rewritten in place reruns its partition.
Paths are made absolute when the config is built (on the driver); a worker
that cannot see a planned file fails the stage naming its host and the path.
Bad inputs (truncated files, PNG chunk CRC errors (``crc_mismatch``), non-images,
FIFOs / sockets / devices (``not_a_regular_file``), sub-directories that cannot be
listed (``unreadable_directory``), unreadable DICOM or malformed DICOM values the
file needs (``malformed_dicom_value``), NaN arrays, 0-pixel or over-``max_pixels``
images (from the header, before decoding), unsupported dtypes, labels that are not
class ids) go to quarantine with a reason; a source that cannot be read as declared
(labels that do not match the images, a cut IDX header, a column of the wrong type,
``axis: 3`` on a 4-D NIfTI) is a :class:`ConfigError` (exit 2) naming the file. A
source listed twice, or a folder nested in an earlier one, is planned once (warning).
File names that are not UTF-8 are stored with ``\\xNN`` escapes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Annotated, Literal, Union

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from curate import imaging, io, schemas, secrets
from curate.config import LocalPath, StageParams
from curate.errors import SampleError
from curate.sources import Bad, ReadOptions, arrays, display_path, folder, medical, parquet, redact_uri, scrub, stamp
from curate.stage import Partition, SourceStage, StageContext

log = logging.getLogger("curate.ingest")


def source_identity(src) -> tuple:
    """What a source reads, paths resolved (symbolic links, ``..``): two sources with one identity
    would ingest the same rows twice (duplicate sample ids, removals naming themselves)."""
    def real(path: str | None) -> str | None:
        return None if path is None else os.path.realpath(path)

    if src.type == "npz":
        return ("npz", real(src.path), tuple(src.splits or ()))
    if src.type == "idx":
        return ("idx", real(src.images))
    if src.type == "parquet":
        return ("parquet", real(src.path), src.image_column)
    return (src.type, real(src.path))


def unique_sources(sources: list) -> list[int]:
    """Indices of the sources to plan: the first of each :func:`source_identity`; every repeat is
    dropped with a warning naming both positions."""
    first: dict[tuple, int] = {}
    keep = []
    for i, src in enumerate(sources):
        key = source_identity(src)
        if key in first:
            log.warning("ingest: sources[%d] repeats sources[%d] (%s %s); ingesting it once", i, first[key],
                        src.type, key[1])
            continue
        first[key] = i
        keep.append(i)
    return keep


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    redact_paths: bool | None = Field(None, description="store a salted hash of each file path as source_uri "
                                      "(map in RUN_DIR/secrets/); default: on for dicom, off otherwise")

    @property
    def redacted(self) -> bool:
        return self.type == "dicom" if self.redact_paths is None else self.redact_paths

    @staticmethod
    def _must_exist(v: str | None) -> str | None:
        if v is not None and not os.path.exists(v):
            raise ValueError(f"path '{v}' does not exist; fix the path (relative paths are resolved from "
                             f"the directory you run curate in: {os.getcwd()})")
        return v


class FolderSource(_Source):
    type: Literal["folder"]
    path: LocalPath
    labels: Literal["subfolders", "none"] = "subfolders"
    text_sidecar: bool = Field(True, description="read <stem>.txt next to an image as its text")
    _check = field_validator("path")(_Source._must_exist)


class NpzSource(_Source):
    type: Literal["npz"]
    path: LocalPath
    splits: list[str] | None = Field(None, description="e.g. [train, val]; default: every <split>_images array")
    _check = field_validator("path")(_Source._must_exist)


class IdxSource(_Source):
    type: Literal["idx"]
    images: LocalPath
    labels: LocalPath | None = None
    _check = field_validator("images", "labels")(_Source._must_exist)


class ParquetSource(_Source):
    type: Literal["parquet"]
    path: LocalPath
    image_column: str = "image"
    label_column: str | None = None
    text_column: str | None = None
    group_column: str | None = None
    _check = field_validator("path")(_Source._must_exist)


Window = Union[Literal["auto", "minmax", "lung", "mediastinum", "soft_tissue", "bone", "brain", "liver"],
               tuple[float, float]]


class DicomSource(_Source):
    type: Literal["dicom"]
    path: LocalPath
    window: Window = Field("auto", description="CT window preset, [center, width], 'auto' (header) or 'minmax'")
    _check = field_validator("path")(_Source._must_exist)


class NiftiSource(_Source):
    type: Literal["nifti"]
    path: LocalPath
    axis: int = Field(2, ge=0, le=3)
    window: Window = Field("auto", description="preset, [center, width], or 'auto' (0.5-99.5 percentile of the volume)")
    drop_empty: bool = True
    _check = field_validator("path")(_Source._must_exist)


Source = Annotated[Union[FolderSource, NpzSource, IdxSource, ParquetSource, DicomSource, NiftiSource],
                   Field(discriminator="type")]


class IngestParams(StageParams):
    sources: list[Source] = Field(..., min_length=1)
    partition_size: int = Field(2048, ge=1, description="samples (files, rows or slices) per partition")
    max_pixels: int = Field(40_000_000, ge=1, description="larger images are quarantined (reason too_large)")
    max_voxels: int = Field(1 << 30, ge=1, description="NIfTI volumes / multi-frame DICOM files with more "
                            "voxels (4 GiB as float32) are quarantined (too_large), checked on the header")
    group_secret: SecretStr | None = Field(None, description="project secret for group_id / redacted paths "
                                           "(stable across runs); default: env CURATE_SECRET, else a random "
                                           "per-run salt in RUN_DIR/secrets/salt")
    change_detection: Literal["mtime", "content"] = Field(
        "mtime", description="how a file rewritten in place is noticed: size + mtime, or sha256 of its bytes "
                             "(content: reads every input on the driver when the run is planned)")


class Ingest(SourceStage):
    key = "ingest"
    Params = IngestParams
    outputs = ("samples",)

    def _salt(self, ctx: StageContext) -> tuple[str, str]:
        p: IngestParams = self.params
        return secrets.resolve_salt(ctx.run_dir, p.group_secret.get_secret_value() if p.group_secret else None)

    def plan(self, ctx: StageContext) -> list[Partition]:
        p: IngestParams = self.params
        salt, mode = self._salt(ctx)
        salted = [src.redacted or src.type in ("dicom", "nifti") or getattr(src, "group_column", None) is not None
                  for src in p.sources]
        secrets.write_private_json({"salt": mode, "redacted_sources": [i for i, s in enumerate(p.sources) if s.redacted],
                                    "salted_sources": [i for i, x in enumerate(salted) if x]},
                                   io.join(secrets.secrets_dir(ctx.run_dir), f"{ctx.stage}.json"))
        parts, seen, claimed = [], {}, set()
        for si in unique_sources(p.sources):
            src = p.sources[si]
            if src.type == "folder":
                payloads = folder.plan(src, p.partition_size, claimed)
            elif src.type == "npz":
                payloads = arrays.plan_npz(src, p.partition_size)
            elif src.type == "idx":
                payloads = arrays.plan_idx(src, p.partition_size)
            elif src.type == "parquet":
                payloads = parquet.plan(src, p.partition_size)
            elif src.type == "dicom":
                payloads = medical.plan_dicom(src, p.partition_size, salt)
            else:
                payloads = medical.plan_nifti(src, p.partition_size, p.max_pixels, p.max_voxels)
            for payload in payloads:
                payload = {"source": si, **payload}
                # the id covers the files' stamp: a changed input reruns its partition (and downstream);
                # the salt changes what a salted / redacted source writes, so its tag enters the id too
                payload["stamp"] = stamp.stamp(stamp.payload_files(payload), p.change_detection, seen)
                ident = [src.type, payload] + ([secrets.salt_id(salt), src.redacted] if salted[si] else [])
                pid = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
                parts.append(Partition(pid, {**payload, "_salt": salt if salted[si] else ""}))
        return parts

    def read(self, partition: Partition, ctx: StageContext) -> pa.Table:
        p: IngestParams = self.params
        payload = partition.payload
        src = p.sources[payload["source"]]
        # a worker that cannot see a planned input is an infrastructure fault, never a quarantined sample
        stamp.check_visible(stamp.payload_files(payload))
        opts = ReadOptions(max_pixels=p.max_pixels, group_salt=payload.get("_salt", ""), max_voxels=p.max_voxels)
        if src.type == "folder":
            items = folder.read(payload, opts)
        elif src.type in ("npz", "idx"):
            items = arrays.read(payload, opts)
        elif src.type == "parquet":
            items = parquet.read(payload, opts, src)
        elif src.type == "dicom":
            items = medical.read_dicom(payload, opts)
            if payload.get("order") == "instance_number":  # positions unusable: ordered by InstanceNumber
                ctx.count("dicom_ordered_by_instance_number", len(payload["files"]))
        else:
            items = medical.read_nifti(payload, opts)
        if src.redacted:
            items = self._redact(items, opts.group_salt, ctx)
        rows = []
        for item in items:  # names that are not UTF-8 are stored escaped (display_path); ids keep the real bytes
            if isinstance(item, Bad):
                ctx.sample_error(SampleError(item.error.reason, display_path(item.error.detail)),
                                 display_path(item.source_uri), item.source_index)
            else:
                rows.append({**item, "source_uri": display_path(item["source_uri"])})
        ctx.count("samples", len(rows))
        return pa.Table.from_pylist(rows, schema=schemas.SAMPLES)

    @staticmethod
    def _redact(items, salt: str, ctx: StageContext):
        """Replace each path by its keyed hash (source_uri, sample_id, quarantine detail); record the map
        in ``RUN_DIR/secrets/<stage>-paths/part-<pid>.json`` (mode 0600), never in a table."""
        mapping: dict[str, str] = {}
        for item in items:
            path = item.source_uri if isinstance(item, Bad) else item["source_uri"]
            uri = redact_uri(salt, path)
            mapping[uri] = path
            if isinstance(item, Bad):
                err = SampleError(item.error.reason, scrub(item.error.detail, path, uri))
                yield Bad(err, uri, item.source_index)
            else:
                yield {**item, "source_uri": uri,
                       "sample_id": imaging.sample_id(item["pixel_hash"], uri, item["source_index"])}
        secrets.write_private_json(mapping, io.part_path(secrets.secrets_dir(ctx.run_dir), f"{ctx.stage}-paths",
                                                         ctx.partition_id, ext="json"))
        ctx.count("redacted_paths", len(mapping))
