"""Data card of a run: ``data_cards/<run>.md`` + PNG assets in ``data_cards/<run>/``.

The card is what a reviewer, a clinician or a teammate reads: what went in,
what was removed and why, what was generated, how to load the shards, and how
to reproduce it. Its header is a Hugging Face dataset-card YAML block. Every
number comes from the run directory's tables and ``summary.json``.
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import platform
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from curate import io, registry, viz
from curate.card.escape import code, fence, md as esc
from curate.errors import ConfigError
from curate.stage import StageContext, Upstream

PACKAGES = ["curate", "torch", "numpy", "pyarrow", "faiss-cpu", "datasketch", "diffusers", "dask", "distributed",
            "pydicom", "nibabel", "pillow"]


def _size_category(n: int) -> str:
    for lim, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                      (10_000_000, "1M<n<10M")]:
        if n < lim:
            return name
    return "n>10M"


def _versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


class RunView:
    """Read-only access to a finished run's tables, by table name (overlay by partition)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir.rstrip("/")
        path = io.join(self.run_dir, "summary.json")
        if not io.exists(path):
            raise ConfigError(f"'{run_dir}' has no summary.json; run a pipeline there first (curate run ... --run-dir {run_dir})")
        self.summary = io.read_json(path)
        self.pipeline = io.read_json(io.join(self.run_dir, "pipeline.json")) if io.exists(io.join(self.run_dir, "pipeline.json")) else {}
        ups = []
        for dirname, st in self.summary["stages"].items():
            try:
                outputs = tuple(registry.get(st["key"]).outputs)
            except Exception:  # noqa: BLE001 - a stage no longer installed: read what its manifest lists
                outputs = tuple(k for k in st.get("rows", {}) if k != "quarantine")
            ups.append(Upstream(dirname, outputs))
        self.upstream = ups
        self.ctx = StageContext(run_dir=self.run_dir, stage="card", stage_key="card", partition_id=None, seed=0,
                                on_error="raise", upstream=tuple(ups))

    def has(self, table: str) -> bool:
        return self.ctx.has(table)

    def table(self, table: str, columns: list[str] | None = None) -> pa.Table | None:
        if not self.ctx.has(table):
            return None
        return self.ctx.read_all(table, columns)

    def stage_table(self, dirname: str, table: str | None = None, columns: list[str] | None = None) -> pa.Table | None:
        pids = io.list_partitions(self.run_dir, dirname, table)
        if not pids:
            return None
        return pa.concat_tables([io.read_parquet(io.part_path(self.run_dir, dirname, p, table), columns=columns)
                                 for p in pids], promote_options="permissive")

    def stages_of(self, prefix: str) -> list[tuple[str, dict]]:
        return [(d, s) for d, s in self.summary["stages"].items() if s["key"].startswith(prefix)]

    def ingested(self, columns: list[str]) -> pa.Table | None:
        parts = [self.stage_table(d, None, columns) for d, s in self.stages_of("ingest")]
        parts = [p for p in parts if p is not None]
        return pa.concat_tables(parts) if parts else None

    def shard_index(self) -> tuple[str, dict] | None:
        for d, _ in self.stages_of("shard"):
            p = io.join(self.run_dir, d, "shards", "index.json")
            if io.exists(p):
                return p, io.read_json(p)
        return None


# --------------------------------------------------------------------------- plots
def _plot_accounting(view: RunView, path: str) -> str:
    a = view.summary["accounting"]
    labels = ["ingested", "kept", "removed", "quarantined"] + (["synthetic added"] if a.get("synthetic_added") else [])
    values = [a["ingested"], a["kept"], a["removed"], a["quarantined"]] + ([a["synthetic_added"]] if a.get("synthetic_added") else [])
    colors = ["#4C72B0", "#55A868", "#C44E52", "#8172B2", "#DD8452"][: len(labels)]
    return viz.bar(labels, values, path, f"Accounting: {a['ingested']:,} ingested = kept + removed + quarantined",
                   "samples", colors)


def _plot_reasons(reasons: dict[str, int], path: str, title: str) -> str:
    items = sorted(reasons.items(), key=lambda kv: -kv[1])[:20]
    return viz.bar([k for k, _ in items], [v for _, v in items], path, title, "samples", "#C44E52")


