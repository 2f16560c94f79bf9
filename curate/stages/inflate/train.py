"""inflate.train / inflate.load: the diffusion generator behind inflation.

``inflate.train`` fits a diffusers ``UNet2DModel`` with a ``DDPMScheduler``
(Ho et al. 2020, "Denoising Diffusion Probabilistic Models": epsilon
prediction, linear betas 1e-4..0.02, T = 1000) on the kept real samples,
optionally class-conditional (``num_class_embeds``), keeps EMA weights (decay
0.9999 with warm-up, as in DDPM), trains in bf16 autocast on CUDA only and
writes resumable checkpoints (safetensors + JSON via :mod:`curate.statefile`; nothing is unpickled). ``inflate.load`` points at an existing local
diffusers pipeline directory instead (never a hub download).

Both are global stages that write one row of the ``generator`` table (id,
pipeline directory, image geometry, classes) into the first partition and
empty tables elsewhere; they never touch ``samples``, so the samples overlay
passes through unchanged. The pipeline directory is the standard
``DDPMPipeline`` layout (``model_index.json``, ``unet/``, ``scheduler/``) plus
``curate.json`` (label names, training stats), so it loads with
``DDPMPipeline.from_pretrained(path)`` too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curate import imaging, io, statefile
from curate.config import StageParams, execution_field
from curate.encoders.base import file_digest
from curate.errors import ConfigError, StageError
from curate.stage import GlobalStage, StageContext

log = logging.getLogger("curate.inflate")

GENERATOR = pa.schema(
    [
        pa.field("generator_id", pa.string(), nullable=False),
        # local diffusers pipeline directory (model_index.json, unet/, scheduler/)
        pa.field("path", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # "trained" | "loaded"
        pa.field("image_size", pa.int32(), nullable=False),
        pa.field("channels", pa.int8(), nullable=False),
        pa.field("num_classes", pa.int32()),  # null: unconditional
        pa.field("train_steps", pa.int64()),
        pa.field("final_loss", pa.float64()),
        pa.field("n_train", pa.int64()),
        # JSON: label names, training parameters, timings
        pa.field("meta", pa.string()),
    ]
)

PIPELINE_DIR = "pipeline"
CKPT_DIR = "checkpoints"
STATE = "train_state"  # step-*/train_state.safetensors + train_state.json (curate.statefile)


def device_auto(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------ loading pipelines
def resolve_pipeline(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``(root, unet_subfolder)`` of a local diffusers pipeline or bare UNet directory; ConfigError if unusable."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"inflate: diffusion pipeline directory '{root}' does not exist. Train one with "
                          f"`stage: inflate.train`, or point `path:` at a local diffusers pipeline directory "
                          f"(model_index.json + unet/ + scheduler/); hub downloads are never made")
    if (root / "unet" / "config.json").is_file():
        sub = "unet"
    elif (root / "config.json").is_file():
        sub = None
    else:
        raise ConfigError(f"inflate: '{root}' is not a diffusers pipeline: expected unet/config.json "
                          f"(DDPMPipeline layout) or config.json of a UNet2DModel")
    cfg = json.loads(((root / sub) if sub else root).joinpath("config.json").read_text())
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ConfigError(f"inflate: '{root}' holds a {cfg.get('_class_name')}; only UNet2DModel pipelines "
                          f"(DDPM / DDIM, unconditional or class-conditional) are supported")
    return root, sub


def _weights_file(root: Path, sub: str | None) -> Path:
    """The UNet's safetensors weights; pickle-based ``*.bin`` is refused (ConfigError)."""
    d = (root / sub) if sub else root
    weights = sorted(d.glob("*.safetensors"))
    if not weights:
        pickled = "; pickle-based *.bin weights are never loaded: convert them with `UNet2DModel.from_pretrained(dir)" \
                  ".save_pretrained(dir, safe_serialization=True)` where you trust them" if any(d.glob("*.bin")) else ""
        raise ConfigError(f"inflate: no UNet weights (*.safetensors) in '{d}'{pickled}")
    return weights[0]


def generator_id_of(path: str | os.PathLike) -> str:
    """A content id of a pipeline: its UNet weights digest."""
    return f"ddpm-{file_digest(str(_weights_file(*resolve_pipeline(path))))}"


