"""Training sets ("arms") compared at an equal optimisation-step budget.

An :class:`Arm` is a name plus the data to pretrain on: a uint8 (N, C, H, W)
tensor, or ``data(seed)`` returning anything :func:`curate.train.train` accepts
(tensor, ``TensorBatches`` with per-sample weights, a ``ShardDataset`` ...), and
optional training overrides (augmentation only: AdaInf's weak augmentation for
an inflated arm). Steps and batch size are never per-arm: that is the budget.

From a run directory (:func:`run_arms`):

* ``full``     - every ingested (real) sample;
* ``curated``  - the kept set (the ``samples`` overlay after ``dedup.apply``, real rows);
* ``random``   - a random subset of ``full`` with as many samples as ``curated``,
  redrawn for every seed (the SemDeDup / "Less is More" control);
* ``inflated`` - kept real + synthetic rows (``inflate.generate``) with AdaInf's
  weak augmentation (crop min scale 0.2, jitter p 0.4, strength 0.5; Zhang et
  al. 2024). The builder is pluggable: ``register_arm("inflated", builder)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import torch

from curate.errors import ConfigError

BUDGET_KEYS = {"steps", "batch_size", "warmup_steps", "lr", "seed"}
ADAINF_WEAK = {"crop_min_scale": 0.2, "jitter_p": 0.4, "jitter_strength": 0.5}


@dataclass
class Arm:
    """One training set. ``data``: uint8 tensor or ``seed -> data`` for :func:`curate.train.train`."""

    name: str
    data: torch.Tensor | Callable[[int], Any]
    n_samples: int | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        bad = BUDGET_KEYS & set(self.train_overrides)
        if bad:
            raise ConfigError(f"arm '{self.name}': {sorted(bad)} cannot differ between arms (equal budget); "
                              f"override augmentation / loss settings only")
        if self.n_samples is None and isinstance(self.data, torch.Tensor):
            self.n_samples = int(self.data.shape[0])

    def materialise(self, seed: int) -> Any:
        return self.data(seed) if callable(self.data) else self.data


@dataclass
class RunData:
    """What arm builders see: a run's real samples decoded once, and the kept / synthetic subsets."""

    run_dir: str
    images: torch.Tensor  # every row of the latest samples overlay + removed rows, decoded
    ids: list[str]
    ingested: torch.Tensor  # row indices (into images) of the ingested real samples
    kept: torch.Tensor  # row indices of the kept real samples
    synthetic: torch.Tensor  # row indices of the synthetic samples (inflate)
    image_size: int
    channels: int


Builder = Callable[[RunData], Arm]


def _full(d: RunData) -> Arm:
    return Arm("full", d.images[d.ingested], description="every ingested sample")


def _curated(d: RunData) -> Arm:
    return Arm("curated", d.images[d.kept], description="the kept set after dedup.apply")


def _random(d: RunData) -> Arm:
    pool, n = d.images[d.ingested], int(d.kept.numel())

    def draw(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(10_007 + seed)
        return pool[torch.randperm(pool.shape[0], generator=g)[:n]]

    return Arm("random", draw, n_samples=n, description=f"a random {n} of the {pool.shape[0]} ingested samples, "
                                                          f"redrawn per seed")


def _inflated(d: RunData) -> Arm:
    if d.synthetic.numel() == 0:
        raise ConfigError(f"arm 'inflated': run '{d.run_dir}' has no synthetic samples; add inflate stages to "
                          f"its pipeline")
    rows = torch.cat([d.kept, d.synthetic])
    return Arm("inflated", d.images[rows], train_overrides=dict(ADAINF_WEAK),
               description=f"kept real + {d.synthetic.numel()} synthetic, AdaInf weak augmentation")


def _adainf(d: RunData) -> Arm:
    """Kept real rows x the run's AdaInf replication + synthetic rows, recommended augmentation."""
    from curate.stages.inflate.adainf import adainf_arm

    return adainf_arm(d)


_BUILDERS: dict[str, Builder] = {"full": _full, "curated": _curated, "random": _random, "inflated": _inflated,
                                 "adainf": _adainf}


def register_arm(name: str, builder: Builder) -> None:
    """Add or replace an arm builder (``RunData -> Arm``)."""
    _BUILDERS[name] = builder


def arm_names() -> list[str]:
    return list(_BUILDERS)


def load_run_data(run_dir: str, image_size: int | None = None, channels: int | None = None,
                  max_auto_size: int = 96) -> RunData:
    from curate.train.data import images_tensor, run_samples

    cols = ["sample_id", "image", "is_synthetic", "height", "width", "channels"]
    ingested = run_samples(run_dir, "ingested", columns=cols)
    kept = run_samples(run_dir, "kept", columns=cols)
    ing_ids = ingested.column("sample_id").to_pylist()
    known = set(ing_ids)
    extra = kept.filter(pc.invert(pc.is_in(kept.column("sample_id"), pa.array(list(known), pa.string()))))
    table = pa.concat_tables([ingested, extra])
    ids = table.column("sample_id").to_pylist()
    row = {s: i for i, s in enumerate(ids)}
    syn = table.column("is_synthetic").to_pylist()
    size = image_size or min(max_auto_size, max(pc.max(table.column("height")).as_py(),
                                                pc.max(table.column("width")).as_py()))
    ch = channels or (3 if pc.any(pc.equal(table.column("channels"), 3)).as_py() else 1)
    images = images_tensor(table.column("image").to_pylist(), size, ch)
    kept_ids = kept.column("sample_id").to_pylist()
    kept_syn = kept.column("is_synthetic").to_pylist()
    return RunData(
        run_dir=run_dir, images=images, ids=ids,
        ingested=torch.tensor([row[s] for s, y in zip(ing_ids, ingested.column("is_synthetic").to_pylist()) if not y],
                              dtype=torch.long),
        kept=torch.tensor([row[s] for s, y in zip(kept_ids, kept_syn) if not y], dtype=torch.long),
        synthetic=torch.tensor([row[s] for s, y in zip(ids, syn) if y], dtype=torch.long),
        image_size=size, channels=ch)


def run_arms(run_dir: str, names: list[str] | tuple[str, ...] = ("full", "curated", "random"),
             image_size: int | None = None, channels: int | None = None) -> list[Arm]:
    """Build the named arms from ``run_dir`` (see the module docstring)."""
    unknown = [n for n in names if n not in _BUILDERS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; known: {', '.join(_BUILDERS)}")
    data = load_run_data(run_dir, image_size, channels)
    if data.kept.numel() < 2:
        raise ConfigError(f"run '{run_dir}' keeps {data.kept.numel()} real samples; nothing to train on")
    return [_BUILDERS[n](data) for n in names]