def _images_by_id(view: RunView, ids: set[str]) -> dict[str, bytes]:
    t = view.ingested(["sample_id", "image"])
    extra = view.table("samples", ["sample_id", "image"])
    out: dict[str, bytes] = {}
    for tab in (t, extra):
        if tab is None:
            continue
        mask = pc.is_in(tab.column("sample_id"), pa.array(sorted(ids), pa.string()))
        for r in tab.filter(mask).to_pylist():
            out[r["sample_id"]] = r["image"]
    return out


def _plot_duplicate_groups(view: RunView, removals: pa.Table, path: str, groups: int = 6, per_group: int = 5) -> str | None:
    if removals is None or removals.num_rows == 0:
        return None
    rows = removals.select(["sample_id", "representative_id", "method", "score"]).to_pylist()
    by_rep: dict[str, list] = collections.defaultdict(list)
    for r in rows:
        if r["representative_id"]:
            by_rep[r["representative_id"]].append(r)
    # the largest groups first, one per method where possible
    reps = sorted(by_rep, key=lambda k: (-len(by_rep[k]), k))
    chosen, methods = [], set()
    for k in reps:
        m = by_rep[k][0]["method"]
        if m not in methods or len(chosen) >= len(set(r["method"] for r in rows)):
            chosen.append(k)
            methods.add(m)
        if len(chosen) >= groups:
            break
    ids = set(chosen) | {r["sample_id"] for k in chosen for r in by_rep[k][: per_group - 1]}
    imgs = _images_by_id(view, ids)
    grid, titles, row_titles = [], [], []
    for k in chosen:
        members = by_rep[k][: per_group - 1]
        grid.append([imgs.get(k)] + [imgs.get(r["sample_id"]) for r in members])
        titles.append(["kept"] + [f"removed {r['score']:.3f}" if r["score"] is not None else "removed" for r in members])
        row_titles.append(f"{members[0]['method']}\n{len(by_rep[k])} dup(s)")
    return viz.image_grid(grid, path, row_titles, titles, "Example duplicate groups: kept representative, then removed copies")


def _nn_cosines(emb: np.ndarray, max_n: int = 20000, seed: int = 0) -> np.ndarray:
    """Cosine of each (sampled) sample to its nearest other sample in the whole set."""
    import faiss

    x = np.ascontiguousarray(emb, dtype=np.float32)
    q = x
    if len(x) > max_n:
        q = x[np.random.default_rng(seed).choice(len(x), max_n, replace=False)]
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sims, _ = index.search(q, 2)
    return sims[:, 1]


def _embeddings(view: RunView) -> tuple[list[str], np.ndarray] | None:
    t = view.table("embeddings")
    if t is None or t.num_rows == 0:
        return None
    ids = t.column("sample_id").to_pylist()
    flat = t.column("embedding").combine_chunks()
    dim = flat.type.list_size
    emb = flat.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    return ids, emb


def _embedding_lines(view: RunView) -> list[str]:
    """One line per embed stage: the encoder id, what ``encoder: auto`` resolved to, width, normalisation."""
    lines = []
    for d, _ in view.stages_of("embed"):
        pids = io.list_partitions(view.run_dir, d)  # the stage's primary output: RUN_DIR/<stage>/part-*.parquet
        if not pids:
            continue
        schema = io.read_parquet(io.part_path(view.run_dir, d, pids[0]), columns=["embedding"]).schema
        meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        dim = schema.field("embedding").type.list_size
        spec = meta.get("encoder_spec")
        how = (f" (`encoder: auto` resolved to {code(meta['auto_resolved'])})" if "auto_resolved" in meta
               else (f" (`encoder: {esc(spec)}`)" if spec else ""))
        lines.append(f"- {esc(d)}: encoder {code(meta.get('encoder', '?'))}{how}, {dim}-d, L2-normalised, "
                     f"{esc(meta.get('device', '?'))} / {esc(meta.get('precision', '?'))}")
    return lines


