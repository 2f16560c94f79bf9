"""SimCLR training loop (Chen et al. 2020) with NT-Xent or DCL, on CPU or one GPU.

Recipe: two :class:`curate.load.augment.SimCLRAugment` views per image (batched,
on the device), a CIFAR-stem ResNet + projection head, AdamW (weight decay off
for BatchNorm and biases) with linear warm-up and a cosine decay to 0, bf16
autocast on CUDA only. Mined hard negatives (``pairs`` of ``mine.negatives``) are
encoded in the same step and appended to the in-batch negatives; MoCHi mixing is
optional. Per-sample weights (``sample_weight``: AdaInf real replication) weigh
each anchor's loss.

Checkpoints are one safetensors file: model weights (``model.*``), AdamW state
(``optim.*``), RNG states (``rng.*``) and in its metadata the config, the step,
the LR schedule and the data source position, so ``train(..., resume=path)``
continues with exactly the batch, augmentation and update it would have made.

Python API::

    from curate.train import TrainConfig, train
    result = train(images_uint8_nchw, TrainConfig(steps=500, batch_size=256), out="ssl.safetensors")
    result.model.encoder      # the trained ResNet trunk; result.losses per step
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from curate.errors import ConfigError
from curate.train.data import NegativeBank, as_batches
from curate.train.losses import MoCHi, contrastive_loss
from curate.train.model import ARCHS, SimCLRNet, build_encoder

FORMAT = "curate-ssl/1"


class MoCHiParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n_hard: int = Field(128, ge=2, description="hardest negatives per anchor to mix from (paper: 1024 of a 16k queue)")
    s: int = Field(64, ge=0, description="synthetic negatives mixed from two hard negatives (paper: 512)")
    s_prime: int = Field(32, ge=0, description="harder negatives mixed with the query (paper: 256)")
    beta_max: float = Field(0.5, gt=0, le=0.5, description="query share in s' mixes ~ U(0, beta_max)")
    start_step: int = Field(0, ge=0, description="mix only from this step on (the paper warms up first)")


class TrainConfig(BaseModel):
    """Everything that defines a training run (stored in every checkpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = Field("resnet18", description=f"one of {', '.join(ARCHS)}")
    proj_dim: int = Field(128, ge=1, description="projection head output (SimCLR: 128)")
    steps: int = Field(1000, ge=1, description="optimisation steps (the budget arms are compared at)")
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int | None = Field(None, ge=0, description="linear warm-up; default 5% of steps")
    loss: Literal["ntxent", "dcl"] = "ntxent"
    temperature: float = Field(0.5, gt=0, description="SimCLR CIFAR setting 0.5")
    image_size: int | None = Field(None, ge=4, description="crop output side; default: the data's size")
    in_channels: int | None = Field(None, ge=1, description="default: the data's channel count")
    crop_min_scale: float = Field(0.08, gt=0, le=1, description="SimCLR 0.08; AdaInf weak 0.2")
    jitter_p: float = Field(0.8, ge=0, le=1, description="SimCLR 0.8; AdaInf weak 0.4")
    jitter_strength: float = Field(1.0, ge=0, description="SimCLR 1.0; AdaInf weak 0.5")
    gray_p: float = Field(0.2, ge=0, le=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    hard_negatives: int = Field(0, ge=0, description="mined negatives per anchor appended to the in-batch ones "
                                "(from a NegativeBank; with ShardDataset(pairs='triplet') batches: any value > 0 uses "
                                "their one negative_image)")
    mochi: MoCHiParams | None = None
    seed: int = 0
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1' ...")
    bf16: bool = Field(True, description="bf16 autocast (CUDA only; ignored on CPU)")
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N steps (0: only at the end)")
    log_every: int = Field(10, ge=1, description="progress-bar refresh interval in steps")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        if v not in ARCHS:
            raise ValueError(f"unknown arch '{v}'; choose one of {', '.join(ARCHS)}")
        return v

    def augment_params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("crop_min_scale", "jitter_p", "jitter_strength", "gray_p", "flip_p")}


def make_config(cfg: TrainConfig | dict | None = None, **overrides: Any) -> TrainConfig:
    """A validated :class:`TrainConfig` from a config / dict plus keyword overrides (clear errors)."""
    base = cfg.model_dump() if isinstance(cfg, TrainConfig) else dict(cfg or {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**base)
    except ValidationError as err:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid training config: {msgs}") from None


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available; use --device cpu or auto")
    return torch.device(device)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


# ------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str, model: SimCLRNet, cfg: TrainConfig, step: int, optimizer=None, scheduler=None,
                    data_state: Any = None, generators: dict[str, torch.Generator] | None = None,
                    extra: dict[str, str] | None = None) -> None:
    """Write model (+ optimizer, RNG, schedule, data position) to ``path`` atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": cfg.model_dump_json(), "step": str(step), "arch": cfg.arch,
            "in_channels": str(model.encoder.in_channels), "feature_dim": str(model.encoder.feature_dim),
            "image_size": str(cfg.image_size), "data_state": json.dumps(data_state)}
    if optimizer is not None:
        sd = optimizer.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                t = v if torch.is_tensor(v) else torch.tensor(v)
                tensors[f"optim.{pid}.{k}"] = t.detach().cpu().contiguous().clone()
        meta["optim_groups"] = json.dumps(sd["param_groups"])
    if scheduler is not None:
        meta["scheduler"] = json.dumps(scheduler.state_dict())
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    for name, g in (generators or {}).items():
        tensors[f"rng.{name}"] = g.get_state()
    meta.update(extra or {})
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint '{path}' not found; train one with `curate train-encoder RUN_DIR --out {path}`")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(path)
    except Exception as err:  # noqa: BLE001 - a corrupt / foreign file
        raise ConfigError(f"'{path}' is not a readable safetensors checkpoint: {err}") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"'{path}' is not a curate SSL checkpoint (format {meta.get('format')!r}, "
                          f"expected {FORMAT!r}); produce one with `curate train-encoder`")
    return tensors, meta


def load_model(path: str, device: str | torch.device = "cpu") -> tuple[SimCLRNet, TrainConfig, dict[str, str]]:
    """The full :class:`SimCLRNet` of a checkpoint (eval mode), its config and metadata."""
    tensors, meta = read_checkpoint(path)
    cfg = TrainConfig(**json.loads(meta["config"]))
    model = SimCLRNet(cfg.arch, int(meta["in_channels"]), cfg.proj_dim)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return model.to(device).eval(), cfg, meta


def load_encoder(path: str, device: str | torch.device = "cpu"):
    """Only the encoder trunk of a checkpoint (eval mode) and its metadata (image_size, in_channels, ...)."""
    tensors, meta = read_checkpoint(path)
    cfg = TrainConfig(**json.loads(meta["config"]))
    enc = build_encoder(cfg.arch, int(meta["in_channels"]))
    enc.load_state_dict({k[14:]: v for k, v in tensors.items() if k.startswith("model.encoder.")})
    return enc.to(device).eval(), meta


# ------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    model: SimCLRNet
    config: TrainConfig
    losses: list[float]
    steps: int
    seconds: float
    images_per_s: float
    checkpoint: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def _param_groups(model: torch.nn.Module, wd: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def train(data: Any, cfg: TrainConfig | dict | None = None, *, out: str | None = None, resume: str | None = None,
          negatives: NegativeBank | None = None, progress: bool = True, **overrides: Any) -> TrainResult:
    """Train a SimCLR model on ``data`` for ``cfg.steps`` steps.

    ``data``: uint8 (N, C, H, W) tensor / array, a ``curate.load.ShardDataset`` (or any
    iterable of per-sample dicts), an iterable of batch dicts / uint8 batches, or a
    :class:`~curate.train.data.TensorBatches`. ``out``: checkpoint path written at the
    end (and every ``checkpoint_every`` steps). ``resume``: a checkpoint to continue
    from (same data source). ``negatives``: mined hard negatives, used when
    ``cfg.hard_negatives > 0`` and batches carry ``sample_id``.
    """
    from curate.load.augment import SimCLRAugment

    given = cfg
    cfg = make_config(cfg, **overrides)
    start, state = 0, None
    if resume:  # the checkpoint's config; only the step budget and the device may change
        state, meta = read_checkpoint(resume)
        explicit_steps = overrides.get("steps") or (given.get("steps") if isinstance(given, dict)
                                                    else getattr(given, "steps", None))
        cfg = make_config(json.loads(meta["config"]), steps=explicit_steps, device=overrides.get("device"))
        start = int(meta["step"])
        if start >= cfg.steps:
            raise ConfigError(f"checkpoint '{resume}' is already at step {start} >= steps={cfg.steps}; "
                              f"pass a larger --steps to continue")
    device = resolve_device(cfg.device)
    source = as_batches(data, cfg.batch_size, cfg.seed)
    if resume and hasattr(source, "load_state_dict") and meta.get("data_state") not in (None, "null"):
        source.load_state_dict(json.loads(meta["data_state"]))
    it = iter(source)
    first = next(it)
    c, h, w = first["image"].shape[1:]
    if cfg.in_channels is None or cfg.image_size is None:
        cfg = make_config(cfg, in_channels=cfg.in_channels or int(c), image_size=cfg.image_size or int(max(h, w)))
    if cfg.in_channels != c:
        raise ConfigError(f"data has {c} channels but the config says in_channels={cfg.in_channels}")

    torch.manual_seed(cfg.seed)
    model = SimCLRNet(cfg.arch, cfg.in_channels, cfg.proj_dim).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(0.05 * cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, warmup))
    gens = {"augment": torch.Generator().manual_seed(cfg.seed + 1), "mochi": torch.Generator().manual_seed(cfg.seed + 2)}
    aug = SimCLRAugment(cfg.image_size, generator=gens["augment"], **cfg.augment_params())
    mochi = None
    if cfg.mochi is not None:
        mochi = MoCHi(cfg.mochi.n_hard, cfg.mochi.s, cfg.mochi.s_prime, cfg.mochi.beta_max)
    if state is not None:
        model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        if "optim_groups" in meta:
            groups = json.loads(meta["optim_groups"])
            ost: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in state.items():
                if k.startswith("optim."):
                    _, pid, name = k.split(".", 2)
                    ost.setdefault(int(pid), {})[name] = v
            opt.load_state_dict({"state": ost, "param_groups": groups})
        if "scheduler" in meta:
            sched.load_state_dict(json.loads(meta["scheduler"]))
        torch.set_rng_state(state["rng.torch"])
        if "rng.cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng.cuda"])
        for name, g in gens.items():
            if f"rng.{name}" in state:
                g.set_state(state[f"rng.{name}"])
    use_negs = negatives is not None and cfg.hard_negatives > 0
    use_bf16 = cfg.bf16 and device.type == "cuda"

    def save(step: int) -> None:
        save_checkpoint(out, model, cfg, step, opt, sched, source.state_dict() if hasattr(source, "state_dict")
                        else None, gens)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="simclr", unit="step", dynamic_ncols=True)
    model.train()
    losses: list[torch.Tensor] = []
    n_images, t0, t_log, n_log = 0, time.perf_counter(), time.perf_counter(), 0
    batch = first
    for step in range(start, cfg.steps):
        if batch is None:
            batch = next(it)
        x = batch["image"].to(device, non_blocking=True)
        wts = batch.get("sample_weight")
        wts = None if wts is None else torch.as_tensor(wts, dtype=torch.float32).to(device)
        n = x.shape[0]
        v1, v2 = aug(x), aug(x)
        views = [v1, v2]
        nimg = neg_mask = None
        if use_negs and batch.get("sample_id") is not None:  # mined ids -> images (run dir pairs table)
            nimg, neg_mask = negatives.lookup(list(batch["sample_id"]))
        elif cfg.hard_negatives > 0 and batch.get("negative_image") is not None:  # ShardDataset(pairs="triplet")
            nimg = torch.as_tensor(batch["negative_image"])[:, None]
            has = batch.get("has_negative")
            neg_mask = (torch.ones(n, dtype=torch.bool) if has is None else torch.as_tensor(has).bool().cpu())[:, None]
        if nimg is not None:
            if nimg.shape[-2:] != x.shape[-2:]:
                raise ConfigError(f"negative images are {tuple(nimg.shape[-2:])} but the batch is {tuple(x.shape[-2:])}")
            views.append(aug(nimg.flatten(0, 1).to(device)))
        inp = torch.cat(views)
        if device.type == "cuda":
            inp = inp.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext():
            z = model(inp)
        z = z.float()
        z1, z2 = z[:n], z[n:2 * n]
        extra = z[2 * n:].view(n, nimg.shape[1], -1) if nimg is not None else None
        loss = contrastive_loss(z1, z2, cfg.temperature, loss=cfg.loss, weights=wts, extra_negatives=extra,
                                extra_mask=None if neg_mask is None else neg_mask.to(device),
                                mochi=mochi if (mochi is not None and step >= cfg.mochi.start_step) else None,
                                generator=gens["mochi"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
        n_images += n
        n_log += n
        batch = None
        done = step + 1
        if bar is not None and (done % cfg.log_every == 0 or done == cfg.steps):
            now = time.perf_counter()
            bar.set_postfix(loss=f"{losses[-1].item():.4f}", img_s=f"{n_log / max(now - t_log, 1e-9):.0f}",
                            lr=f"{sched.get_last_lr()[0]:.2e}")
            bar.update(done - bar.n)
            t_log, n_log = now, 0
        if out and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            save(done)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    if out:
        save(cfg.steps)
    model.eval()
    vals = torch.stack(losses).cpu().tolist() if losses else []
    return TrainResult(model=model, config=cfg, losses=vals, steps=cfg.steps - start, seconds=seconds,
                       images_per_s=n_images / max(seconds, 1e-9), checkpoint=out,
                       stats={"device": str(device), "start_step": start, "images_seen": n_images})
