"""inflate.generate: sample N images from the upstream diffusion generator, drop near-copies.

Sampling: DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"; 50
steps, eta = 0: deterministic) or DDPM ancestral sampling (Ho et al. 2020) on the
generator's noise schedule. Row ``i`` gets its own seed ``blake2b(seed/i)``;
its initial noise (and, for stochastic samplers, every step's noise) comes from
a CPU ``torch.Generator`` of that seed, so an image depends only on (generator,
seed, sampler, steps, label) - not on batch size or worker count (CPU and GPU
runs agree up to float round-off). Rows are cut into partitions of
``images_per_partition`` (ids ``syn-00000`` ...), one Dask task each; they are
new partitions of ``samples``, so the overlay downstream is real kept +
synthetic. On CUDA the partitions are generated one after another in the
driver process (the GPU is the parallelism; one model copy). Rows carry
``is_synthetic = true``, ``generator`` (the weights id) and ``seed``.

Memorisation / redundancy filter (diffusion models can replicate training
images: Carlini et al. 2023, "Extracting Training Data from Diffusion Models";
Somepalli et al. 2023). A generated image is rejected as

* ``memorised`` when it is a near-copy of a real image: identical pixels, or
  pHash Hamming distance <= t, or embedding cosine >= tau to its nearest real
  neighbour;
* ``redundant`` when it is a near-copy (same tests) of an earlier accepted
  generated image.

By default t and tau are *calibrated on the real set* (a relative test in the
spirit of Carlini et al.'s): a generated image is a near-copy when it is closer
to a real image than all but ``memorisation_quantile`` (1 %) of real images are
to their own nearest real neighbour. Absolute values can be set instead.
Rejections are written to the ``synthetic_rejections`` table (decision-table
schema: generated sample_id, method, representative_id = the partner, score,
reason) and counted; they never enter ``samples``, so the run's accounting
(``ingested = kept + removed + quarantined``; synthetic rows counted apart as
``synthetic_added``) stays balanced. pHash comes from :mod:`curate.ops.phash`
(imagehash definitions), generated-vs-generated pairs from
:mod:`curate.ops.hamming`, embeddings from the run's ``embed`` stage
(:class:`curate.encoders.embedder.Embedder`: the same encoder and fitted projection).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate import schemas
from curate.config import StageParams
from curate.errors import ConfigError
from curate.samples import sample_row, samples_table
from curate.encoders.embedder import Embedder
from curate.stage import GlobalStage, StageContext
from curate.stages.embed import EmbedParams
from curate.stages.inflate.train import device_auto, load_unet, read_generator

log = logging.getLogger("curate.inflate")

SYN_PREFIX = "syn-"
REJECTIONS = "synthetic_rejections"


def row_seed(base: int, index: int) -> int:
    """Per-row seed: 63 bits of blake2b(base/index)."""
    h = hashlib.blake2b(f"{base}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


# ------------------------------------------------------------------------------ sampling
_PIPES: dict[tuple[str, str], Any] = {}


def _pipe(path: str, device: str):
    key = (path, device)
    if key not in _PIPES:
        _PIPES[key] = load_unet(path, device)
    return _PIPES[key]


def sample_images(path: str, seeds: list[int], labels: list[int | None] | None = None, *,
                  sampler: Literal["ddim", "ddpm"] = "ddim", steps: int = 50, eta: float = 0.0,
                  batch_size: int = 256, device: str = "auto") -> np.ndarray:
    """Generate one uint8 image per seed: ``(N, H, W)`` for 1 channel, ``(N, H, W, 3)`` for 3."""
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler

    dev = device_auto(device)
    unet, sched_cfg, _ = _pipe(str(path), dev)
    size = unet.config.sample_size
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    c = int(unet.config.in_channels)
    conditional = unet.config.num_class_embeds is not None
    if conditional and (labels is None or any(y is None for y in labels)):
        raise ConfigError("inflate.generate: the generator is class-conditional; every row needs a label")
    out = []
    for b0 in range(0, len(seeds), batch_size):
        bs = seeds[b0:b0 + batch_size]
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in bs]
        x = torch.stack([torch.randn((c, size, size), generator=g) for g in gens]).to(dev)
        sched = (DDIMScheduler if sampler == "ddim" else DDPMScheduler).from_config(sched_cfg)
        sched.set_timesteps(steps)
        x = x * sched.init_noise_sigma
        y = torch.tensor(labels[b0:b0 + batch_size], device=dev) if conditional else None
        extra = {"eta": eta} if sampler == "ddim" else {}
        stochastic = sampler == "ddpm" or eta > 0
        with torch.inference_mode():
            for t in sched.timesteps:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.startswith("cuda")):
                    eps = unet(x, t, class_labels=y).sample
                x = sched.step(eps.float(), t, x, generator=gens if stochastic else None, **extra).prev_sample
        img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        out.append(img[:, 0] if c == 1 else img.transpose(0, 2, 3, 1))
    if not out:
        return np.zeros((0, size, size) if c == 1 else (0, size, size, 3), np.uint8)
    return np.concatenate(out)


def _generate_chunk(job: dict) -> dict:
    """One partition's images (a Dask task): returns the job with ``images`` filled in."""
    imgs = sample_images(job["path"], job["seeds"], job["labels"], sampler=job["sampler"], steps=job["steps"],
                         eta=job["eta"], batch_size=job["batch_size"], device=job["device"])
    return {**job, "images": imgs}