def _plot_similarity(cos: np.ndarray, path: str) -> str:
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    a1.hist(cos, bins=60, color="#4C72B0")
    a1.set_xlabel("cosine similarity to nearest neighbour")
    a1.set_ylabel("samples")
    a1.set_title("Nearest-neighbour similarity (embeddings)")
    taus = np.linspace(0.80, 1.0, 81)
    share = [(cos <= t).mean() for t in taus]
    a2.plot(1 - taus, share, color="#55A868")
    a2.set_xlabel("eps (a sample is a near-duplicate if its NN cosine > 1 - eps)")
    a2.set_ylabel("share without a near-duplicate")
    a2.set_title("Samples with no near-duplicate (lower bound on keep share)")
    a2.grid(alpha=0.3)
    return viz.save(fig, path)


def _plot_embedding_map(ids: list[str], emb: np.ndarray, status: dict[str, str], path: str, seed: int = 0) -> str:
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ids), min(len(ids), 20000), replace=False) if len(ids) > 20000 else np.arange(len(ids))
    x = emb[idx] - emb[idx].mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=110)
    for name, color, size in [("kept", "#4C72B0", 6), ("removed", "#C44E52", 10), ("synthetic", "#DD8452", 8)]:
        m = np.array([status.get(ids[i], "kept") == name for i in idx])
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=size, c=color, alpha=0.6, label=f"{name} ({int(m.sum()):,})", linewidths=0)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    shown = f" ({len(idx):,} of {len(ids):,} shown)" if len(idx) < len(ids) else ""
    ax.set_title(f"Embedding map (PCA): kept / removed / synthetic{shown}")
    ax.legend(loc="best", fontsize=8, markerscale=2)
    return viz.save(fig, path)


def _plot_pairs(view: RunView, pairs: pa.Table, path: str, n: int = 6, negs: int = 4) -> str | None:
    if pairs is None or pairs.num_rows == 0:
        return None
    rows = [r for r in pairs.to_pylist() if r.get("negative_ids")][:n] or pairs.to_pylist()[:n]
    pos_by_anchor: dict[str, dict] = {}
    for r in pairs.to_pylist():
        if r.get("positive_id") and r["anchor_id"] not in pos_by_anchor:
            pos_by_anchor[r["anchor_id"]] = r
    ids = set()
    for r in rows:
        ids.add(r["anchor_id"])
        p = pos_by_anchor.get(r["anchor_id"]) or r
        if p.get("positive_id"):
            ids.add(p["positive_id"])
        ids.update((r.get("negative_ids") or [])[:negs])
    imgs = _images_by_id(view, ids)
    grid, titles = [], []
    for r in rows:
        p = pos_by_anchor.get(r["anchor_id"]) or r
        cells, t = [imgs.get(r["anchor_id"])], ["anchor"]
        if p.get("positive_id"):
            cells.append(imgs.get(p["positive_id"]))
            t.append(f"+ {p.get('positive_kind') or ''} {p.get('positive_score') or 0:.2f}")
        for nid, s in list(zip(r.get("negative_ids") or [], r.get("negative_scores") or []))[:negs]:
            cells.append(imgs.get(nid))
            t.append(f"- {s:.2f}")
        grid.append(cells)
        titles.append(t)
    return viz.image_grid(grid, path, None, titles, "Mined pairs: anchor, positive (+), hard negatives (-) with scores")


def _tradeoff(summary: dict) -> dict[str, dict[str, float]]:
    """mine.negatives' label-free operating points (``tradeoff_<point>_<metric>`` counters), by point."""
    pts: dict[str, dict[str, float]] = {}
    for st in summary["stages"].values():
        for k, v in st.get("counters", {}).items():
            if k.startswith("tradeoff_"):
                for m in ("fn_share", "hardness_pct", "served"):
                    if k.endswith("_" + m):
                        pts.setdefault(k[len("tradeoff_"):-len(m) - 1], {})[m] = v
    return {k: v for k, v in pts.items() if "fn_share" in v and "hardness_pct" in v}


