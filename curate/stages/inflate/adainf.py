"""inflate.adainf: how much real data and how much augmentation when training on an inflated set.

AdaInf (Wang, Zhang, Wang, ICLR 2024, "Do Generated Data Always Help
Contrastive Learning?"): naive inflation with generated images can hurt
contrastive learning (CIFAR-10 SimCLR 91.56 -> 91.38); two free changes fix it
(-> 93.42): (a) up-weight real data - the real set is replicated ``dup = 10``
times before the generated set is appended (1M generated for 50k real: real is
1/3 of an epoch) - because of the real-vs-generated distribution gap; (b)
weaker augmentation - RandomResizedCrop min scale 0.08 -> 0.2, colour-jitter
probability 0.8 -> 0.4 and strength 1.0 -> 0.5 - because generated data
already adds connectivity to the augmentation graph.

Modes (all write one row of the ``adainf`` table; the ``shard`` stage bakes
``real_replication`` into real rows' ``sample_weight`` and puts the row and the
``augmentation`` JSON into ``index.json`` metadata; the loader replicates by
weight, the training core takes the augmentation):

* ``paper`` - ``dup`` (default 10) and the weak augmentation above.
* ``gap`` - real share from the measured gap. Embeddings of real and generated
  rows (:class:`curate.encoders.embedder.Embedder`: the run's ``embed`` encoder
  and fitted projection; without an embed stage, the embed defaults fitted on
  the real rows) give the Fréchet distance and improved precision / recall (Kynkäänniemi et al.
  2019, k = 3), all reported. The rule::

      s_u   = n_real / (n_real + n_gen)          # real share of a plain union (dup = 1)
      gamma = 1 - precision                       # share of generated samples off the real manifold
      s     = s_u + (1 - s_u) * gamma             # real share per epoch
      dup   = s / (1 - s) * n_gen / n_real        # clipped to [1, max_dup]
      alpha = clip((1 - s) / (1 - 1/3), 0, 1)     # 1: the paper's weak augmentation, 0: SimCLR's

  Why: generated samples inside the real manifold behave like extra real data
  (no reason to down-weight them: gamma = 0 gives the plain union), while
  off-manifold ones add spurious edges to the augmentation graph - the gap term
  of the paper's bound - so the real share grows with the off-manifold share.
  Precision is the direct estimate of that share; FD and recall measure
  coverage, which limits the benefit but does not create harm, so they are
  reported, not used. At the paper's operating point (20x inflation, a strong
  CIFAR-10 diffusion model whose precision we assume is about 0.7) the rule
  gives s = 0.33, i.e. dup = 10. Weak augmentation is justified by the
  connectivity generated data adds, which scales with its share of the epoch:
  at the paper's 2/3 generated the paper's weak setting, with none SimCLR's.
* ``proxy`` - short SimCLR runs (:func:`curate.eval.evaluate_arms`, equal step
  budget) over a grid of real shares x augmentation strengths, linear probe on
  a held-out split of the labelled real rows; the best cell wins. Costly
  (grid x proxy_steps); needs labels.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.config import StageParams
from curate.errors import ConfigError
from curate.stage import GlobalStage, StageContext
from curate.stages.embed import EmbedParams

log = logging.getLogger("curate.inflate")

# SimCLR (Chen et al. 2020) augmentation vs AdaInf's weak one; gray / flip unchanged (0.2 / 0.5)
NORMAL_AUG = {"crop_min_scale": 0.08, "jitter_p": 0.8, "jitter_strength": 1.0}
WEAK_AUG = {"crop_min_scale": 0.2, "jitter_p": 0.4, "jitter_strength": 0.5}
PAPER_DUP = 10
PAPER_REAL_SHARE = 1.0 / 3.0  # 50k x 10 real vs 1M generated

ADAINF = pa.schema(
    [
        pa.field("mode", pa.string(), nullable=False),
        # sample_weight multiplier of real rows (the shard stage reads this column)
        pa.field("real_replication", pa.float64(), nullable=False),
        # JSON of SimCLRAugment / TrainConfig keys (the shard stage reads this column)
        pa.field("augmentation", pa.string(), nullable=False),
        pa.field("aug_strength", pa.float64()),  # 0: SimCLR's augmentation, 1: AdaInf weak
        pa.field("real_share", pa.float64(), nullable=False),  # expected real share of an epoch
        pa.field("n_real", pa.int64(), nullable=False),
        pa.field("n_synthetic", pa.int64(), nullable=False),
        pa.field("fd", pa.float64()),
        pa.field("fd_real_split", pa.float64()),
        pa.field("precision", pa.float64()),
        pa.field("recall", pa.float64()),
        pa.field("encoder", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("details", pa.string()),  # JSON: grid results (proxy), inputs of the rule
    ]
)


# ------------------------------------------------------------------------------ the mix
def augmentation(alpha: float) -> dict[str, float]:
    """Linear interpolation between SimCLR's augmentation (alpha 0) and AdaInf's weak one (alpha 1)."""
    a = float(min(1.0, max(0.0, alpha)))
    return {k: round(NORMAL_AUG[k] + a * (WEAK_AUG[k] - NORMAL_AUG[k]), 6) for k in NORMAL_AUG}


def real_share(n_real: int, n_syn: int, replication: float) -> float:
    """Expected real share of an epoch when real rows are replicated ``replication`` times."""
    tot = n_real * replication + n_syn
    return 1.0 if tot == 0 else n_real * replication / tot


def replication_for_share(n_real: int, n_syn: int, share: float) -> float:
    """Real replication factor that makes real rows ``share`` of an epoch."""
    if n_syn == 0 or n_real == 0:
        return 1.0
    share = min(max(share, 1e-9), 1 - 1e-9)
    return share / (1 - share) * n_syn / n_real


def paper_settings(n_real: int, n_syn: int, dup: float = PAPER_DUP) -> dict[str, Any]:
    """AdaInf's fixed recipe: dup = 10, weak augmentation."""
    if n_syn == 0:
        return {"real_replication": 1.0, "augmentation": dict(NORMAL_AUG), "aug_strength": 0.0,
                "real_share": 1.0, "rule": "no synthetic rows: nothing to mix; SimCLR augmentation"}
    return {"real_replication": float(dup), "augmentation": dict(WEAK_AUG), "aug_strength": 1.0,
            "real_share": real_share(n_real, n_syn, dup),
            "rule": f"paper: real replicated dup={dup:g} times, weak augmentation (Wang et al. 2024)"}


