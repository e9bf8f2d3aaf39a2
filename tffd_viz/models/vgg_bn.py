"""CIFAR VGGs with BatchNorm and a three-layer classifier (cifar_vgg11_bn ... cifar_vgg19_bn).

The layout of chenyaofo/pytorch-cifar-models (torch.hub ``cifar10_vgg11_bn`` ... ``cifar100_vgg19_bn``):
``features`` is a sequence of 3x3 conv (with bias) - BatchNorm - ReLU triples and five 2x2 max-pools
(32x32 -> 1x1), ``classifier`` is Linear(512, 512) - ReLU - Dropout - Linear(512, 512) - ReLU - Dropout -
Linear(512, classes). The weighted modules keep their positions in ``features`` as names
(``features.0`` conv, ``features.1`` BatchNorm, ...), so that zoo's state_dicts load unchanged; the
pools (which have no weights) are named ``features.pool0`` ... ``features.pool4`` and are the default
taps: the stage outputs ``(N, 64, 16, 16)``, ``(N, 128, 8, 8)``, ``(N, 256, 4, 4)``, ``(N, 512, 2, 2)``,
``(N, 512, 1, 1)``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from tffd_viz.models.base import ZooModel

__all__ = ["VGG_BN_CONFIGS", "CifarVGGBN"]

#: Zoo name -> convolution widths per stage (each stage ends with a 2x2 max-pool).
VGG_BN_CONFIGS: dict[str, list[list[int]]] = {
    "cifar_vgg11_bn": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "cifar_vgg13_bn": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "cifar_vgg16_bn": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "cifar_vgg19_bn": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}
_HIDDEN = 512


def _features(cfg: list[list[int]], in_chans: int) -> nn.Sequential:
    """Return the conv/BN/ReLU/pool sequence; weighted modules are named by their position in it."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    position, channels = 0, in_chans
    for stage, widths in enumerate(cfg):
        for width in widths:
            layers[str(position)] = nn.Conv2d(channels, width, kernel_size=3, padding=1)
            layers[str(position + 1)] = nn.BatchNorm2d(width)
            layers[str(position + 2)] = nn.ReLU()
            position, channels = position + 3, width
        layers[f"pool{stage}"] = nn.MaxPool2d(kernel_size=2, stride=2)
        position += 1
    return nn.Sequential(layers)


class CifarVGGBN(ZooModel):
    """VGG with BatchNorm, five pooled stages and a 512-512-classes classifier, for 32x32 inputs.

    Parameters
    ----------
    cfg : list of 5 lists of int
        Convolution widths per stage (see :data:`VGG_BN_CONFIGS`); the last stage must end at 512.
    num_classes, in_chans : int

    Input ``(N, in_chans, 32, 32)``, output logits ``(N, num_classes)``; taps ``features.pool0..4``.
    """

    default_taps = tuple(f"features.pool{k}" for k in range(5))

    def __init__(self, cfg: list[list[int]], num_classes: int = 10, in_chans: int = 3):
        super().__init__(num_classes=num_classes, in_chans=in_chans)
        if len(cfg) != 5 or cfg[-1][-1] != _HIDDEN:
            raise ValueError(f"a CIFAR BN-VGG has 5 stages ending at {_HIDDEN} channels, got {cfg}")
        self.features = _features(cfg, in_chans)
        self.classifier = nn.Sequential(
            nn.Linear(_HIDDEN, _HIDDEN),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(_HIDDEN, _HIDDEN),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(_HIDDEN, num_classes),
        )
        self._init_weights(zero_linear_bias=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m.bias is not None:  # always, bias=True; narrows the Optional for mypy
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.classifier(torch.flatten(self.features(x), 1))
