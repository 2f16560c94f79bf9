"""Train the ``ssl`` encoder on a run directory's samples (``curate train-encoder RUN_DIR``).

Reads the run's ``samples`` table through its pipeline (``kept``: the latest
overlay, i.e. after ``dedup.apply``; ``ingested``: the source stage's rows),
decodes it to one uint8 tensor (resized to ``image_size``; default the largest
side present, capped at ``max_auto_size``), uses the ``pairs`` table's mined
negatives when ``hard_negatives > 0`` and the run has one, and writes a
safetensors checkpoint (default ``RUN_DIR/models/ssl.safetensors``) that
``embed`` loads with ``encoder: ssl``. Synthetic rows (``inflate``) are left out
unless ``include_synthetic``.
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow.compute as pc

from curate.errors import ConfigError
from curate.train.data import NegativeBank, TensorBatches, images_tensor, run_context, run_samples
from curate.train.simclr import TrainResult, make_config, train


def default_checkpoint(run_dir: str) -> str:
    return os.path.join(run_dir, "models", "ssl.safetensors")


def train_from_run(run_dir: str, which: str = "kept", out: str | None = None, resume: str | None = None,
                   include_synthetic: bool = False, max_auto_size: int = 96, progress: bool = True,
                   **overrides: Any) -> TrainResult:
    """Train on ``run_dir``'s samples; ``overrides`` are :class:`~curate.train.TrainConfig` fields."""
    if "://" in run_dir and not run_dir.startswith("file://"):
        raise ConfigError("train-encoder reads local run directories only; copy the run locally first")
    cfg = make_config(**overrides)
    table = run_samples(run_dir, which, columns=["sample_id", "image", "channels", "height", "width",
                                                   "is_synthetic"])
    if not include_synthetic:
        table = table.filter(pc.invert(table.column("is_synthetic")))
    if table.num_rows < 2:
        raise ConfigError(f"run '{run_dir}' has {table.num_rows} {which} real samples; need at least 2 to train")
    size = cfg.image_size or min(max_auto_size, max(pc.max(table.column("height")).as_py(),
                                                    pc.max(table.column("width")).as_py()))
    channels = cfg.in_channels
    if channels is None:
        channels = 3 if pc.any(pc.equal(table.column("channels"), 3)).as_py() else 1
    images = images_tensor(table.column("image").to_pylist(), size, channels)
    ids = table.column("sample_id").to_pylist()
    negatives = None
    if cfg.hard_negatives > 0:
        ctx = run_context(run_dir)
        if not ctx.has("pairs"):
            raise ConfigError(f"--hard-negatives {cfg.hard_negatives}: run '{run_dir}' has no pairs table; add a "
                              f"`mine.negatives` stage to its pipeline, or use --hard-negatives 0")
        pairs = ctx.read_all("pairs", columns=["anchor_id", "negative_ids"])
        negatives = NegativeBank(images, ids, {a: ns for a, ns in zip(pairs.column("anchor_id").to_pylist(),
                                                                      pairs.column("negative_ids").to_pylist()) if ns},
                                 cfg.hard_negatives)
    out = out or default_checkpoint(run_dir)
    source = TensorBatches(images, cfg.batch_size, seed=cfg.seed, ids=ids)
    if resume:  # the checkpoint's config, only the step budget may change
        steps = {"steps": overrides["steps"]} if overrides.get("steps") else {}
        result = train(source, None, out=out, resume=resume, negatives=negatives, progress=progress, **steps)
    else:
        cfg = make_config(cfg, image_size=size, in_channels=channels)
        result = train(source, cfg, out=out, negatives=negatives, progress=progress)
    result.stats.update({"run_dir": run_dir, "which": which, "samples": len(ids),
                         "anchors_with_negatives": len(negatives) if negatives is not None else 0})
    return result