def gap_settings(n_real: int, n_syn: int, precision: float, max_dup: float = 50.0) -> dict[str, Any]:
    """The ``gap`` rule (module docstring): real share from the off-manifold share 1 - precision."""
    if n_syn == 0:
        return paper_settings(n_real, 0)
    s_u = n_real / (n_real + n_syn)
    gamma = float(min(1.0, max(0.0, 1.0 - precision)))
    s = s_u + (1.0 - s_u) * gamma
    dup = float(min(max_dup, max(1.0, replication_for_share(n_real, n_syn, s))))
    s = real_share(n_real, n_syn, dup)
    alpha = min(1.0, max(0.0, (1.0 - s) / (1.0 - PAPER_REAL_SHARE)))
    return {"real_replication": dup, "augmentation": augmentation(alpha), "aug_strength": round(alpha, 6),
            "real_share": s,
            "rule": (f"gap: s_u={s_u:.4f}, gamma=1-precision={gamma:.4f}, real share s=s_u+(1-s_u)*gamma "
                     f"-> dup={dup:.3f} (clip [1,{max_dup:g}]), aug strength=(1-s)/(2/3)={alpha:.3f}")}


def replicated(real: "Any", syn: "Any", replication: float, seed: int = 0):
    """uint8 tensor of ``real`` repeated ``replication`` times (fractional part: a seeded subset) + ``syn``."""
    import torch

    whole = int(math.floor(replication))
    frac = replication - whole
    parts = [real] * whole
    if frac > 1e-9:
        g = torch.Generator().manual_seed(20_011 + seed)
        k = int(round(frac * real.shape[0]))
        parts.append(real[torch.randperm(real.shape[0], generator=g)[:k]])
    parts.append(syn)
    return torch.cat(parts)


def mixed_arm(name: str, real: "Any", syn: "Any", replication: float, aug: dict[str, float], description: str = ""):
    """A :class:`curate.eval.Arm` training on real x replication + synthetic with augmentation ``aug``."""
    from curate.eval import Arm

    n = int(real.shape[0] * replication) + int(syn.shape[0])
    return Arm(name, lambda seed: replicated(real, syn, replication, seed), n_samples=n, train_overrides=dict(aug),
               description=description or f"real x{replication:.3g} + {syn.shape[0]} synthetic, aug {aug}")


