"""Data-card sections of the quality, outliers and decontaminate stages.

Thresholds and actions per check, a gallery of the worst-scoring examples per flagged check,
the most unique samples (outliers), and per evaluation set how many pretraining samples each
decontamination route found. Every string from the data or the config is Markdown-escaped.
"""

from __future__ import annotations

import collections
import os

from curate import viz
from curate.schemas import QUALITY_CHECKS


def _esc(s) -> str:
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>" else c for c in str(s))


def sections(view, asset_dir: str, rel) -> list[str]:
    """Markdown lines (empty when the run has none of the three stages)."""
    from curate.card.build import _images_by_id
    from curate.stages.quality.stage import DEFAULT_THRESHOLDS

    md: list[str] = []
    for d, st in view.stages_of("quality"):
        q = view.stage_table(d, None)
        if q is None:
            continue
        params = st.get("params", {})
        md += [f"## Data quality ({_esc(d)})", "",
               "Definitions and default thresholds of cleanvision 0.3.7; a check flags `score < threshold`. "
               "near_blank, padding_only and burned_in_annotation are curate's medical checks.", "",
               "| check | threshold | action | flagged |", "|---|---|---|---|"]
        worst_rows, worst_titles, row_titles = [], [], []
        flagged_ids: dict[str, list] = {}
        for c in QUALITY_CHECKS:
            cp = params.get(c, {}) or {}
            t = cp.get("threshold")
            t = DEFAULT_THRESHOLDS[c] if t is None else t
            t_s = "0.5 outside the 3 IQR size fences (1.0 if all sizes are equal)" if t is None else f"{t:g}"
            flags = q.column(c).to_pylist()
            scores = q.column(f"{c}_score").to_pylist()
            hit = sorted((s, i) for i, (f, s) in enumerate(zip(flags, scores)) if f)
            md.append(f"| {c} | {t_s} | {cp.get('action', 'flag')}{'' if cp.get('enabled', True) else ' (off)'} "
                      f"| {len(hit):,} |")
            if hit:
                flagged_ids[c] = [(q.column("sample_id")[i].as_py(), s) for s, i in hit[:6]]
        if flagged_ids:
            imgs = _images_by_id(view, {sid for v in flagged_ids.values() for sid, _ in v})
            for c, v in flagged_ids.items():
                worst_rows.append([imgs.get(sid) for sid, _ in v])
                worst_titles.append([f"{s:.3g}" for _, s in v])
                row_titles.append(c)
            path = viz.image_grid(worst_rows, os.path.join(asset_dir, "quality_worst.png"), row_titles, worst_titles,
                                  "Worst examples per flagged check (score)")
            md += ["", f"![worst examples per check]({rel(path)})"]
        md += [""]
    for d, st in view.stages_of("outliers"):
        o = view.stage_table(d, None)
        if o is None or o.num_rows == 0:
            continue
        rows = sorted(zip(o.column("uniqueness").to_pylist(), o.column("sample_id").to_pylist()), reverse=True)[:8]
        n_out = sum(o.column("outlier").to_pylist())
        md += [f"## Outliers ({_esc(d)})", "",
               "Uniqueness = FiftyOne's weighted (0.6 / 0.3 / 0.1) distance to the 3 nearest neighbours in embedding "
               f"space. {n_out:,} of {o.num_rows:,} samples are outliers "
               f"(action: {st.get('params', {}).get('action', 'flag')}).", ""]
        imgs = _images_by_id(view, {sid for _, sid in rows})
        path = viz.image_grid([[imgs.get(sid) for _, sid in rows]], os.path.join(asset_dir, "outliers_top.png"),
                              None, [[f"{u:.3g}" for u, _ in rows]], "Most unique samples (uniqueness)")
        md += [f"![most unique samples]({rel(path)})", ""]
    for d, st in view.stages_of("decontaminate"):
        con = view.stage_table(d, "contamination")
        counters = st.get("counters", {})
        sets = [e["name"] for e in st.get("params", {}).get("eval_sets", [])]
        md += [f"## Decontamination against evaluation sets ({_esc(d)})", "",
               "Pretraining samples matching an evaluation sample, per route (a sample may match by several; it is "
               "removed once). Evaluation sets are read, never written to the run or the shards.", "",
               "| evaluation set | eval samples | exact | phash | embedding | patient | study | removed |",
               "|---|---|---|---|---|---|---|---|"]
        removed = collections.Counter()
        if con is not None:
            first = {}
            for sid, es in zip(con.column("sample_id").to_pylist(), con.column("eval_set").to_pylist()):
                first.setdefault(sid, es)
            removed.update(first.values())
        for es in sets:
            md.append(f"| {_esc(es)} | {counters.get(f'{es}:eval_samples', 0):,} | "
                      + " | ".join(f"{counters.get(f'{es}:{r}', 0):,}" for r in
                                   ("exact", "phash", "embedding", "patient", "study"))
                      + f" | {removed.get(es, 0):,} |")
        md += [""]
    return md
