"""Build rows of the ``samples`` table from decoded pixels (used by ingest, inflate and tests)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from curate import imaging, schemas


def sample_row(arr: np.ndarray, source_uri: str, source_index: int = 0, *, label: int | None = None,
               label_name: str | None = None, group_id: str | None = None, slice_index: int | None = None,
               text: str | None = None, source_hash: str | None = None, is_synthetic: bool = False,
               generator: str | None = None, seed: int | None = None, max_pixels: int | None = None) -> dict[str, Any]:
    """One canonical sample; raises :class:`curate.errors.SampleError` for unusable pixels."""
    pix = imaging.canonical(arr, max_pixels)
    ph = imaging.pixel_hash(pix)
    return {
        "sample_id": imaging.sample_id(ph, source_uri, source_index),
        "pixel_hash": ph,
        "source_hash": source_hash,
        "source_uri": source_uri,
        "source_index": int(source_index),
        "group_id": group_id,
        "slice_index": None if slice_index is None else int(slice_index),
        "label": None if label is None else int(label),
        "label_name": label_name,
        "image": imaging.encode_png(pix),
        "height": int(pix.shape[0]),
        "width": int(pix.shape[1]),
        "channels": 1 if pix.ndim == 2 else 3,
        "text": text,
        "is_synthetic": bool(is_synthetic),
        "generator": generator,
        "seed": seed,
    }


def samples_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schemas.SAMPLES)


def samples_from_arrays(arrays: Iterable[np.ndarray], source_uri: str = "memory://test", **columns: Any) -> pa.Table:
    """A samples table from arrays; keyword columns (label=[...], group_id=[...], text=[...]) per row."""
    rows = []
    for i, arr in enumerate(arrays):
        extra = {k: (v[i] if isinstance(v, (list, tuple, np.ndarray)) else v) for k, v in columns.items()}
        rows.append(sample_row(arr, source_uri, i, **extra))
    return samples_table(rows)