def load_unet(path: str | os.PathLike, device: str = "cpu"):
    """Load ``(unet, scheduler_config, curate_meta)`` from a local directory, offline only."""
    from diffusers import DDPMScheduler, UNet2DModel

    root, sub = resolve_pipeline(path)
    _weights_file(root, sub)  # ConfigError unless safetensors weights are there
    unet = UNet2DModel.from_pretrained(str(root), subfolder=sub, local_files_only=True, low_cpu_mem_usage=False,
                                       use_safetensors=True)
    unet.to(device).eval()
    if (root / "scheduler" / "scheduler_config.json").is_file():
        sched_cfg = dict(DDPMScheduler.load_config(str(root), subfolder="scheduler", local_files_only=True))
    else:
        sched_cfg = dict(DDPMScheduler().config)  # DDPM defaults (Ho et al. 2020)
    meta = {}
    if (root / "curate.json").is_file():
        meta = json.loads((root / "curate.json").read_text())
    return unet, sched_cfg, meta


def generator_row(path: str | os.PathLike, kind: str, generator_id: str | None = None, **extra: Any) -> dict:
    root, sub = resolve_pipeline(path)
    cfg = json.loads(((root / sub) if sub else root).joinpath("config.json").read_text())
    size = cfg.get("sample_size", 32)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    meta = json.loads((root / "curate.json").read_text()) if (root / "curate.json").is_file() else {}
    ncls = cfg.get("num_class_embeds")
    return {
        "generator_id": generator_id or generator_id_of(root),
        "path": str(root.resolve()),
        "kind": kind,
        "image_size": size,
        "channels": int(cfg.get("out_channels", cfg.get("in_channels", 3))),
        "num_classes": None if ncls is None else int(ncls),
        "train_steps": extra.get("train_steps", meta.get("train_steps")),
        "final_loss": extra.get("final_loss", meta.get("final_loss")),
        "n_train": extra.get("n_train", meta.get("n_train")),
        "meta": json.dumps(meta, sort_keys=True),
    }


def _first_partition_only(ctx: StageContext, row: dict) -> dict[str, pa.Table]:
    out = {pid: GENERATOR.empty_table() for pid in ctx.partitions}
    if ctx.partitions:
        out[ctx.partitions[0]] = pa.Table.from_pylist([row], schema=GENERATOR)
    return out


