"""Decoded images for the strict pair check of the dedup stages, read where the pairs are verified.

Hash and embedding stages see thumbnails or vectors; the geometric verifier
(:func:`curate.ops.geometry.verify_pairs`) needs the images. ``verify_row_pairs`` fans the
candidate pairs out as tasks (``ctx.map``), each reading only the images of its own pairs from the
samples partitions, so neither the driver nor one task holds the data set.
"""

from __future__ import annotations

import numpy as np

from curate import io
from curate.stage import StageContext

PAIRS_PER_TASK = 2048


def sample_files(ctx: StageContext, pids) -> list[str]:
    """The samples file of every partition (the latest producer that wrote it; "" where none did)."""
    out = []
    for pid in pids:
        path = next((ctx._path(up, "samples", pid) for up in reversed(ctx.producers("samples"))
                     if io.exists(ctx._path(up, "samples", pid))), None)
        out.append(path or "")
    return out


def _verify_job(job: tuple) -> tuple[np.ndarray, list[str]]:
    """One task: decode the images of its pairs (one read per partition file) and verify each pair."""
    from curate.ops.geometry import verify_pairs
    from curate.ops.semdedup import read_images

    paths, li, lj = job
    rows = np.unique(np.concatenate([li, lj]), axis=0)
    keys = {tuple(r): k for k, r in enumerate(rows.tolist())}
    images = read_images(paths, np.column_stack([np.arange(len(rows)), rows]))
    ia = np.array([keys[tuple(r)] for r in li.tolist()], np.int64)
    ib = np.array([keys[tuple(r)] for r in lj.tolist()], np.int64)
    ok, _, detail = verify_pairs([images[k] for k in range(len(rows))], ia, ib)
    return ok, detail


def verify_row_pairs(ctx: StageContext, paths: list[str], loc: np.ndarray, i: np.ndarray,
                     j: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Geometric verification of row pairs ``(i[k], j[k])``; ``loc[row] = (partition index, row in it)``.

    Returns ``ok`` per pair and its detail string; pairs are cut into tasks of ``PAIRS_PER_TASK``
    in the given order, so the result does not depend on the worker count.
    """
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    if i.size == 0:
        return np.zeros(0, bool), []
    jobs = [(paths, loc[i[a:a + PAIRS_PER_TASK]], loc[j[a:a + PAIRS_PER_TASK]])
            for a in range(0, i.size, PAIRS_PER_TASK)]
    res = ctx.map(_verify_job, jobs)
    return np.concatenate([r[0] for r in res]), [d for r in res for d in r[1]]
