"""ResNet-18 / ResNet-50 (He et al. 2016) in plain torch with torchvision's state_dict keys.

torchvision is not a dependency; this module rebuilds the same architecture so
a checkpoint saved from ``torchvision.models.resnet18().state_dict()`` (or
from any SSL repo that uses it as backbone) loads unchanged. Key naming::

    conv1.weight  bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
    layer{1-4}.{i}.conv{1,2[,3]}.weight  layer{1-4}.{i}.bn{1,2[,3]}.*
    layer{2-4}.0.downsample.0.weight (1x1 conv)  layer{2-4}.0.downsample.1.* (BN)
    fc.weight  fc.bias   (ignored: the embedding is the pooled 512 / 2048-d feature)

Preprocessing is torchvision's: RGB (gray replicated), 224 px, ImageNet mean/std.
"""

from __future__ import annotations

import torch
from torch import nn

from curate.encoders.base import Encoder, EncoderOptions, file_digest, load_state_dict, require_weights
from curate.errors import ConfigError


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)  # stride on the 3x3 (torchvision "ResNet v1.5")
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    """torchvision-compatible ResNet; ``forward`` returns pooled features (``fc`` kept for loading)."""

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 512 * block.expansion
        self.fc = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, width: int, blocks: int, stride: int = 1) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != width * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, width * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(width * block.expansion))
        layers = [block(self.inplanes, width, stride, down)]
        self.inplanes = width * block.expansion
        layers += [block(self.inplanes, width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


ARCHS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet50": (Bottleneck, [3, 4, 6, 3])}


def resnet(arch: str) -> ResNet:
    block, layers = ARCHS[arch]
    return ResNet(block, layers)


def load_backbone(model: ResNet, sd: dict[str, torch.Tensor], where: str) -> None:
    """Load every non-``fc`` tensor strictly; ``fc`` (classifier head) is optional."""
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = {k for k in model.state_dict() if not k.startswith("fc.")}
    missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
    if missing or unexpected:
        raise ConfigError(f"{where}: not a torchvision-style state_dict for this architecture "
                          f"(missing {missing[:4]}{'...' if len(missing) > 4 else ''}, unexpected "
                          f"{unexpected[:4]}{'...' if len(unexpected) > 4 else ''}); expected keys like "
                          f"conv1.weight, bn1.running_mean, layer1.0.conv1.weight")
    bad = [k for k in sd if sd[k].shape != model.state_dict()[k].shape]
    if bad:
        raise ConfigError(f"{where}: tensor shapes differ from the architecture for {bad[:4]}; wrong resnet depth?")
    model.load_state_dict(sd, strict=False)


class ResNetEncoder(Encoder):
    def __init__(self, arch: str, opts: EncoderOptions):
        super().__init__()
        path = require_weights(opts, arch)
        model = resnet(arch)
        load_backbone(model, load_state_dict(path), f"encoder '{arch}' weights '{path}'")
        self.module = model
        self.name = arch
        self.dim = model.feature_dim
        self.image_size = opts.image_size or 224
        self.channels = 3
        self.weights_digest = file_digest(path)


def build_resnet18(arg: str | None, opts: EncoderOptions) -> Encoder:
    return ResNetEncoder("resnet18", opts)


def build_resnet50(arg: str | None, opts: EncoderOptions) -> Encoder:
    return ResNetEncoder("resnet50", opts)
