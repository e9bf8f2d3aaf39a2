"""CIFAR VGGs (vgg8, vgg11, vgg13, vgg16, vgg19, with BatchNorm) with RepDistiller module names.

Names: ``block0..4`` (``nn.Sequential`` of conv-BN-ReLU), ``pool0..3`` and ``classifier``. Unlike the
RepDistiller file, the ReLU that ends each block is the block's last module (it has no weights,
so the state_dict keys are unchanged) so a hook on ``blockK`` sees the post-ReLU stage output.
"""

from __future__ import annotations

import torch
from torch import nn

from tffd_viz.models.base import ZooModel

__all__ = ["VGG_CONFIGS", "CifarVGG"]

VGG_CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(widths: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        in_channels = w
    return nn.Sequential(*layers)


class CifarVGG(ZooModel):
    """VGG with BatchNorm for 32x32 inputs.

    Input ``(N, in_chans, 32, 32)``; taps ``block0 (N, 64, 32, 32)``, ``block1 (N, 128, 16, 16)``,
    ``block2 (N, 256, 8, 8)``, ``block3 (N, 512, 4, 4)``, ``block4 (N, 512, 4, 4)`` (as in
    RepDistiller, ``pool3`` is applied only to 64x64 inputs); output logits ``(N, num_classes)``.
    """

    default_taps = ("block0", "block1", "block2", "block3", "block4")

    def __init__(self, cfg: list[list[int]], num_classes: int = 100, in_chans: int = 3):
        super().__init__(num_classes=num_classes, in_chans=in_chans)
        self.block0 = _block(cfg[0], in_chans)
        self.block1 = _block(cfg[1], cfg[0][-1])
        self.block2 = _block(cfg[2], cfg[1][-1])
        self.block3 = _block(cfg[3], cfg[2][-1])
        self.block4 = _block(cfg[4], cfg[3][-1])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # always, bias=True; narrows the Optional for mypy
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = x.shape[2]
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        if h == 64:
            x = self.pool3(x)
        x = self.block4(x)
        return self.classifier(torch.flatten(self.pool4(x), 1))
