"""``dedup.phash`` step 1, hash: decode each canonical image once and compute its 64-bit pHash and
dHash (bit-identical to ``imagehash``, :mod:`curate.ops.phash`), a 16x16 thumbnail, and the same
for every crop view (:func:`.views.crop_view_hashes`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate import imaging
from curate.errors import SampleError
from curate.ops import phash
from curate.stage import StageContext
from curate.stages.dedup.phash.spectral import DIM as SPECTRAL_DIM
from curate.stages.dedup.phash.spectral import descriptors
from curate.stages.dedup.phash.views import crop_view_hashes

HASH_BATCH = 4096


def hash_rows(table: pa.Table, views: list[float], ctx: StageContext, spectral: bool = False):
    """(phash, dhash, thumbnails (n, 256), ok, view phash, view dhash, view thumbnails, view ok,
    spectral descriptors (n, DIM) float16 or None) of a partition's rows; an undecodable image gets
    ``ok = False`` (quarantined by the reduce step)."""
    n = table.num_rows
    ph = np.zeros(n, np.uint64)
    dh = np.zeros(n, np.uint64)
    th = np.zeros((n, 256), np.uint8)
    ok = np.zeros(n, bool)
    nv = len(views)
    vph = np.zeros((n, nv), np.uint64)
    vdh = np.zeros((n, nv), np.uint64)
    vth = np.zeros((n, nv, 256), np.uint8)
    vok = np.zeros((n, nv), bool)
    spec = np.zeros((n, SPECTRAL_DIM), np.float16) if spectral else None
    images = table.column("image")
    for lo in range(0, n, HASH_BATCH):
        arrays, rows = [], []
        for i in range(lo, min(n, lo + HASH_BATCH)):
            try:
                arrays.append(imaging.decode_png(images[i].as_py()))
                rows.append(i)
            except Exception as err:  # noqa: BLE001 - one bad image must not stop the stage
                if ctx.on_error == "raise":
                    raise SampleError("undecodable", f"{table['source_uri'][i].as_py()}"
                                      f"[{table['source_index'][i].as_py()}]: {err}") from None
                ctx.count("undecodable")  # quarantined by reduce (null hash), so apply sees it
        if rows:
            ph[rows], dh[rows], thumbs = phash.hash_arrays(arrays, thumbnails=True)
            th[rows] = thumbs.reshape(len(rows), 256)
            ok[rows] = True
            a, b, c, d = crop_view_hashes(arrays, views)
            vph[rows], vdh[rows], vth[rows], vok[rows] = a, b, c, d
            if spec is not None:
                spec[rows] = descriptors(arrays)
    return ph, dh, th, ok, vph, vdh, vth, vok, spec
