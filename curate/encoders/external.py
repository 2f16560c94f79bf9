"""Encoders from optional packages: ``timm:<arch>``, ``open_clip:<arch>``, ``hf:<dir>``, ``onnx:<path>``.

Each needs its package (a pyproject extra) and a local checkpoint; nothing is
downloaded: timm and open_clip build the bare architecture and curate's safe
loader (safetensors / ``weights_only``) reads the weights; ``hf:<dir>`` loads a
Hugging Face ``transformers`` vision model (ViT, DINOv2, ...) saved with
``save_pretrained`` from a local directory, with ``local_files_only=True`` and
safetensors only. A missing package or file is a :class:`ConfigError` saying
what to install or set.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os

import numpy as np
import torch

from curate.encoders.base import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderOptions, file_digest, load_state_dict, \
    require_weights
from curate.errors import ConfigError


def _import(module: str, pip: str, encoder: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:  # the package, or one it imports (timm and open_clip need torchvision)
        missing = getattr(err, "name", None) or module
        raise ConfigError(f"encoder '{encoder}' needs the optional package '{module}' (import failed: "
                          f"{missing} missing): pip install {pip} (or use `encoder: auto` / `pixels`, which "
                          f"need nothing)") from None


class TimmEncoder(Encoder):
    def __init__(self, arch: str, opts: EncoderOptions):
        super().__init__()
        timm = _import("timm", "timm", f"timm:{arch}")
        path = require_weights(opts, f"timm:{arch}")
        try:
            model = timm.create_model(arch, pretrained=False, num_classes=0)
        except Exception as err:  # noqa: BLE001 - unknown arch names etc.
            raise ConfigError(f"timm cannot build '{arch}': {err}") from None
        sd = load_state_dict(path)
        missing, _ = model.load_state_dict(sd, strict=False)
        if missing:
            raise ConfigError(f"encoder 'timm:{arch}': weights '{path}' lack {len(missing)} tensors "
                              f"(e.g. {missing[:3]}); is it a checkpoint of this architecture?")
        cfg = timm.data.resolve_data_config({}, model=model)
        self.module = model
        self.name = f"timm:{arch}"
        self.dim = int(model.num_features)
        self.image_size = opts.image_size or int(cfg["input_size"][-1])
        self.channels = int(cfg["input_size"][0])
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.weights_digest = file_digest(path)


class OpenClipEncoder(Encoder):
    def __init__(self, arch: str, opts: EncoderOptions):
        super().__init__()
        open_clip = _import("open_clip", "open_clip_torch", f"open_clip:{arch}")
        path = require_weights(opts, f"open_clip:{arch}")
        try:  # weights are read by curate's safe loader, never by open_clip's torch.load
            model = open_clip.create_model(arch, pretrained=None)
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"open_clip cannot build '{arch}': {err}") from None
        missing, _ = model.load_state_dict(load_state_dict(path), strict=False)
        if missing:
            raise ConfigError(f"encoder 'open_clip:{arch}': weights '{path}' lack {len(missing)} tensors "
                              f"(e.g. {missing[:3]}); is it a checkpoint of this architecture?")
        visual = model.visual
        size = getattr(visual, "image_size", 224)
        self.module = _ClipImage(model)
        self.name = f"open_clip:{arch}"
        self.image_size = opts.image_size or int(size[0] if isinstance(size, (tuple, list)) else size)
        self.channels = 3
        self.mean = tuple(getattr(visual, "image_mean", None) or CLIP_MEAN)
        self.std = tuple(getattr(visual, "image_std", None) or CLIP_STD)
        with torch.no_grad():
            self.dim = int(model.encode_image(torch.zeros(1, 3, self.image_size, self.image_size)).shape[-1])
        self.weights_digest = file_digest(path)


class _ClipImage(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)


class HFEncoder(Encoder):
    """A ``transformers`` vision backbone from a local ``save_pretrained`` directory.

    The embedding is ``pooler_output`` where the model has one, else the first
    (CLS) token of ``last_hidden_state`` (DINOv2, Oquab et al. 2023, uses the
    CLS token as its image feature); for conv models with a pooled
    ``(N, C, 1, 1)`` output it is flattened. Mean/std come from the directory's
    ``preprocessor_config.json`` if present, else ImageNet's.
    """

    def __init__(self, directory: str, opts: EncoderOptions):
        super().__init__()
        transformers = _import("transformers", "transformers", f"hf:{directory}")
        path = os.path.expanduser(directory or opts.weights or "")
        if not os.path.isdir(path):
            raise ConfigError(f"encoder 'hf:{directory}': '{path}' is not a local directory; give the folder that "
                              f"`model.save_pretrained(folder)` wrote (nothing is downloaded from a hub)")
        shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not shards:
            raise ConfigError(f"encoder 'hf:{directory}': no .safetensors weights in '{path}' (pickled .bin "
                              f"checkpoints are refused); save with `save_pretrained(folder, safe_serialization=True)`")
        try:
            model = transformers.AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        except Exception as err:  # noqa: BLE001 - unknown model type, bad config, ...
            raise ConfigError(f"transformers cannot load '{path}': {type(err).__name__}: {err}") from None
        cfg = model.config
        size = getattr(cfg, "image_size", None) or 224
        size = size[0] if isinstance(size, (list, tuple)) else size
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        pre = os.path.join(path, "preprocessor_config.json")
        if os.path.isfile(pre):
            with open(pre, encoding="utf-8") as f:
                pc = json.load(f)
            mean = tuple(pc.get("image_mean") or mean)
            std = tuple(pc.get("image_std") or std)
        self.channels = int(getattr(cfg, "num_channels", 3) or 3)
        if len(mean) != self.channels:
            mean, std = (float(np.mean(mean)),) * self.channels, (float(np.mean(std)),) * self.channels
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.image_size = opts.image_size or int(size)
        self.module = _HFImage(model)
        self.name = f"hf:{getattr(cfg, 'model_type', 'model')}"
        h = hashlib.sha256()
        for shard in shards:
            h.update(file_digest(os.path.join(path, shard), 64).encode())
        self.weights_digest = h.hexdigest()[:12]
        model.eval()
        with torch.no_grad():
            probe = torch.zeros(1, self.channels, self.image_size, self.image_size)
            self.dim = int(self.module(probe).shape[-1])


class _HFImage(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        return pooled.reshape(x.shape[0], -1)


class OnnxEncoder(Encoder):
    """An exported image model (input N x C x H x W float, ImageNet-normalised; output N x D)."""

    def __init__(self, path: str, opts: EncoderOptions):
        super().__init__()
        ort = _import("onnxruntime", "onnxruntime", f"onnx:{path}")
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise ConfigError(f"encoder 'onnx:{path}': file not found; give the path of a local .onnx model")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(path, providers=providers)
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"onnxruntime cannot load '{path}': {err}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        self.channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else (opts.channels or 3)
        static = len(shape) == 4 and isinstance(shape[3], int)
        self.image_size = shape[3] if static else (opts.image_size or 224)
        self.name = f"onnx:{os.path.basename(path)}"
        self.weights_digest = file_digest(path)
        probe = np.zeros((1, self.channels, self.image_size, self.image_size), np.float32)
        self.dim = int(np.asarray(self.session.run(None, {self.input_name: probe})[0]).reshape(1, -1).shape[1])

    def to(self, device: torch.device) -> "OnnxEncoder":
        return self  # onnxruntime picks its own provider

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32).reshape(x.shape[0], -1))


def build_timm(arg: str | None, opts: EncoderOptions) -> Encoder:
    return TimmEncoder(arg or "", opts)


def build_open_clip(arg: str | None, opts: EncoderOptions) -> Encoder:
    return OpenClipEncoder(arg or "", opts)


def build_hf(arg: str | None, opts: EncoderOptions) -> Encoder:
    return HFEncoder(arg or "", opts)


def build_onnx(arg: str | None, opts: EncoderOptions) -> Encoder:
    return OnnxEncoder(arg or "", opts)