def _plot_tradeoff(pts: dict[str, dict[str, float]], path: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
    for name, v in sorted(pts.items()):
        chosen = name == "chosen"
        ax.scatter(v["hardness_pct"], 100 * v["fn_share"], s=90 if chosen else 30, marker="*" if chosen else "o",
                   c="#C44E52" if chosen else "#4C72B0", zorder=3 if chosen else 2)
        ax.annotate(name, (v["hardness_pct"], 100 * v["fn_share"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("hardness: percentile of mean negative cosine among random pairs")
    ax.set_ylabel("false negatives: % with the anchor's label")
    ax.set_title("Hard-negative mining: false negatives vs hardness (label-free settings)")
    return viz.save(fig, path)


def _plot_samples(view: RunView, path: str, n: int = 24, seed: int = 0) -> str | None:
    t = view.table("samples", ["image", "is_synthetic"])
    if t is None or t.num_rows == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(t.num_rows, min(n, t.num_rows), replace=False).tolist())
    imgs = t.take(idx).column("image").to_pylist()
    cols = 8
    grid = [imgs[i: i + cols] for i in range(0, len(imgs), cols)]
    return viz.image_grid(grid, path, None, None, "Random kept samples", cell=1.2)


# --------------------------------------------------------------------------- card
def _privacy_lines(view: RunView) -> list[str]:
    """Which salt and which path redaction applied, from ``RUN_DIR/secrets/<stage>.json`` (never the salt)."""
    lines = []
    for d, st in view.stages_of("ingest"):
        path = io.join(view.run_dir, "secrets", f"{d}.json")
        info = io.read_json(path) if io.exists(path) else {}
        srcs = st["params"].get("sources", [])
        red = info.get("redacted_sources", [])
        salted = info.get("salted_sources", [])
        salt = info.get("salt", "unknown")
        lines.append(f"- {esc(d)}: salt for `group_id` / redacted paths: **{esc(salt)}**"
                     + (" (not used: no source is hashed)" if not salted else "")
                     + "; paths redacted: " + (", ".join(f"**yes** ({esc(srcs[i]['type'])})" if i in red else
                                                         f"no ({esc(srcs[i]['type'])})" for i in range(len(srcs)))
                                               or "no") + ".")
    return lines


def card_name(run_dir: str, pipeline: str) -> str:
    """The default card name: the run directory's name (or the pipeline's), made safe as a file name."""
    raw = os.path.basename(run_dir.rstrip("/")) or str(pipeline)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", raw).lstrip(".")
    return safe[:100] or "run"


def build_card(run_dir: str, out_dir: str = "data_cards", name: str | None = None,
               license: str = "other", task_categories: tuple[str, ...] = ("image-feature-extraction",)) -> str:
    """Write ``out_dir/<name>.md`` and its PNG assets; return the markdown path."""
    view = RunView(run_dir)
    s = view.summary
    name = card_name(view.run_dir, s["pipeline"]) if name is None else io.check_name(name, "card name (--name)")
    asset_dir = os.path.join(out_dir, name)
    os.makedirs(asset_dir, exist_ok=True)
    rel = lambda p: f"{name}/{os.path.basename(p)}"  # noqa: E731
    a = s["accounting"]
    figures: dict[str, str] = {"accounting": _plot_accounting(view, os.path.join(asset_dir, "accounting.png"))}

    # quarantine and removal reasons
    q_reasons: collections.Counter = collections.Counter()
    for d in s["stages"]:
        q = view.stage_table(d, "quarantine", ["reason"])
        if q is not None:
            q_reasons.update(f"{d}: {x}" for x in q.column("reason").to_pylist())
    removals = view.table("removals")
    r_methods: collections.Counter = collections.Counter()
    if removals is not None and removals.num_rows:
        r_methods.update(removals.column("method").to_pylist())
    if r_methods or q_reasons:
        reasons = {f"removed: {k}": v for k, v in r_methods.items()} | {f"quarantined {k}": v for k, v in q_reasons.items()}
        figures["reasons"] = _plot_reasons(reasons, os.path.join(asset_dir, "removal_reasons.png"), "Why samples left the set")
    dup = _plot_duplicate_groups(view, removals, os.path.join(asset_dir, "duplicate_groups.png"))
    if dup:
        figures["duplicates"] = dup
    emb = _embeddings(view)
    if emb is not None and len(emb[0]) > 2:
        ids, vecs = emb
        figures["similarity"] = _plot_similarity(_nn_cosines(vecs, seed=s.get("seed", 0)), os.path.join(asset_dir, "nn_similarity.png"))
        status = {}
        if removals is not None:
            status.update({x: "removed" for x in removals.column("sample_id").to_pylist()})
        syn = view.table("samples", ["sample_id", "is_synthetic"])
        if syn is not None:
            status.update({x: "synthetic" for x, f in zip(syn.column("sample_id").to_pylist(),
                                                          syn.column("is_synthetic").to_pylist()) if f})
        figures["map"] = _plot_embedding_map(ids, vecs, status, os.path.join(asset_dir, "embedding_map.png"))
    pairs = view.table("pairs")
    pp = _plot_pairs(view, pairs, os.path.join(asset_dir, "mined_pairs.png"))
    if pp:
        figures["pairs"] = pp
    tradeoff = _tradeoff(s)
    if tradeoff:
        figures["tradeoff"] = _plot_tradeoff(tradeoff, os.path.join(asset_dir, "mining_tradeoff.png"))
    smp = _plot_samples(view, os.path.join(asset_dir, "samples.png"), seed=s.get("seed", 0))
    if smp:
        figures["samples"] = smp

    # --- header
    kept_total = a["kept"] + a.get("synthetic_added", 0)
    ingested = view.ingested(["source_uri", "group_id", "label", "label_name", "text", "channels"])
    modalities = []
    for d, st in view.stages_of("ingest"):
        for src in st["params"].get("sources", []):
            modalities.append(src["type"])
    tags = sorted({"curate", "contrastive-learning", "self-supervised", "deduplication"}
                  | ({"medical"} if {"dicom", "nifti"} & set(modalities) else set())
                  | ({"synthetic"} if a.get("synthetic_added") else set())
                  | ({"hard-negatives"} if view.has("pairs") else set()))
    header = {"pretty_name": f"{s['pipeline']} (curated by curate)", "license": license,
              "size_categories": [_size_category(kept_total)], "task_categories": list(task_categories), "tags": tags}
    md = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
          f"# Data card: {esc(name)}", "",
          f"Pipeline **{esc(s['pipeline'])}**, run directory {code(s['run_dir'])}, finished {esc(s['finished'])} "
          f"in {s['seconds']} s on scheduler {code(s.get('scheduler', ''))}.", ""]
    description = (view.pipeline or {}).get("description") or s.get("description")
    if description:
        md += [esc(description), ""]
    md += ["## Summary", "",
           f"**{a['ingested']:,} ingested = {a['kept']:,} kept + {a['removed']:,} removed + {a['quarantined']:,} "
           f"quarantined** ({'balanced' if a['balanced'] else 'NOT balanced'})"
           + (f"; {a['synthetic_added']:,} synthetic samples added" if a.get("synthetic_added") else "") + ". "
           f"Duplicate groups emptied by dedup: **{a.get('groups_emptied', 0)}**; removals naming a representative "
           f"that is not kept: **{a.get('representatives_not_kept', 0)}** (both must be 0: every removed sample "
           "names a kept one).", "",
           f"![accounting]({rel(figures['accounting'])})", ""]

    # --- sources
    md += ["## Sources", "", "| stage | type | path | windowing / options |", "|---|---|---|---|"]
    for d, st in view.stages_of("ingest"):
        for src in st["params"].get("sources", []):
            path = src.get("path") or src.get("images")
            opts = ", ".join(f"{k}={v}" for k, v in src.items() if k not in ("type", "path", "images"))
            md.append(f"| {esc(d)} | {esc(src['type'])} | {code(path)} | {esc(opts)} |")
    if ingested is not None and ingested.num_rows:
        groups = len(set(x for x in ingested.column("group_id").to_pylist() if x))
        labels = collections.Counter(x for x in ingested.column("label_name").to_pylist() if x) or \
            collections.Counter(x for x in ingested.column("label").to_pylist() if x is not None)
        texts = sum(1 for x in ingested.column("text").to_pylist() if x)
        chans = collections.Counter(ingested.column("channels").to_pylist())
        md += ["", f"{ingested.num_rows:,} samples decoded from {len(set(ingested.column('source_uri').to_pylist())):,} "
                   f"source files/arrays; {groups:,} patient/volume groups; {texts:,} with paired text; "
                   f"{chans.get(1, 0):,} gray and {chans.get(3, 0):,} RGB."]
        if labels:
            md += ["", "Labels: " + ", ".join(f"{esc(k)}: {v:,}" for k, v in sorted(labels.items(), key=lambda kv: str(kv[0])))]
    md += [""]

    # --- stages
    md += ["## Stages", "", "| stage | key | partitions | rows out | counters | parameters |", "|---|---|---|---|---|---|"]
    for d, st in s["stages"].items():
        rows = ", ".join(f"{esc(k)}={v:,}" for k, v in sorted(st.get("rows", {}).items()))
        counters = ", ".join(f"{esc(k)}={v:,}" for k, v in sorted(st.get("counters", {}).items())
                             if not k.startswith("tradeoff_"))
        params = json.dumps({k: v for k, v in st["params"].items() if k != "sources"}, sort_keys=True)
        md.append(f"| {esc(d)} | {code(st['key'])} | {st['partitions']} | {rows} | {counters} | {code(params)} |")
    md += [""]

    # --- removals
    md += ["## What was removed and why", ""]
    if r_methods or q_reasons:
        md += ["| where | reason | samples |", "|---|---|---|"]
        md += [f"| removed | {esc(k)} | {v:,} |" for k, v in sorted(r_methods.items())]
        md += [f"| quarantined ({esc(k.split(': ')[0])}) | {esc(k.split(': ', 1)[1])} | {v:,} |"
               for k, v in sorted(q_reasons.items())]
        md += ["", f"![reasons]({rel(figures['reasons'])})", ""]
    else:
        md += ["Nothing was removed or quarantined.", ""]
    if "duplicates" in figures:
        md += ["Each row: the kept representative, then copies removed in its favour with their similarity.", "",
               f"![duplicate groups]({rel(figures['duplicates'])})", ""]
    if "similarity" in figures:
        md += ["## Similarity structure", ""] + _embedding_lines(view) + ["",
               "Left: cosine similarity of every sample to its nearest neighbour in embedding space. Right: the share of "
               "samples with no neighbour above cosine 1 - eps: they are kept at that eps whatever the order, so this is a lower bound on the share semantic dedup keeps (`curate inspect --dedup` plots the exact curve).", "",
               f"![similarity]({rel(figures['similarity'])})", "", f"![embedding map]({rel(figures['map'])})", ""]
    if "pairs" in figures:
        n_pairs = pairs.num_rows
        kinds = collections.Counter(x for x in pairs.column("positive_kind").to_pylist() if x)
        md += ["## Mined pairs", "", f"{n_pairs:,} pair rows; positive kinds: "
               + (", ".join(f"{esc(k)}: {v:,}" for k, v in sorted(kinds.items())) or "none") + ".", "",
               f"![mined pairs]({rel(figures['pairs'])})", ""]
    if "tradeoff" in figures:
        md += ["Label-free operating points of `mine.negatives`, measured against the labels on 1,000 seeded "
               "anchors (label guard off); the star is the chosen setting.", "",
               "| operating point | false negatives | hardness pct | anchors served |", "|---|---|---|---|"]
        md += [f"| {'**' + esc(k) + '**' if k == 'chosen' else esc(k)} | {v['fn_share']:.1%} | {v['hardness_pct']:.1f} | "
               f"{v.get('served', float('nan')):.1%} |" for k, v in sorted(tradeoff.items())]
        md += ["", f"![mining trade-off]({rel(figures['tradeoff'])})", ""]

    # --- synthetic / AdaInf
    shard = view.shard_index()
    adainf = (shard[1].get("metadata", {}) or {}).get("adainf") if shard else None
    adainf_rows = view.table("adainf").to_pylist() if view.has("adainf") else []
    rejected = view.table("synthetic_rejections") if view.has("synthetic_rejections") else None
    if a.get("synthetic_added") or adainf or adainf_rows:
        md += ["## Synthetic data and AdaInf", "",
               f"{a.get('synthetic_added', 0):,} generated samples ({a.get('synthetic_added', 0) / max(kept_total, 1):.1%} "
               "of the final set, before real-data replication)."]
        if rejected is not None and rejected.num_rows:
            why = collections.Counter(f"{m}: {(r or '').split(' ')[0]}" for m, r in
                                      zip(rejected.column("method").to_pylist(), rejected.column("reason").to_pylist()))
            md += ["", f"{rejected.num_rows:,} generated images were rejected as near-copies of a real image "
                       "(memorisation) or of another generated one: "
                   + ", ".join(f"{esc(k)} ({v:,})" for k, v in sorted(why.items())) + "."]
        for row in adainf_rows:
            md += ["", "| AdaInf mode | real replication | real share / epoch | FD | precision | recall | augmentation |",
                   "|---|---|---|---|---|---|---|",
                   f"| {esc(row['mode'])} | {row['real_replication']:.3g} | {row['real_share']:.3f} | "
                   + " | ".join("-" if row.get(k) is None else f"{row[k]:.3f}" for k in ("fd", "precision", "recall"))
                   + f" | {code(row['augmentation'])} |"]
            if row.get("rule"):
                md += ["", f"Rule: {esc(row['rule'])}"]
        if adainf:
            md += ["", "AdaInf settings recorded in the shard index (Wang et al., ICLR 2024):", "",
                   *fence(json.dumps(adainf, indent=2, sort_keys=True), "json")]
        md += [""]

    from curate.card import quality as _quality  # quality / outliers / decontaminate sections
    md += _quality.sections(view, asset_dir, rel)

    # --- shards + loading
    if shard:
        idx_path, index = shard
        md += ["## Shards", "", f"Index: {code(idx_path)}", "", "| shard | rows | bytes | sha256 |", "|---|---|---|---|"]
        for sh in index.get("shards", []):
            md.append(f"| {code(sh.get('path'))} | {sh.get('rows', 0):,} | {sh.get('bytes', 0):,} | "
                      f"{code(sh.get('sha256', ''))} |")
        md += ["", "### How to load", "", *fence("\n".join([
               "from curate.load import ShardDataset, ShardLoader, SimCLRAugment",
               f"ds = ShardDataset({json.dumps(idx_path)}, rank=0, world_size=1, seed=0)",
               "loader = ShardLoader(ds, batch_size=256, num_workers=2)  # batches land on the GPU when there is one",
               "aug = SimCLRAugment(64)",
               'for batch in loader: v1, v2 = aug(batch["image"].float() / 255), aug(batch["image"].float() / 255)']),
               "python"), ""]
    else:
        md += ["## How to load", "", "This run has no shard stage; its kept samples are Parquet tables:", "",
               *fence("\n".join(["from curate.card.build import RunView",
                                 f'kept = RunView({json.dumps(s["run_dir"])}).table("samples")  '
                                 '# pyarrow.Table, PNG bytes in column "image"']), "python"), ""]
    if "samples" in figures:
        md += [f"![samples]({rel(figures['samples'])})", ""]

    # --- reproducibility, privacy
    md += ["## Reproducibility", "", f"- seed: {s.get('seed')}",
           "- config hashes: " + ", ".join(f"{esc(d)}={code(st['config_hash'], table=False)}" for d, st in s["stages"].items()),
           f"- rerun: {code('curate run PIPELINE.yaml --run-dir ' + str(s['run_dir']), table=False)} "
           "(completed partitions are skipped)",
           f"- python {platform.python_version()}; " + ", ".join(f"{k} {v}" for k, v in _versions().items()), "",
           "## Privacy", "", *_privacy_lines(view),
           "- `group_id` is a salted BLAKE2 hash of patient/study/series (DICOM) or volume (NIfTI) identity; raw "
           "PatientID, names and other DICOM header fields are not copied into any table.",
           "- Images are re-encoded as 8-bit PNG pixels only; DICOM metadata and burned-in annotations are not "
           "checked: review pixel content before sharing.",
           "- `source_uri` keeps the input file path where paths are not redacted; paths that contain identifiers "
           "should be redacted (`redact_paths: true`) or renamed before sharing.",
           ("- Paired text is present and kept verbatim: de-identify reports before sharing." if
            (ingested is not None and any(ingested.column("text").to_pylist())) else "- No paired text."), ""]
    path = os.path.join(out_dir, f"{name}.md")
    with open(path, "w") as f:
        f.write("\n".join(md))
    return path
