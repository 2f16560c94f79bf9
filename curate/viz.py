"""Small plotting helpers shared by `curate inspect` and the data card (matplotlib, Agg)."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from curate import imaging  # noqa: E402


def figure(width: float = 8.0, height: float = 4.5):
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return fig, ax


def save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def image_grid(rows: Sequence[Sequence[bytes | None]], path: str, row_titles: Sequence[str] | None = None,
               col_titles: Sequence[Sequence[str]] | None = None, title: str = "", cell: float = 1.4) -> str:
    """Save a grid of canonical PNG images: one row per group, ``None`` leaves a cell empty.

    ``col_titles[r][c]`` labels each cell (e.g. "kept", "removed 0.97").
    """
    nrows = max(1, len(rows))
    ncols = max(1, max((len(r) for r in rows), default=1))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols + (1.6 if row_titles else 0.2), cell * nrows + 0.6),
                             dpi=110, squeeze=False)
    for r in range(nrows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            img = rows[r][c] if r < len(rows) and c < len(rows[r]) else None
            if img is None:
                continue
            arr = imaging.decode_png(img)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)
            if col_titles and r < len(col_titles) and c < len(col_titles[r]):
                ax.set_title(col_titles[r][c], fontsize=7)
        if row_titles and r < len(row_titles):
            axes[r][0].set_ylabel(row_titles[r], fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def bar(labels: Sequence[str], values: Sequence[float], path: str, title: str, xlabel: str = "",
        colors: Sequence[str] | None = None, annotate: bool = True) -> str:
    fig, ax = figure(8, max(2.2, 0.45 * len(labels) + 1.2))
    y = np.arange(len(labels))
    bars = ax.barh(y, values, color=colors or "#4C72B0")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if annotate:
        for b, v in zip(bars, values):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:,.0f}" if float(v).is_integer() else f" {v:.3g}",
                    va="center", fontsize=8)
    ax.margins(x=0.15)
    return save(fig, path)