# ------------------------------------------------------------------------- training
def real_training_set(samples: pa.Table, image_size: int | None, channels: int | None
                      ) -> tuple[np.ndarray, np.ndarray | None, dict[int, str], int, int]:
    """Decode the real rows to uint8 ``(N, C, S, S)``; labels (or None), label names, size, channels."""
    real = samples.filter(pc.invert(samples.column("is_synthetic")))
    if real.num_rows == 0:
        raise StageError("inflate.train", "(all)", "no real samples to train on; run ingest (and dedup) first")
    if image_size is None:
        sizes = set(zip(real.column("height").to_pylist(), real.column("width").to_pylist()))
        h, w = max(sizes)
        image_size = h if (len(sizes) == 1 and h == w and h % 4 == 0) else 32
    if channels is None:
        channels = 3 if pc.max(real.column("channels")).as_py() == 3 else 1
    images = real.column("image").to_pylist()
    out = np.empty((len(images), channels, image_size, image_size), np.uint8)
    for i, data in enumerate(images):
        a = imaging.decode_resize(data, image_size, channels)
        out[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a
    labels = real.column("label").to_numpy(zero_copy_only=False)
    names: dict[int, str] = {}
    if real.column("label").null_count == real.num_rows:
        labels = None
    else:
        labels = np.where(np.isnan(labels.astype(np.float64)), -1, labels).astype(np.int64)
        for lab, name in zip(real.column("label").to_pylist(), real.column("label_name").to_pylist()):
            if lab is not None and name is not None:
                names.setdefault(int(lab), name)
    return out, labels, names, image_size, channels


def build_unet(image_size: int, channels: int, block_out_channels: tuple[int, ...], layers_per_block: int,
               attention: bool, num_classes: int | None):
    from diffusers import UNet2DModel

    n = len(block_out_channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if attention:  # self-attention at the lowest resolution, as in DDPM's 16x16 attention
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels,
                       layers_per_block=layers_per_block, block_out_channels=tuple(block_out_channels),
                       down_block_types=tuple(down), up_block_types=tuple(up),
                       norm_num_groups=min(32, min(block_out_channels)),
                       num_class_embeds=num_classes)


def _latest_checkpoint(ckpt_root: Path, fingerprint: str) -> Path | None:
    """Newest ``step-*`` checkpoint of this fingerprint in the safetensors + JSON format.

    Directories without it (e.g. a pickled ``state.pt`` of an older version or a planted one) are
    ignored, never unpickled."""
    if not ckpt_root.is_dir():
        return None
    best = None
    for d in sorted(ckpt_root.glob("step-*")):
        state = d / "state.json"
        try:
            ok = json.loads(state.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError, AttributeError):
            ok = False
        if ok and statefile.exists(str(d / STATE)):
            best = d
        elif ok:
            log.warning("inflate.train: ignoring checkpoint %s (not in the safetensors format)", d)
    return best


def train_diffusion(data: np.ndarray, labels: np.ndarray | None, out_dir: str | os.PathLike, *, steps: int,
                    batch_size: int = 128, lr: float = 2e-4, warmup_steps: int = 500,
                    block_out_channels: tuple[int, ...] = (64, 128, 128), layers_per_block: int = 2,
                    attention: bool = True, ema_decay: float = 0.9999, hflip: bool = True,
                    num_train_timesteps: int = 1000, checkpoint_every: int = 1000, keep_checkpoints: int = 2,
                    seed: int = 0, device: str = "auto", progress: bool = True, label_names: dict | None = None,
                    fingerprint: str = "", log_every: int = 50) -> dict[str, Any]:
    """Train a DDPM on ``data`` (uint8 ``(N, C, S, S)``) and save the EMA pipeline to ``out_dir/pipeline``.

    Resumes from the newest checkpoint in ``out_dir/checkpoints`` whose fingerprint matches. Returns
    training stats (``losses`` every ``log_every`` steps, ``final_loss``).
    """
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    dev = device_auto(device)
    out = Path(out_dir)
    ckpt_root = out / CKPT_DIR
    n, c, s, _ = data.shape
    num_classes = int(labels.max()) + 1 if labels is not None and (labels >= 0).all() else None
    torch.manual_seed(seed)
    unet = build_unet(s, c, tuple(block_out_channels), layers_per_block, attention, num_classes).to(dev)
    sched = DDPMScheduler(num_train_timesteps=num_train_timesteps)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=ema_decay, use_ema_warmup=True, power=2 / 3)
    start, losses = 0, []
    rng = np.random.default_rng(seed)
    ckpt = _latest_checkpoint(ckpt_root, fingerprint)
    if ckpt is not None:
        state = statefile.load(str(ckpt / STATE))
        unet.load_state_dict(state["unet"])  # copies onto the device of the live parameters
        opt.load_state_dict(state["opt"])  # optimizer state follows its parameters' device
        ema.load_state_dict(state["ema"])
        ema.to(dev)
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start, losses = state["step"], state["losses"]
        log.info("inflate.train: resuming from %s (step %d)", ckpt, start)
    data_t = torch.from_numpy(data)  # uint8 on CPU; batches move to the device
    lab_t = torch.from_numpy(labels) if num_classes is not None else None
    use_bf16 = dev.startswith("cuda")
    unet.train()
    bar = tqdm(total=steps, initial=start, desc="inflate.train", disable=not progress, leave=False)
    running, t0 = [], time.perf_counter()

    def save_checkpoint(step: int) -> None:
        d = ckpt_root / f"step-{step:08d}"
        tmp = ckpt_root / f".tmp-step-{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        statefile.save({"unet": unet.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict(),
                        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                        "losses": losses}, str(tmp / STATE))
        (tmp / "state.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint}))
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        old = sorted(ckpt_root.glob("step-*"))[:-keep_checkpoints]
        for o in old:
            shutil.rmtree(o, ignore_errors=True)

    for step in range(start, steps):
        idx = torch.from_numpy(rng.integers(0, n, size=min(batch_size, n)))
        x0 = data_t[idx].to(dev, non_blocking=True).float().div_(127.5).sub_(1.0)
        if hflip:
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(dev)
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        noise = torch.randn_like(x0)
        t = torch.randint(0, num_train_timesteps, (len(idx),), device=dev)
        xt = sched.add_noise(x0, noise, t)
        y = lab_t[idx].to(dev) if lab_t is not None else None
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / max(1, warmup_steps))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            pred = unet(xt, t, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        running.append(float(loss.detach()))
        if len(running) == log_every or step == steps - 1:
            losses.append(float(np.mean(running)))
            running = []
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.update(1)
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save_checkpoint(step + 1)
    bar.close()
    seconds = time.perf_counter() - t0
    # the pipeline carries the EMA weights
    ema.copy_to(unet.parameters())
    unet.eval()
    pipe_dir = out / PIPELINE_DIR
    tmp = out / f".tmp-{PIPELINE_DIR}"
    shutil.rmtree(tmp, ignore_errors=True)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(str(tmp))
    stats = {"train_steps": steps, "final_loss": losses[-1] if losses else None, "losses": losses, "n_train": n,
             "seconds": round(seconds, 2), "device": dev, "bf16": use_bf16, "fingerprint": fingerprint,
             "label_names": {str(k): v for k, v in (label_names or {}).items()}}
    (tmp / "curate.json").write_text(json.dumps(stats, indent=2, sort_keys=True))
    shutil.rmtree(pipe_dir, ignore_errors=True)
    tmp.rename(pipe_dir)
    return stats


class InflateTrain(GlobalStage):
    """Train a DDPM (diffusers UNet2DModel + DDPMScheduler) on the kept real samples.

    Defaults follow DDPM (Ho et al. 2020) scaled down: T = 1000 linear betas, Adam lr 2e-4 with
    500 warm-up steps, EMA 0.9999 (with warm-up), grad clip 1, random horizontal flips, attention at
    the lowest resolution. Checkpoints every ``checkpoint_every`` steps to
    ``RUN_DIR/NN_inflate_train/checkpoints``; a rerun resumes from the newest one of the same
    configuration and data. The EMA pipeline goes to ``RUN_DIR/NN_inflate_train/pipeline``.
    """

    key: ClassVar[str] = "inflate.train"
    inputs: ClassVar[tuple[str, ...]] = ("samples",)
    outputs: ClassVar[tuple[str, ...]] = ("generator",)

    class Params(StageParams):
        steps: int = Field(20000, ge=1, description="optimisation steps")
        batch_size: int = Field(128, ge=1)
        lr: float = Field(2e-4, gt=0)
        warmup_steps: int = Field(500, ge=0)
        image_size: int | None = Field(None, ge=8, description="training resolution; default: the real size "
                                       "(if square and divisible by 4), else 32")
        channels: Literal[1, 3] | None = Field(None, description="default: 3 if any real image is RGB, else 1")
        block_out_channels: tuple[int, ...] = Field((64, 128, 128), min_length=1)
        layers_per_block: int = Field(2, ge=1)
        attention: bool = Field(True, description="self-attention blocks at the lowest resolution")
        class_conditional: bool = Field(True, description="condition on `label` (num_class_embeds) when every "
                                        "real sample has one")
        ema_decay: float = Field(0.9999, gt=0, lt=1)
        hflip: bool = Field(True, description="random horizontal flips (DDPM's CIFAR-10 setting)")
        num_train_timesteps: int = Field(1000, ge=10)
        checkpoint_every: int = Field(1000, ge=0, description="0: no intermediate checkpoints")
        device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1' ...")
        seed: int | None = Field(None, description="default: the pipeline seed")
        progress: bool = execution_field(True, description="tqdm progress bar")

        @field_validator("block_out_channels")
        @classmethod
        def _channels(cls, v: tuple[int, ...]) -> tuple[int, ...]:
            if any(c % min(32, min(v)) for c in v):
                raise ValueError(f"every block width must be a multiple of {min(32, min(v))} (GroupNorm groups)")
            return v

    def output_schemas(self) -> dict[str, pa.Schema]:
        return {"generator": GENERATOR}

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, pa.Table]:
        p = self.params
        samples = ctx.read_all("samples", columns=["sample_id", "image", "height", "width", "channels", "label",
                                                   "label_name", "is_synthetic"])
        data, labels, names, size, ch = real_training_set(samples, p.image_size, p.channels)
        levels = len(p.block_out_channels) - 1
        if size % (2 ** levels):
            raise ConfigError(f"inflate.train: image_size {size} is not divisible by 2^{levels} "
                              f"({len(p.block_out_channels)} resolution levels); set image_size or fewer blocks")
        if not p.class_conditional or (labels is not None and (labels < 0).any()):
            labels = None
        ids = samples.filter(pc.invert(samples.column("is_synthetic"))).column("sample_id").to_pylist()
        fingerprint = hashlib.sha256(json.dumps([p.model_dump(mode="json", exclude={"progress", "name"}),
                                                 hashlib.sha256("\n".join(ids).encode()).hexdigest()],
                                                sort_keys=True).encode()).hexdigest()[:16]
        out_dir = io.join(ctx.run_dir, ctx.stage)
        stats = train_diffusion(data, labels, out_dir, steps=p.steps, batch_size=p.batch_size, lr=p.lr,
                                warmup_steps=p.warmup_steps, block_out_channels=p.block_out_channels,
                                layers_per_block=p.layers_per_block, attention=p.attention,
                                ema_decay=p.ema_decay, hflip=p.hflip, num_train_timesteps=p.num_train_timesteps,
                                checkpoint_every=p.checkpoint_every, seed=ctx.seed if p.seed is None else p.seed,
                                device=p.device, progress=p.progress, label_names=names, fingerprint=fingerprint)
        ctx.count("train_samples", stats["n_train"])
        ctx.count("train_steps", stats["train_steps"])
        row = generator_row(io.join(out_dir, PIPELINE_DIR), "trained")
        return _first_partition_only(ctx, row)