# ------------------------------------------------------------------------- near-copy search
def nearest_hamming(query: np.ndarray, ref: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each uint64 hash in ``query``: (min Hamming distance to ``ref``, its index). Exhaustive, chunked."""
    if len(ref) == 0:
        return np.full(len(query), 65, np.int64), np.full(len(query), -1, np.int64)
    dist = np.empty(len(query), np.int64)
    arg = np.empty(len(query), np.int64)
    step = max(1, (1 << 24) // max(1, len(ref)))
    for i in range(0, len(query), min(chunk, step)):
        d = np.bitwise_count(query[i:i + min(chunk, step), None] ^ ref[None, :])
        arg[i:i + len(d)] = d.argmin(1)
        dist[i:i + len(d)] = d.min(1)
    return dist, arg


def hamming_pairs_before(hashes: np.ndarray, t: int) -> list[list[tuple[int, int]]]:
    """For each i: [(j, distance)] with j < i and Hamming(h_i, h_j) <= t, j ascending
    (the all-pairs search of :mod:`curate.ops.hamming`)."""
    from curate.ops.hamming import pairs

    out: list[list[tuple[int, int]]] = [[] for _ in range(len(hashes))]
    ii, jj, dd = pairs(np.asarray(hashes, np.uint64), int(t))
    for i, j, d in sorted(zip(jj.tolist(), ii.tolist(), dd.tolist())):  # (later, earlier) with earlier < later
        out[i].append((j, d))
    return out


def real_nn_stats(real_hash: np.ndarray | None, real_emb: np.ndarray | None, n_query: int = 5000,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Nearest-other-real distances of a seeded sample of real rows: Hamming and cosine."""
    import faiss

    n = len(real_hash) if real_hash is not None else len(real_emb)
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, min(n_query, n), replace=False)) if n > 1 else np.zeros(0, np.int64)
    out = {}
    if real_hash is not None and len(q):
        d = np.empty(len(q), np.int64)
        for i in range(0, len(q), 512):
            dd = np.bitwise_count(real_hash[q[i:i + 512], None] ^ real_hash[None, :]).astype(np.int64)
            dd[np.arange(len(dd)), q[i:i + 512]] = 99  # not itself
            d[i:i + len(dd)] = dd.min(1)
        out["hamming"] = d
    if real_emb is not None and len(q):
        index = faiss.IndexFlatIP(real_emb.shape[1])
        index.add(real_emb)
        sims, ids = index.search(real_emb[q], 2)
        self_first = ids[:, 0] == q
        out["cosine"] = np.where(self_first, sims[:, 1], sims[:, 0])
    return out


