"""A montage PNG of mined pairs: each row an anchor, its positives (green), then its hard negatives (red)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw

from curate import imaging, io
from curate.errors import ConfigError


def _images(ctx, ids: list[str]) -> dict[str, np.ndarray]:
    """Decoded images of ``ids`` from every samples table of the run (removed copies included)."""
    want = pa.array(sorted(set(ids)), pa.string())
    out: dict[str, np.ndarray] = {}
    for up in ctx.producers("samples"):
        sub = None if up.outputs[0] == "samples" else "samples"
        for pid in io.list_partitions(ctx.run_dir, up.dirname, sub):
            t = io.read_parquet(io.part_path(ctx.run_dir, up.dirname, pid, sub), columns=["sample_id", "image"])
            t = t.filter(pc.is_in(t.column("sample_id"), value_set=want))
            for sid, png in zip(t.column("sample_id").to_pylist(), t.column("image").to_pylist()):
                out.setdefault(sid, imaging.decode_png(png))
        if len(out) == len(want):
            break
    return out


def _tile(arr: np.ndarray | None, size: int, color: tuple[int, int, int], text: str) -> Image.Image:
    tile = Image.new("RGB", (size, size + 12), (255, 255, 255))
    if arr is not None:
        img = Image.fromarray(arr).convert("RGB").resize((size - 4, size - 4), Image.NEAREST)
        tile.paste(img, (2, 2))
    d = ImageDraw.Draw(tile)
    d.rectangle([0, 0, size - 1, size - 1], outline=color, width=2)
    d.text((2, size), text[:12], fill=(0, 0, 0))
    return tile


def pairs_montage(run_dir: str, out_png: str, anchors: int = 8, positives: int = 3, negatives: int = 5,
                  tile: int = 72, seed: int = 0) -> dict[str, int]:
    """Write the montage; returns counts. Anchors with negatives are picked at random (seeded)."""
    from curate.train.data import run_context

    ctx = run_context(run_dir)
    if not ctx.has("pairs"):
        raise ConfigError(f"run '{run_dir}' has no pairs table; run `curate mine {run_dir}` first")
    pairs = ctx.read_all("pairs")
    if pairs.num_rows == 0:
        raise ConfigError(f"run '{run_dir}': the pairs table is empty (no anchors were mined)")
    neg = pairs.filter(pc.is_valid(pairs.column("negative_ids")))
    pos = pairs.filter(pc.is_valid(pairs.column("positive_kind")))
    cand = sorted(set((neg if neg.num_rows else pos).column("anchor_id").to_pylist()))
    rng = np.random.default_rng(seed)
    chosen = [cand[i] for i in sorted(rng.choice(len(cand), min(anchors, len(cand)), replace=False))]
    rows = []
    for a in chosen:
        p = pos.filter(pc.equal(pos.column("anchor_id"), a)).to_pylist()[:positives]
        n = neg.filter(pc.equal(neg.column("anchor_id"), a)).to_pylist()
        n = n[0] if n else {"negative_ids": [], "negative_scores": []}
        rows.append((a, [(r["positive_id"], r["positive_kind"], r["positive_score"]) for r in p],
                     list(zip(n["negative_ids"] or [], n["negative_scores"] or []))[:negatives]))
    ids = [a for a, _, _ in rows] + [x[0] for _, ps, _ in rows for x in ps] + [x[0] for _, _, ns in rows for x in ns]
    imgs = _images(ctx, ids)
    cols = 1 + positives + negatives
    h = tile + 12
    sheet = Image.new("RGB", (cols * tile + 8, len(rows) * h), (255, 255, 255))
    for r, (a, ps, ns) in enumerate(rows):
        sheet.paste(_tile(imgs.get(a), tile, (0, 0, 0), "anchor"), (0, r * h))
        for j, (sid, kind, score) in enumerate(ps):
            label = f"{kind[:6]} {score:.2f}" if score is not None else kind
            sheet.paste(_tile(imgs.get(sid), tile, (0, 160, 0), label), ((1 + j) * tile, r * h))
        for j, (sid, score) in enumerate(ns):
            sheet.paste(_tile(imgs.get(sid), tile, (200, 0, 0), f"neg {score:.2f}"), ((1 + positives + j) * tile + 8, r * h))
    io.fs_and_path(out_png)
    sheet.save(out_png)
    return {"anchors": len(rows), "positives": sum(len(p) for _, p, _ in rows), "negatives": sum(len(n) for _, _, n in rows)}