class InflateLoad(GlobalStage):
    """Use an existing local diffusers pipeline directory (DDPMPipeline / DDIMPipeline layout, or a bare
    UNet2DModel directory) as the generator. Offline only: a missing path is a configuration error."""

    key: ClassVar[str] = "inflate.load"
    inputs: ClassVar[tuple[str, ...]] = ("samples",)
    outputs: ClassVar[tuple[str, ...]] = ("generator",)

    class Params(StageParams):
        path: str = Field(..., description="local diffusers pipeline directory (model_index.json, unet/, "
                          "scheduler/); never downloaded")
        generator_id: str | None = Field(None, description="default: ddpm-<sha256 of the UNet weights>")

        @field_validator("path")
        @classmethod
        def _exists(cls, v: str) -> str:
            try:
                _weights_file(*resolve_pipeline(v))
            except ConfigError as err:
                raise ValueError(str(err)) from None
            return v

    def output_schemas(self) -> dict[str, pa.Schema]:
        return {"generator": GENERATOR}

    def reduce(self, ctx: StageContext, mapped: dict[str, pa.Table]) -> dict[str, pa.Table]:
        row = generator_row(self.params.path, "loaded", self.params.generator_id)
        return _first_partition_only(ctx, row)


def read_generator(ctx: StageContext) -> dict:
    """The upstream generator row (from inflate.train or inflate.load); ConfigError when there is none."""
    if not ctx.has("generator"):
        raise ConfigError(f"{ctx.stage_key}: no generator upstream; put `stage: inflate.train` or "
                          f"`stage: inflate.load` (path: DIR) before it in the pipeline")
    parts = [ctx.read("generator", pid) for pid in ctx.partition_ids("generator")]
    rows = [r for t in parts if t is not None for r in t.to_pylist()]
    if not rows:
        raise ConfigError(f"{ctx.stage_key}: the upstream generator stage wrote no generator row")
    return rows[-1]


__all__ = ["InflateTrain", "InflateLoad", "GENERATOR", "load_unet", "read_generator", "train_diffusion",
           "resolve_pipeline", "device_auto"]