def near_copy_filter(gen_ids: list[str], gen_pixel_hash: list[str], gen_phash: np.ndarray | None,
                     gen_emb: np.ndarray | None, real_ids: list[str], real_pixel_hash: list[str],
                     real_phash: np.ndarray | None, real_emb: np.ndarray | None, phash_t: int | None,
                     tau: float | None) -> tuple[np.ndarray, list[dict]]:
    """Return (accepted mask, decision rows for the rejected) for generated images in order.

    Tests per image, first hit wins: exact pixels, pHash <= ``phash_t``, cosine >= ``tau`` to the
    nearest real image (memorised); then the same tests against earlier *accepted* generated images
    (redundant). ``phash_t`` / ``tau`` None disable that test.
    """
    import faiss

    n = len(gen_ids)
    keep = np.ones(n, bool)
    rows: list[dict] = []

    def reject(i: int, method: str, partner: str, score: float, reason: str, test: str) -> None:
        keep[i] = False
        rows.append({"sample_id": gen_ids[i], "method": f"inflate.{method}", "keep": False,
                     "representative_id": partner, "score": float(score), "cluster_id": None,
                     "reason": f"{reason}:{test}"})

    # ---- against real
    real_by_pixels: dict[str, str] = {}
    for h, rid in zip(real_pixel_hash, real_ids):
        real_by_pixels.setdefault(h, rid)
    ham = ham_arg = sim = sim_arg = None
    if phash_t is not None and gen_phash is not None and real_phash is not None:
        ham, ham_arg = nearest_hamming(gen_phash, real_phash)
    if tau is not None and gen_emb is not None and real_emb is not None and len(real_emb):
        index = faiss.IndexFlatIP(real_emb.shape[1])
        index.add(real_emb)
        s, a = index.search(gen_emb, 1)
        sim, sim_arg = s[:, 0], a[:, 0]
    for i in range(n):
        if gen_pixel_hash[i] in real_by_pixels:
            reject(i, "memorisation", real_by_pixels[gen_pixel_hash[i]], 1.0, "memorised", "exact")
        elif ham is not None and ham[i] <= phash_t:
            reject(i, "memorisation", real_ids[ham_arg[i]], 1.0 - ham[i] / 64.0, "memorised", f"phash{ham[i]}")
        elif sim is not None and sim[i] >= tau:
            reject(i, "memorisation", real_ids[sim_arg[i]], sim[i], "memorised", "cosine")
    # ---- among generated (greedy in row order: the earlier accepted image wins)
    ham_nb = hamming_pairs_before(gen_phash, phash_t) if phash_t is not None and gen_phash is not None else None
    cos_nb: list[list[tuple[int, float]]] | None = None
    if tau is not None and gen_emb is not None and n:
        index = faiss.IndexFlatIP(gen_emb.shape[1])
        index.add(gen_emb)
        lims, dist, lab = index.range_search(gen_emb, float(tau) - 1e-6)
        cos_nb = [[(int(j), float(d)) for j, d in zip(lab[lims[i]:lims[i + 1]], dist[lims[i]:lims[i + 1]]) if j < i]
                  for i in range(n)]
    first_by_pixels: dict[str, int] = {}
    for i in range(n):
        if not keep[i]:
            continue
        j = first_by_pixels.get(gen_pixel_hash[i])
        if j is not None:
            reject(i, "redundancy", gen_ids[j], 1.0, "redundant", "exact")
            continue
        hit = next(((j, d) for j, d in (ham_nb[i] if ham_nb else []) if keep[j]), None)
        if hit is not None:
            reject(i, "redundancy", gen_ids[hit[0]], 1.0 - hit[1] / 64.0, "redundant", f"phash{hit[1]}")
            continue
        hit = next(((j, d) for j, d in (cos_nb[i] if cos_nb else []) if keep[j]), None)
        if hit is not None:
            reject(i, "redundancy", gen_ids[hit[0]], hit[1], "redundant", "cosine")
            continue
        first_by_pixels[gen_pixel_hash[i]] = i
    return keep, rows


