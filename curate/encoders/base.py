"""What every encoder is: a torch module from normalised image batches to feature vectors.

An :class:`Encoder` owns its preprocessing (input size, channels, mean/std), so
the ``embed`` stage can decode, resize and normalise a batch once and call
``encoder.forward``. Encoders that must see data first (``pixels`` PCA) set
``needs_fit`` and implement :meth:`Encoder.fit`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from curate.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class EncoderOptions:
    """Options the ``embed`` stage passes to every encoder factory (each uses what applies)."""

    weights: str | None = None  # local checkpoint path (.pt / .pth / .safetensors / .onnx)
    image_size: int | None = None  # None: the encoder's default
    dim: int | None = None  # output dimension where the encoder has a choice (pixels PCA)
    whiten: bool = False  # pixels: PCA whitening (eigen_power -0.5)
    channels: int | None = None  # 1 or 3 where the encoder has a choice; None: automatic
    seed: int = 0  # random_cnn init, pixels fit sample
    extra: dict[str, Any] = field(default_factory=dict)


class Encoder:
    """A feature extractor. ``forward`` maps (N, C, S, S) normalised float to (N, dim)."""

    name: str = ""
    dim: int = 0
    image_size: int = 224
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    needs_fit: bool = False
    weights_digest: str | None = None
    resolved_from: str | None = None  # "auto" when ``encoder: auto`` chose this encoder

    def __init__(self) -> None:
        self.module: torch.nn.Module | None = None

    @property
    def id(self) -> str:
        """Identifies the exact model: name plus a digest of its weights (or fitted state)."""
        return self.name + (f"@{self.weights_digest}" if self.weights_digest else "")

    def preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "channels": self.channels, "resize": "bilinear",
                "scale": "1/255", "mean": list(self.mean), "std": list(self.std)}

    def fit(self, images: np.ndarray) -> None:
        """Fit on (N, C, S, S) preprocessed images (only when ``needs_fit``)."""
        raise NotImplementedError

    def to(self, device: torch.device) -> "Encoder":
        if self.module is not None:
            self.module.to(device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.module is not None
        return self.module(x)


def file_digest(path: str, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def require_weights(opts: EncoderOptions, encoder: str) -> str:
    if not opts.weights:
        raise ConfigError(f"encoder '{encoder}' needs a local checkpoint: set `weights: /path/to/file` "
                          f"(nothing is downloaded), or choose `encoder: pixels` (weight-free) or "
                          f"`encoder: random_cnn` (seeded random init, explicit)")
    path = os.path.expanduser(opts.weights)
    if not os.path.isfile(path):
        raise ConfigError(f"encoder '{encoder}': weights file '{opts.weights}' not found; set `weights:` to a "
                          f"local .pt/.pth/.safetensors file")
    return path


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely: safetensors, or ``torch.load(weights_only=True)``.

    Accepts a bare state_dict or one wrapped under ``state_dict`` / ``model``; a
    ``module.`` prefix (DataParallel / DDP) is stripped.
    """
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd: Any = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a config problem
        raise ConfigError(f"cannot read weights '{path}': {type(err).__name__}: {err}. Expected a state_dict "
                          f"saved with torch.save(model.state_dict(), path) or safetensors") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"weights '{path}' is not a state_dict (name -> tensor)")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
