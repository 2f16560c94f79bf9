"""``encoder: ssl`` - the SimCLR encoder trained by ``curate train-encoder`` on the run's own data.

A domain-adapted encoder for data where no pretrained weights ship (CT, MRI,
microscopy): the CIFAR-stem ResNet trunk of a :mod:`curate.train` checkpoint
(safetensors, format ``curate-ssl/1``). The embedding is the pooled trunk
feature (SimCLR: the representation before the projection head transfers
better than the head's output). Preprocessing is the training one: bilinear
resize to the checkpoint's image size, pixels scaled to [0, 1] (the network
centres them itself), the checkpoint's channel count (1 = gray, 3 = RGB).

Pipeline::

    - stage: embed
      encoder: ssl
      weights: runs/ct/models/ssl.safetensors
"""

from __future__ import annotations

from curate.encoders.base import Encoder, EncoderOptions, file_digest, require_weights
from curate.errors import ConfigError


class SSLEncoder(Encoder):
    def __init__(self, path: str, opts: EncoderOptions):
        super().__init__()
        from curate.train.simclr import load_encoder

        self.module, meta = load_encoder(path)
        self.channels = int(meta["in_channels"])
        if opts.channels is not None and opts.channels != self.channels:
            raise ConfigError(f"encoder ssl: checkpoint '{path}' was trained on {self.channels}-channel images; "
                              f"remove `channels: {opts.channels}` or set it to {self.channels}")
        trained = None if meta.get("image_size") in (None, "None") else int(meta["image_size"])
        self.image_size = opts.image_size or trained or 32
        self.dim = int(meta["feature_dim"])
        self.mean = (0.0,) * self.channels
        self.std = (1.0,) * self.channels
        self.weights_digest = file_digest(path)
        self.name = f"ssl-{meta.get('arch', 'resnet')}"


def build(arg: str | None, opts: EncoderOptions) -> Encoder:
    """``ssl`` (checkpoint in ``weights:``) or ``ssl:/path/to/checkpoint.safetensors``."""
    if arg:
        opts = EncoderOptions(**{**opts.__dict__, "weights": arg})
    return SSLEncoder(require_weights(opts, "ssl"), opts)