# ------------------------------------------------------------------------------- the stage
class InflateGenerate(GlobalStage):
    """Generate ``n_images`` synthetic samples (new partitions ``syn-*``) and filter near-copies."""

    key: ClassVar[str] = "inflate.generate"
    inputs: ClassVar[tuple[str, ...]] = ("samples", "generator", "hashes")
    requires: ClassVar[tuple[str, ...]] = ("samples", "generator")
    outputs: ClassVar[tuple[str, ...]] = ("samples", REJECTIONS)

    class Params(StageParams):
        n_images: int = Field(10000, ge=1, description="images to generate (before the filter)")
        images_per_partition: int = Field(2000, ge=1, description="rows per syn-* partition (one Dask task each)")
        sampler: Literal["ddim", "ddpm"] = Field("ddim", description="ddim (Song et al. 2021) or ddpm "
                                                 "(ancestral, Ho et al. 2020)")
        steps: int = Field(50, ge=1, description="denoising steps")
        eta: float = Field(0.0, ge=0, le=1, description="DDIM eta: 0 deterministic, 1 DDPM-like noise")
        batch_size: int = Field(256, ge=1)
        classes: Literal["real", "uniform"] = Field("real", description="class-conditional generators: labels "
                                                    "drawn with the real label frequencies, or round-robin")
        seed: int | None = Field(None, description="base of the per-row seeds; default: the pipeline seed")
        device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda' ...")
        filter: bool = Field(True, description="reject memorised / redundant images")
        phash_threshold: int | None = Field(None, ge=0, le=64, description="pHash Hamming distance of a near-copy;"
                                            " default: calibrated on the real set (memorisation_quantile)")
        cosine_tau: float | None = Field(None, gt=0, le=1, description="embedding cosine of a near-copy; default:"
                                         " calibrated on the real set (memorisation_quantile)")
        memorisation_quantile: float = Field(0.01, gt=0, lt=0.5, description="calibration: a near-copy is closer "
                                             "to a real image than this share of real images are to their "
                                             "nearest other real image")
        use_phash: bool = Field(True, description="pHash test (curate.ops.phash)")
        use_embedding: bool = Field(True, description="embedding-cosine test (encoder of `embed`)")
        embed: EmbedParams | None = Field(None, description="encoder for the cosine test (same keys as the "
                                          "embed stage); default: the run's embed stage's encoder and fitted "
                                          "projection, or the embed defaults fitted on the real images")

        @model_validator(mode="after")
        def _check(self) -> "InflateGenerate.Params":
            if self.sampler == "ddpm" and self.eta:
                raise ValueError("eta applies to sampler: ddim only; remove it for ddpm")
            return self

    def output_schemas(self) -> dict[str, pa.Schema]:
        return {"samples": schemas.SAMPLES, REJECTIONS: schemas.DECISIONS}

    def _n_parts(self) -> int:
        return math.ceil(self.params.n_images / self.params.images_per_partition)

    def new_partitions(self, ctx: StageContext) -> list[str]:
        return [f"{SYN_PREFIX}{i:05d}" for i in range(self._n_parts())]

    # ---- helpers ---------------------------------------------------------------------------
    def _labels(self, gen: dict, real: pa.Table, seeds: list[int]) -> tuple[list[int | None], dict[int, str]]:
        import json

        names = {int(k): v for k, v in json.loads(gen["meta"] or "{}").get("label_names", {}).items()}
        k = gen["num_classes"]
        if k is None:
            return [None] * len(seeds), names
        lab = real.column("label").to_numpy(zero_copy_only=False)
        lab = lab[~np.isnan(lab.astype(np.float64))].astype(np.int64)
        freq = np.bincount(lab[(lab >= 0) & (lab < k)], minlength=k).astype(np.float64)
        if self.params.classes == "uniform" or freq.sum() == 0:
            return [i % k for i in range(len(seeds))], names
        p = freq / freq.sum()
        cdf = np.cumsum(p)
        # a per-row uniform from the row seed: labels do not depend on partitioning
        u = [(s % (1 << 53)) / float(1 << 53) for s in seeds]
        return [int(min(np.searchsorted(cdf, x, side="right"), k - 1)) for x in u], names

    def _real_hashes(self, ctx: StageContext, real: pa.Table) -> np.ndarray:
        from curate.ops.phash import decode, hash_arrays

        known: dict[str, int] = {}
        if ctx.has("hashes"):
            h = ctx.read_all("hashes", columns=["sample_id", "phash"])
            known = {s: v for s, v in zip(h.column("sample_id").to_pylist(), h.column("phash").to_pylist())
                     if v is not None}
        ids = real.column("sample_id").to_pylist()
        out = np.zeros(len(ids), np.uint64)
        missing = [i for i, s in enumerate(ids) if s not in known]
        for i, s in enumerate(ids):
            if s in known:
                out[i] = known[s]
        if missing:
            images = real.column("image")
            ph, _ = hash_arrays([decode(images[i].as_py()) for i in missing])
            out[missing] = ph
        ctx.count("real_phash_reused", len(ids) - len(missing))
        return out

    # ---- reduce -------------------------------------------------------------------------------
    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, Any]:
        p = self.params
        gen = read_generator(ctx)
        syn_pids = self.new_partitions(ctx)
        real_pids = [pid for pid in ctx.partitions if pid not in set(syn_pids)]
        real = ctx.read_all("samples", columns=["sample_id", "pixel_hash", "image", "channels", "label",
                                                "is_synthetic"])
        real = real.filter(pc.invert(real.column("is_synthetic")))
        base = ctx.seed if p.seed is None else p.seed
        seeds = [row_seed(base, i) for i in range(p.n_images)]
        labels, names = self._labels(gen, real, seeds)
        jobs = [{"pid": pid, "start": k * p.images_per_partition, "path": gen["path"], "sampler": p.sampler,
                 "steps": p.steps, "eta": p.eta, "batch_size": p.batch_size, "device": p.device,
                 "seeds": seeds[k * p.images_per_partition:(k + 1) * p.images_per_partition],
                 "labels": labels[k * p.images_per_partition:(k + 1) * p.images_per_partition]}
                for k, pid in enumerate(syn_pids)]
        if device_auto(p.device).startswith("cuda"):
            # one process drives the GPU with large batches; N worker processes would each hold a copy
            done = [_generate_chunk(j) for j in jobs]
        else:
            done = ctx.map(_generate_chunk, jobs)
        uri = f"generated://{gen['generator_id']}"
        rows, owner, arrays = [], [], []
        for job in done:
            for j, img in enumerate(job["images"]):
                i = job["start"] + j
                lab = job["labels"][j]
                rows.append(sample_row(img, uri, i, label=lab, label_name=names.get(lab) if lab is not None else None,
                                       is_synthetic=True, generator=gen["generator_id"], seed=job["seeds"][j]))
                owner.append(job["pid"])
                arrays.append(img)
        ctx.count("generated", len(rows))
        keep = np.ones(len(rows), bool)
        rejected: list[dict] = []
        if p.filter and rows:
            keep, rejected = self._filter(ctx, real, rows, arrays)
        for r in rejected:
            ctx.count(f"rejected_{r['reason'].split(':')[0]}")
        ctx.count("synthetic_added", int(keep.sum()))
        out: dict[str, Any] = {pid: {"samples": ctx.read("samples", pid)} for pid in real_pids}
        rej_by_id = {r["sample_id"]: r for r in rejected}
        for pid in syn_pids:
            idx = [i for i, o in enumerate(owner) if o == pid]
            out[pid] = {"samples": samples_table([rows[i] for i in idx if keep[i]]),
                        REJECTIONS: pa.Table.from_pylist([rej_by_id[rows[i]["sample_id"]] for i in idx if not keep[i]],
                                                         schema=schemas.DECISIONS)}
        for pid in ctx.partitions:  # e.g. an empty real partition
            out.setdefault(pid, {"samples": ctx.read("samples", pid)})
            if out[pid]["samples"] is None:
                out[pid]["samples"] = schemas.SAMPLES.empty_table()
        log.info("inflate.generate: %d generated, %d kept, %d rejected", len(rows), int(keep.sum()), len(rejected))
        return out

    def _filter(self, ctx: StageContext, real: pa.Table, rows: list[dict], arrays: list[np.ndarray]):
        from curate.ops.phash import hash_arrays

        p = self.params
        real_ids = real.column("sample_id").to_pylist()
        real_pix = real.column("pixel_hash").to_pylist()
        gen_ids = [r["sample_id"] for r in rows]
        gen_pix = [r["pixel_hash"] for r in rows]
        real_ph = gen_ph = real_emb = gen_emb = None
        if p.use_phash:
            real_ph = self._real_hashes(ctx, real)
            gen_ph, _ = hash_arrays(arrays)
        if p.use_embedding:
            channels = 3 if any(a.ndim == 3 for a in arrays) else 1
            emb = Embedder.for_stage(ctx, p.embed, real.column("image").to_pylist(), channels)
            real_emb = emb(real.column("image").to_pylist())
            gen_emb = emb([r["image"] for r in rows])
        nn = real_nn_stats(real_ph, real_emb, seed=ctx.seed)
        t, tau = p.phash_threshold, p.cosine_tau
        if p.use_phash and t is None and "hamming" in nn:
            t = int(np.floor(np.quantile(nn["hamming"], p.memorisation_quantile)))
        if p.use_embedding and tau is None and "cosine" in nn:
            tau = float(min(1.0, np.quantile(nn["cosine"], 1.0 - p.memorisation_quantile)))
        if not p.use_phash:
            t = None
        if not p.use_embedding:
            tau = None
        if t is not None:
            ctx.count("phash_threshold", int(t))
        if tau is not None:
            ctx.count("cosine_tau", round(float(tau), 6))
        log.info("inflate.generate: near-copy thresholds phash<=%s cosine>=%s", t, tau)
        return near_copy_filter(gen_ids, gen_pix, gen_ph, gen_emb, real_ids, real_pix, real_ph, real_emb, t, tau)


__all__ = ["InflateGenerate", "sample_images", "near_copy_filter", "row_seed", "nearest_hamming"]
