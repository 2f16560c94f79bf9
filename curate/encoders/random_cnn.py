"""A seeded random-init CNN: only when a pipeline asks for ``encoder: random_cnn``.

Random convolutional features are a weak but weight-free embedding (Jarrett et
al. 2009 showed random conv filters + pooling already separate many classes).
curate never falls back to it silently. Architecture: four conv3x3-ReLU-avgpool
blocks (32, 64, 128, 256 channels), global average pooling, 256-d output;
``torch.Generator`` seeded with ``seed`` draws the Kaiming-uniform weights, so the
same seed gives the same encoder on every machine.
"""

from __future__ import annotations

import torch
from torch import nn

from curate.encoders.base import Encoder, EncoderOptions

WIDTHS = (32, 64, 128, 256)


class RandomCNN(nn.Module):
    def __init__(self, channels: int, seed: int):
        super().__init__()
        layers, cin = [], channels
        for w in WIDTHS:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            cin = w
        self.body = nn.Sequential(*layers)
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for m in self.body:
                if isinstance(m, nn.Conv2d):
                    bound = (6.0 / (m.in_channels * 9)) ** 0.5
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 * bound - bound)
                    m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


class RandomCNNEncoder(Encoder):
    def __init__(self, opts: EncoderOptions):
        super().__init__()
        self.channels = opts.channels or 3
        self.module = RandomCNN(self.channels, opts.seed)
        self.name = f"random_cnn-seed{opts.seed}"
        self.dim = WIDTHS[-1]
        self.image_size = opts.image_size or 64
        self.mean = (0.5,) * self.channels
        self.std = (0.25,) * self.channels


def build(arg: str | None, opts: EncoderOptions) -> Encoder:
    return RandomCNNEncoder(opts)
