"""The ``quality`` stage: scores and flags per sample, removals as filter decisions.

Definitions and default thresholds are cleanvision 0.3.7's (see :mod:`.image`, :mod:`.geometry`),
plus the medical checks of :mod:`.medical`. Every check flags ``score < threshold``; with
``action: remove`` a flagged sample also gets a decision row (method ``quality:<check>``, no
representative) that ``dedup.apply`` turns into a removal. Images are decoded once per partition
and scored as stacks of equal-shape images. odd_size needs the whole run's size distribution, so
this is a GlobalStage: ``map`` scores each partition (cached, resumable), ``reduce`` computes the
size fences and finishes the small score tables.

YAML::

    - stage: quality
      dark: {action: remove}            # threshold 0.32 on the 99th-percentile brightness
      blurry: {threshold: 0.25}
      burned_in_annotation: {action: remove}
      odd_size_iqr_factor: 3.0
      blank_tolerance: 10
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate import imaging, schemas, secrets
from curate.config import StageParams
from curate.stage import GlobalStage, StageContext
from curate.stages import filters
from curate.stages.dedup._decisions import concat_mapped
from curate.stages.quality import geometry, image, medical

CHECKS = schemas.QUALITY_CHECKS
DEFAULT_THRESHOLDS = {"dark": 0.32, "light": 0.05, "blurry": 0.29, "low_information": 0.3,
                      "odd_aspect_ratio": 0.35, "odd_size": None, "grayscale": 0.5, "near_blank": 0.01,
                      "padding_only": 0.002, "burned_in_annotation": 0.5}
WHAT = {"dark": "99th-percentile brightness", "light": "1 - 5th-percentile brightness",
        "blurry": "edge strength", "low_information": "0.1 x entropy", "odd_aspect_ratio": "min(w/h, h/w)",
        "odd_size": "distance to the size fences' centre (1 - normalised)", "grayscale": "colour (0 = gray)",
        "near_blank": "content share", "padding_only": "value range / 255",
        "burned_in_annotation": "0 = DICOM BurnedInAnnotation YES"}


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    action: Literal["flag", "remove"] = Field("flag", description="flag only, or also remove flagged samples")
    threshold: float | None = Field(None, description="flag when score < threshold; default: cleanvision's")


def _check() -> Check:
    return Check()


class QualityParams(StageParams):
    dark: Check = Field(default_factory=_check)
    light: Check = Field(default_factory=_check)
    blurry: Check = Field(default_factory=_check)
    low_information: Check = Field(default_factory=_check)
    odd_aspect_ratio: Check = Field(default_factory=_check)
    odd_size: Check = Field(default_factory=_check)
    grayscale: Check = Field(default_factory=_check)
    near_blank: Check = Field(default_factory=_check)
    padding_only: Check = Field(default_factory=_check)
    burned_in_annotation: Check = Field(default_factory=_check)
    odd_size_iqr_factor: float = Field(3.0, gt=0, description="odd_size fences: q1 - f IQR, q3 + f IQR")
    blank_tolerance: int = Field(10, ge=0, le=255, description="near_blank: gray levels around the modal value")

    def threshold(self, check: str) -> float | None:
        c: Check = getattr(self, check)
        return DEFAULT_THRESHOLDS[check] if c.threshold is None else c.threshold


MAP_SCHEMA = pa.schema(list(schemas.QUALITY) + [pa.field("size", pa.float64())])


def score_images(images: list[bytes], blank_tolerance: int = 10) -> dict[str, np.ndarray]:
    """Raw scores of every check but odd_size / burned_in for PNG-encoded images (NaN if undecodable),
    plus the decoded ``height`` / ``width`` (0 if undecodable)."""
    n = len(images)
    names = ("dark", "light", "blurry", "low_information", "grayscale", "near_blank", "padding_only")
    out = {k: np.full(n, np.nan) for k in names}
    arrays: list[np.ndarray | None] = []
    for b in images:
        try:
            arrays.append(imaging.decode_png(b))
        except Exception:  # noqa: BLE001 - scored NaN and counted, never dropped
            arrays.append(None)
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        if a is not None:
            groups.setdefault(a.shape, []).append(i)
    out["height"] = np.array([0 if a is None else a.shape[0] for a in arrays], np.int64)
    out["width"] = np.array([0 if a is None else a.shape[1] for a in arrays], np.int64)
    for rows in groups.values():
        stack = np.stack([arrays[i] for i in rows])
        idx = np.array(rows)
        lhist = image.histograms(image.luma(stack))
        if stack.ndim == 3:  # gray: percentiles and entropy straight from the histogram
            p5, p99 = image.percentiles_from_hist(lhist, (5, 99))
            chist = lhist
        else:
            p5, p99 = image.brightness_percentiles(stack)
            chist = image.histograms(stack)
        out["dark"][idx], out["light"][idx] = p99, 1 - p5
        out["low_information"][idx] = np.minimum(0.1 * image.entropy(chist), 1.0)
        out["blurry"][idx] = image.blurry_score(*image.blurriness(stack, lhist))
        out["grayscale"][idx] = np.where(image.is_grayscale(stack), 0.0, 1.0)
        hist = lhist
        out["near_blank"][idx] = medical.near_blank_score(hist, blank_tolerance)
        out["padding_only"][idx] = medical.padding_score(hist)
    return out


class Quality(GlobalStage):
    key = "quality"
    version = "1"
    Params = QualityParams
    inputs = ("samples",)
    outputs = ("quality", "decisions")
    map_schema = MAP_SCHEMA

    def map(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        p: QualityParams = self.params
        sc = score_images(table.column("image").to_pylist(), p.blank_tolerance)
        h, w = table.column("height").to_numpy(), table.column("width").to_numpy()
        sc["odd_aspect_ratio"] = geometry.aspect_ratio(h, w)
        bia = medical.burned_in(secrets.source_paths(ctx.run_dir, table.column("source_uri").to_pylist())) \
            if p.burned_in_annotation.enabled \
            else np.full(table.num_rows, np.nan)
        sc["burned_in_annotation"] = 1.0 - bia
        ctx.count("undecodable", int(np.isnan(sc["dark"]).sum()))
        cols = {"sample_id": table.column("sample_id")}
        for c in CHECKS:
            s = sc[c] if c in sc else np.full(table.num_rows, np.nan)
            cols[c] = pa.nulls(table.num_rows, pa.bool_())
            cols[f"{c}_score"] = pa.array(s, pa.float64(), mask=np.isnan(s))
        cols["size"] = pa.array(geometry.size(h, w), pa.float64())
        return pa.table(cols, schema=MAP_SCHEMA)

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, dict[str, pa.Table]]:
        p: QualityParams = self.params
        table, part = concat_mapped(ctx, mapped, MAP_SCHEMA)
        n = table.num_rows
        sizes = table.column("size").to_numpy(zero_copy_only=False)
        lo, hi = geometry.size_fences(sizes, p.odd_size_iqr_factor)
        size_score, size_threshold = geometry.odd_size_score(sizes, lo, hi)
        cols = {"sample_id": table.column("sample_id")}
        removals: list[tuple[int, str, float, str]] = []
        for c in CHECKS:
            s = size_score if c == "odd_size" else \
                np.asarray(table.column(f"{c}_score").to_numpy(zero_copy_only=False), np.float64)
            check: Check = getattr(p, c)
            t = size_threshold if c == "odd_size" and check.threshold is None else p.threshold(c)
            valid = ~np.isnan(s) & check.enabled
            flag = valid & (s < t)
            cols[c] = pa.array(flag, pa.bool_(), mask=~valid)
            cols[f"{c}_score"] = pa.array(np.where(check.enabled, s, np.nan), pa.float64(), mask=~valid)
            ctx.count(f"flagged_{c}", int(flag.sum()))
            if check.action == "remove":
                ctx.count(f"removed_{c}", int(flag.sum()))
                removals += [(int(i), c, float(s[i]), f"quality: {c} ({WHAT[c]} {s[i]:.4g} < threshold {t:.4g})")
                             for i in np.flatnonzero(flag)]
        out_q = pa.table(cols, schema=schemas.QUALITY)
        ids = table.column("sample_id").to_pylist()
        removals.sort()  # row order, then check order: deterministic
        dec_part = np.array([part[r[0]] for r in removals], np.int64)
        dec = filters.decisions([ids[r[0]] for r in removals], [f"quality:{r[1]}" for r in removals],
                                [r[2] for r in removals], [r[3] for r in removals],
                                [f"odd_size fences [{lo:.4g}, {hi:.4g}]" if r[1] == "odd_size" else None
                                 for r in removals])
        return {pid: {"quality": out_q.filter(pa.array(part == k)), "decisions": dec.filter(pa.array(dec_part == k))}
                for k, pid in enumerate(ctx.partitions)} if n else \
            {pid: {"quality": schemas.QUALITY.empty_table(), "decisions": schemas.DECISIONS.empty_table()}
             for pid in ctx.partitions}
