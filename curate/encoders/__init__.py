"""Encoder registry: a spec string names an encoder, ``name`` or ``name:argument``.

=====================  =====================================================
spec                   encoder
=====================  =====================================================
``auto``               the default: the checkpoint in ``weights:`` when one is
                       named (architecture read from the file: curate SSL,
                       torchvision ResNet-18/50, a ``transformers`` folder, an
                       ``.onnx``), else ``gradpix``; see :func:`resolve_auto`
``gradpix``            multi-scale pixels + signed gradient-orientation
                       histograms + PCA; weight-free, deterministic
``pixels``             resize + flatten + PCA (faiss.PCAMatrix) fitted on a
                       seeded sample; weight-free, deterministic
``resnet18/resnet50``  plain-torch ResNet, torchvision state_dict keys, from a
                       local ``weights:`` file (.pt/.pth/.safetensors)
``random_cnn``         seeded random-init CNN - only when asked for by name
``timm:<arch>``        timm model + local checkpoint (extra: ``timm``)
``open_clip:<arch>``   open_clip image tower + local checkpoint (extra: ``open_clip_torch``)
``hf:<dir>``           a ``transformers`` vision model (ViT, DINOv2, ...) saved
                       with ``save_pretrained`` in a local directory (extra:
                       ``transformers``; ``local_files_only``, safetensors only)
``onnx:<path>``        an ONNX image model via onnxruntime (extra: ``onnxruntime``)
=====================  =====================================================

Adding an encoder is one call::

    register_encoder("ssl", "curate.train.ssl:build_encoder")   # spec "ssl:/path/ckpt.pt"

A factory is ``factory(arg: str | None, opts: EncoderOptions) -> Encoder``
(or a ``"module:function"`` string, imported when first used).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable, Union

from curate.encoders.base import Encoder, EncoderOptions
from curate.errors import ConfigError

Factory = Callable[[Union[str, None], EncoderOptions], Encoder]

_ENCODERS: dict[str, Union[Factory, str]] = {
    "auto": "curate.encoders:build_auto",
    "gradpix": "curate.encoders.gradpix:build",
    "pixels": "curate.encoders.pixels:build",
    "resnet18": "curate.encoders.resnet:build_resnet18",
    "resnet50": "curate.encoders.resnet:build_resnet50",
    "random_cnn": "curate.encoders.random_cnn:build",
    "timm": "curate.encoders.external:build_timm",
    "open_clip": "curate.encoders.external:build_open_clip",
    "hf": "curate.encoders.external:build_hf",
    "onnx": "curate.encoders.external:build_onnx",
    "ssl": "curate.encoders.ssl:build",  # trained by `curate train-encoder` (curate.train)
}

# encoders whose spec needs an argument after the colon
_NEEDS_ARG = {"timm", "open_clip", "hf", "onnx"}


def register_encoder(name: str, factory: Union[Factory, str], needs_arg: bool = False) -> None:
    """Register ``name`` -> factory (callable or ``"module:function"``)."""
    if ":" in name:
        raise ValueError(f"encoder name '{name}' must not contain ':'")
    _ENCODERS[name] = factory
    if needs_arg:
        _NEEDS_ARG.add(name)


def names() -> list[str]:
    return sorted(_ENCODERS)


def parse(spec: str) -> tuple[str, str | None]:
    """Split ``'timm:vit_small'`` into ``('timm', 'vit_small')``; check the name is registered."""
    name, sep, arg = spec.partition(":")
    if name not in _ENCODERS:
        hint = difflib.get_close_matches(name, _ENCODERS, n=1)
        extra = f" Did you mean '{hint[0]}'?" if hint else ""
        raise ConfigError(f"unknown encoder '{spec}'.{extra} Known: {', '.join(names())} "
                          f"(forms: name or name:argument, e.g. timm:resnet50, onnx:/path/model.onnx)")
    if name in _NEEDS_ARG and not arg:
        raise ConfigError(f"encoder '{name}' needs an argument: '{name}:<...>' (e.g. timm:vit_small_patch16_224, "
                          f"open_clip:ViT-B-32, onnx:/path/model.onnx)")
    return name, (arg if sep else None)


def _factory(name: str) -> Factory:
    f = _ENCODERS[name]
    if isinstance(f, str):
        module, _, fn = f.partition(":")
        f = getattr(importlib.import_module(module), fn)
        _ENCODERS[name] = f
    return f


def resolve_auto(weights: str | None) -> str:
    """The spec ``encoder: auto`` stands for, given the ``weights:`` path (or none).

    No weights: ``gradpix`` (weight-free; it beats ``pixels`` on kNN label
    agreement on Fashion-MNIST and MNI152 slices, ``benchmarks/encoder_quality.py``).
    A directory: ``hf:<dir>``; ``.onnx``: ``onnx:<path>``; a safetensors file
    with curate's SSL format: ``ssl``; a torchvision-layout ResNet state_dict:
    ``resnet50`` (bottleneck ``conv3`` keys) or ``resnet18``. Anything else is a
    :class:`ConfigError` asking to name the encoder.
    """
    import os

    if not weights:
        return "gradpix"
    path = os.path.expanduser(weights)
    if os.path.isdir(path):
        return f"hf:{path}"
    if not os.path.isfile(path):
        raise ConfigError(f"encoder auto: weights '{weights}' not found (a local file or directory)")
    if path.endswith(".onnx"):
        return f"onnx:{path}"
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as f:
                if (f.metadata() or {}).get("format", "").startswith("curate-ssl/"):
                    return "ssl"
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"encoder auto: cannot read '{weights}': {err}") from None
    from curate.encoders.base import load_state_dict

    keys = set(load_state_dict(path))
    if {"conv1.weight", "layer1.0.conv1.weight", "layer4.0.conv1.weight"} <= keys:
        if "layer1.0.conv3.weight" in keys:
            return "resnet50"
        if "layer4.1.conv2.weight" in keys and "layer4.2.conv1.weight" not in keys:
            return "resnet18"
    raise ConfigError(f"encoder auto: cannot tell the architecture of '{weights}' (not a curate SSL checkpoint, "
                      f"a torchvision ResNet-18/50 state_dict, a transformers folder or an .onnx file); name it, "
                      f"e.g. `encoder: timm:<arch>` or `encoder: open_clip:<arch>`")


def build_auto(arg: str | None, opts: EncoderOptions) -> Encoder:
    enc = build(resolve_auto(opts.weights), opts)
    enc.resolved_from = "auto"
    return enc


def build(spec: str, opts: EncoderOptions | None = None) -> Encoder:
    """Build the encoder ``spec`` (module in eval mode, on CPU)."""
    name, arg = parse(spec)
    enc = _factory(name)(arg, opts or EncoderOptions())
    if enc.module is not None:
        enc.module.eval()
        for p in enc.module.parameters():
            p.requires_grad_(False)
    return enc


__all__ = ["Encoder", "EncoderOptions", "build", "names", "parse", "register_encoder", "resolve_auto"]
