"""Small ResNets in plain torch for contrastive pretraining on small images.

A CIFAR-style ResNet (He et al. 2016, as adapted by SimCLR, Chen et al. 2020,
appendix B.9): the ImageNet stem (7x7 stride-2 conv + max-pool) is replaced by
one 3x3 stride-1 conv and no pooling, so 28x28 and 32x32 images keep their
resolution into the first stage. Any number of input channels (1 for gray
Fashion-MNIST / CT slices, 3 for RGB).

Architectures (basic blocks per stage, stage widths):

* ``resnet18``  - (2, 2, 2, 2), (64, 128, 256, 512): the SimCLR CIFAR encoder.
* ``resnet10``  - (1, 1, 1, 1), (64, 128, 256, 512).
* ``resnet_tiny`` - (1, 1, 1, 1), (32, 64, 128, 256): CPU-sized, for tests and
  reduced benchmarks.
* ``resnet_nano`` - (1, 1, 1, 1), (16, 32, 64, 128): ~4x cheaper again, for
  CPU benchmarks on shared cores.

:class:`SimCLRNet` adds the SimCLR projection head (2-layer MLP, ReLU, output
dim 128); downstream tasks use the encoder's pooled features, never the head.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet10": ((1, 1, 1, 1), (64, 128, 256, 512)),
    "resnet_tiny": ((1, 1, 1, 1), (32, 64, 128, 256)),
    "resnet_nano": ((1, 1, 1, 1), (16, 32, 64, 128)),
}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-stem ResNet trunk: image (N, C, H, W) float in [0, 1] -> pooled features (N, widths[-1])."""

    def __init__(self, in_channels: int = 3, blocks: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.feature_dim = widths[-1]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x * 2.0 - 1.0))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def build_encoder(arch: str = "resnet18", in_channels: int = 3) -> ResNet:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch '{arch}'; choose one of {', '.join(ARCHS)}")
    blocks, widths = ARCHS[arch]
    return ResNet(in_channels, blocks, widths)


class SimCLRNet(nn.Module):
    """Encoder + SimCLR projection head (Linear-BN-ReLU-Linear, Chen et al. 2020)."""

    def __init__(self, arch: str = "resnet18", in_channels: int = 3, proj_dim: int = 128,
                 proj_hidden: int | None = None):
        super().__init__()
        self.encoder = build_encoder(arch, in_channels)
        d = self.encoder.feature_dim
        h = proj_hidden or d
        self.projector = nn.Sequential(nn.Linear(d, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True),
                                       nn.Linear(h, proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections (N, proj_dim), not normalised."""
        return self.projector(self.encoder(x))

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)