def adainf_arm(d: "Any"):
    """Eval arm (``RunData -> Arm``) training on a run's kept real rows x its ``adainf`` replication +
    its synthetic rows, with the recommended augmentation. Register it with
    ``curate.eval.register_arm("adainf", adainf_arm)``."""
    from curate.train.data import run_context

    row = read_adainf(run_context(d.run_dir))
    if row is None:
        raise ConfigError(f"arm 'adainf': run '{d.run_dir}' has no adainf table; add `stage: inflate.adainf`")
    real, syn = d.images[d.kept], d.images[d.synthetic]
    return mixed_arm("adainf", real, syn, float(row["real_replication"]), row["augmentation"],
                     f"kept real x{row['real_replication']:.3g} + {syn.shape[0]} synthetic, {row['mode']} mode, "
                     f"augmentation {row['augmentation']}")


def proxy_grid(real: "Any", real_labels: "Any", syn: "Any", shares: list[float | None], strengths: list[float],
               train_config: dict[str, Any], probe_fraction: float = 0.2, seeds: tuple[int, ...] = (0,),
               seed: int = 0, log_fn=None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate every (real share, augmentation strength) cell; return (best cell, all cells).

    A share of None is the plain union (dup = 1). The probe trains on a held-out ``probe_fraction``
    of the labelled real rows and tests on another equal slice, so no pretraining row is probed.
    """
    import torch

    from curate.eval import ProbeData, evaluate_arms

    n = real.shape[0]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    k = max(2, int(n * probe_fraction))
    if 2 * k >= n:
        raise ConfigError(f"inflate.adainf proxy: {n} labelled real rows are too few for a probe split of "
                          f"{probe_fraction:g}; lower proxy_probe_fraction or use mode: gap")
    tr, te, pre = perm[:k], perm[k:2 * k], perm[2 * k:]
    probe = ProbeData(real[tr], real_labels[tr], real[te], real_labels[te], source="adainf proxy split")
    pool = real[pre]
    n_r, n_s = pool.shape[0], syn.shape[0]
    arms, cells, seen = [], [], set()
    for s in shares:
        # a share below the plain union's is unreachable without dropping real rows: it becomes dup = 1
        rep = 1.0 if s is None else max(1.0, replication_for_share(n_r, n_s, s))
        for a in strengths:
            name = f"s{real_share(n_r, n_s, rep):.3f}_a{a:g}"
            if name in seen:
                continue
            seen.add(name)
            arms.append(mixed_arm(name, pool, syn, rep, augmentation(a)))
            cells.append({"arm": name, "real_replication": rep, "real_share": real_share(n_r, n_s, rep),
                          "aug_strength": a})
    report = evaluate_arms(arms, probe, train_config, seeds=list(seeds), log=log_fn)
    for c in cells:
        accs = [r.linear_acc for r in report.results if r.arm == c["arm"]]
        c["linear_acc"] = float(np.mean(accs))
    best = max(cells, key=lambda c: c["linear_acc"])
    return best, cells


# ------------------------------------------------------------------------------ the stage
class AdaInf(GlobalStage):
    """Compute AdaInf's real replication and augmentation for the samples overlay (real + synthetic)."""

    key: ClassVar[str] = "inflate.adainf"
    inputs: ClassVar[tuple[str, ...]] = ("samples",)
    outputs: ClassVar[tuple[str, ...]] = ("adainf",)

    class Params(StageParams):
        mode: Literal["paper", "gap", "proxy"] = Field("paper", description="paper: dup=10 + weak augmentation; "
                                                       "gap: from measured precision; proxy: short eval grid")
        dup: float = Field(PAPER_DUP, ge=1, description="paper mode: real replication factor")
        max_dup: float = Field(50.0, ge=1, description="gap / proxy: upper bound of the replication factor")
        embed: EmbedParams | None = Field(None, description="gap: encoder (same keys as the embed stage); "
                                          "default: the run's embed stage's encoder and fitted projection, "
                                          "or the embed defaults fitted on the real images")
        k: int = Field(3, ge=1, description="gap: k of the k-NN manifolds (Kynkäänniemi et al. 2019)")
        max_samples: int = Field(5000, ge=10, description="gap: rows per side for FD / precision / recall")
        measure_gap: bool = Field(True, description="paper / proxy: also measure and report FD / precision / recall")
        proxy_shares: list[float | None] = Field([None, 1 / 3, 0.5, 0.75], description="proxy: real shares "
                                                 "(None: plain union)")
        proxy_strengths: list[float] = Field([0.0, 1.0], description="proxy: 0 SimCLR aug, 1 AdaInf weak")
        proxy_steps: int = Field(300, ge=1, description="proxy: SimCLR steps per cell")
        proxy_batch_size: int = Field(128, ge=2)
        proxy_arch: str = Field("resnet_tiny", description="proxy: encoder architecture")
        proxy_probe_fraction: float = Field(0.2, gt=0, lt=0.5, description="proxy: labelled real rows held out "
                                            "for the probe (train) and as many for its test")
        proxy_max_real: int = Field(10000, ge=10, description="proxy: real rows used (seeded subset)")
        proxy_max_synthetic: int = Field(20000, ge=1, description="proxy: synthetic rows used (seeded subset)")
        seed: int | None = Field(None, description="default: the pipeline seed")

    def output_schemas(self) -> dict[str, pa.Schema]:
        return {"adainf": ADAINF}

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, pa.Table]:
        p = self.params
        seed = ctx.seed if p.seed is None else p.seed
        t = ctx.read_all("samples", columns=["sample_id", "image", "label", "channels", "is_synthetic"])
        syn_mask = t.column("is_synthetic")
        real, syn = t.filter(pc.invert(syn_mask)), t.filter(syn_mask)
        n_real, n_syn = real.num_rows, syn.num_rows
        if n_real == 0:
            raise ConfigError("inflate.adainf: no real samples in the overlay; run ingest first")
        if n_syn == 0:
            log.warning("inflate.adainf: no synthetic rows; put inflate.generate before inflate.adainf")
            ctx.count("no_synthetic")
        gap: dict[str, Any] = {}
        encoder = None
        if n_syn and (p.mode == "gap" or p.measure_gap):
            gap, encoder = self._gap(ctx, real, syn, seed)
        details: dict[str, Any] = {"gap": gap}
        if p.mode == "paper":
            out = paper_settings(n_real, n_syn, p.dup)
        elif p.mode == "gap":
            out = gap_settings(n_real, n_syn, gap["precision"], p.max_dup) if n_syn else paper_settings(n_real, 0)
        else:
            out, cells = self._proxy(real, syn, seed) if n_syn else (paper_settings(n_real, 0), [])
            details["grid"] = cells
        row = {"mode": p.mode, "real_replication": float(out["real_replication"]),
               "augmentation": json.dumps(out["augmentation"], sort_keys=True),
               "aug_strength": out.get("aug_strength"), "real_share": float(out["real_share"]),
               "n_real": n_real, "n_synthetic": n_syn, "fd": gap.get("fd"), "fd_real_split": gap.get("fd_real_split"),
               "precision": gap.get("precision"), "recall": gap.get("recall"), "encoder": encoder,
               "rule": out["rule"], "details": json.dumps(details, sort_keys=True, default=float)}
        ctx.count("real_replication", round(row["real_replication"], 6))
        ctx.count("real_share", round(row["real_share"], 6))
        log.info("inflate.adainf (%s): %s", p.mode, out["rule"])
        res = {pid: ADAINF.empty_table() for pid in ctx.partitions}
        res[ctx.partitions[0]] = pa.Table.from_pylist([row], schema=ADAINF)
        return res

    def _gap(self, ctx: StageContext, real: pa.Table, syn: pa.Table, seed: int) -> tuple[dict[str, Any], str]:
        from curate.ops.fid import gap_report
        from curate.encoders.embedder import Embedder

        p = self.params
        rng = np.random.default_rng(seed)

        def pick(t: pa.Table) -> list[bytes]:
            idx = np.sort(rng.choice(t.num_rows, min(p.max_samples, t.num_rows), replace=False))
            return t.column("image").take(pa.array(idx)).to_pylist()

        r, s = pick(real), pick(syn)
        channels = 3 if pc.any(pc.equal(real.column("channels"), 3)).as_py() else 1
        emb = Embedder.for_stage(ctx, p.embed, r, channels)
        rep = gap_report(emb(r), emb(s), k=p.k, max_samples=None, seed=seed)
        return rep, emb.id

    def _proxy(self, real: pa.Table, syn: pa.Table, seed: int) -> tuple[dict[str, Any], list[dict]]:
        import torch

        from curate.train.data import images_tensor

        p = self.params
        if real.column("label").null_count == real.num_rows:
            raise ConfigError("inflate.adainf mode proxy needs labelled real samples for its probe; "
                              "use mode: gap or paper")
        real = real.filter(pc.is_valid(real.column("label")))
        rng = np.random.default_rng(seed)
        ri = np.sort(rng.choice(real.num_rows, min(p.proxy_max_real, real.num_rows), replace=False))
        si = np.sort(rng.choice(syn.num_rows, min(p.proxy_max_synthetic, syn.num_rows), replace=False))
        r_img = real.column("image").take(pa.array(ri)).to_pylist()
        s_img = syn.column("image").take(pa.array(si)).to_pylist()
        rx = images_tensor(r_img)
        sx = images_tensor(s_img, rx.shape[-1], rx.shape[1])
        ry = torch.tensor(real.column("label").take(pa.array(ri)).to_pylist(), dtype=torch.long)
        cfg = {"steps": p.proxy_steps, "batch_size": p.proxy_batch_size, "arch": p.proxy_arch, "seed": seed}
        best, cells = proxy_grid(rx, ry, sx, p.proxy_shares, p.proxy_strengths, cfg,
                                 probe_fraction=p.proxy_probe_fraction, seed=seed, log_fn=log.info)
        n_real, n_syn = real.num_rows, syn.num_rows
        # the winning cell's real share, transferred to the full set sizes
        rep = float(min(p.max_dup, max(1.0, replication_for_share(n_real, n_syn, best["real_share"]))))
        out = {"real_replication": rep, "augmentation": augmentation(best["aug_strength"]),
               "aug_strength": best["aug_strength"], "real_share": real_share(n_real, n_syn, rep),
               "rule": (f"proxy: best of {len(cells)} cells ({p.proxy_steps} SimCLR steps each, linear probe on "
                        f"held-out real rows): real share {best['real_share']:.3f}, aug strength "
                        f"{best['aug_strength']:g}, probe acc {best['linear_acc']:.4f}")}
        return out, cells


