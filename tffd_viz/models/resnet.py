"""CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4) with RepDistiller module names.

Module names follow the widely used RepDistiller CIFAR zoo, so its checkpoints load with
``strict=True``: ``conv1, bn1, layer{1-3}.{i}.{conv1,bn1,conv2,bn2,downsample.0/1}, fc``.
``forward`` returns logits only; stage features come from :func:`tffd_viz.models.extract_taps`
(the default taps ``layer1..3`` are the post-ReLU stage outputs that Tf-FD trains on).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tffd_viz.models.base import ZooModel

__all__ = ["RESNET_CONFIGS", "BasicBlock", "CifarResNet"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; the output is post-ReLU.

    Shapes: ``(N, inplanes, H, W) -> (N, planes, H / stride, W / stride)``.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + residual)


class CifarResNet(ZooModel):
    """ResNet for 32x32 inputs with three stages of ``(depth - 2) / 6`` basic blocks.

    Parameters
    ----------
    depth : int
        Total depth, ``6 n + 2`` (8, 14, 20, 32, 44, 56, 110).
    num_filters : sequence of 4 ints
        Stem width and the widths of stages 1-3 (``[16, 16, 32, 64]``; ``x4`` variants
        ``[32, 64, 128, 256]``).
    num_classes : int
    in_chans : int
        Input image channels (3 for CIFAR, 1 for digits).

    Input ``(N, in_chans, 32, 32)``, output logits ``(N, num_classes)``; default taps
    ``layer1 (N, w1, 32, 32)``, ``layer2 (N, w2, 16, 16)``, ``layer3 (N, w3, 8, 8)``.
    """

    default_taps = ("layer1", "layer2", "layer3")

    def __init__(
        self, depth: int, num_filters: tuple[int, int, int, int], num_classes: int = 100, in_chans: int = 3
    ):
        super().__init__(num_classes=num_classes, in_chans=in_chans)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(in_chans, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(num_filters[1], n, stride=1)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_filters[3] * BasicBlock.expansion, num_classes)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False
                ),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


RESNET_CONFIGS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}