def read_adainf(ctx: StageContext) -> dict[str, Any] | None:
    """The latest upstream ``adainf`` row with ``augmentation`` / ``details`` parsed, or None."""
    if not ctx.has("adainf"):
        return None
    rows = [r for _, t in ctx.read_every("adainf") for r in t.to_pylist()]
    if not rows:
        return None
    row = dict(rows[-1])
    row["augmentation"] = json.loads(row["augmentation"])
    row["details"] = json.loads(row["details"] or "{}")
    return row


__all__ = ["AdaInf", "ADAINF", "adainf_arm", "INFLATE_KEYS", "with_inflate_stages", "NORMAL_AUG", "WEAK_AUG", "augmentation", "gap_settings", "mixed_arm",
           "paper_settings", "proxy_grid", "read_adainf", "real_share", "replicated", "replication_for_share"]


INFLATE_KEYS = ("inflate.train", "inflate.load", "inflate.generate", "inflate.adainf")


def with_inflate_stages(stages: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A pipeline's stage list with its inflate.* stages replaced by ``new`` (merged into an old entry of the
    same stage), placed where the old ones
    were, else before ``shard`` (and after everything else): what ``curate inflate RUN_DIR`` runs."""
    pos = next((i for i, s in enumerate(stages) if s.get("stage") in INFLATE_KEYS), None)
    if pos is None:
        pos = next((i for i, s in enumerate(stages) if s.get("stage") == "shard"), len(stages))
    before = [dict(s) for s in stages[:pos] if s.get("stage") not in INFLATE_KEYS]
    after = [dict(s) for s in stages[pos:] if s.get("stage") not in INFLATE_KEYS]
    old = {s.get("stage"): s for s in stages if s.get("stage") in INFLATE_KEYS}
    # keys given now override; the rest of an existing entry of the same stage stays (a rerun reruns nothing)
    return before + [{**old.get(s["stage"], {}), **s} for s in new] + after
