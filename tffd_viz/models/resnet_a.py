"""CIFAR ResNets with the original paper's option-A shortcut (resnet20_a ... resnet1202_a).

He et al. (2016) use, on CIFAR, a parameter-free shortcut where a block changes the resolution and
the width: the input is subsampled with stride 2 and the new channels are zeros (half of them before
the old channels, half after). The widely used checkpoints of akamaster/pytorch_resnet_cifar10 are of
this kind. Module names are the zoo's (``conv1, bn1, layer{1-3}.{i}.{conv1,bn1,conv2,bn2}, fc``); the
shortcut has no weights, so a block's state_dict keys are those of an identity-shortcut block.
Default taps ``layer1..3`` (post-ReLU stage outputs), as for :class:`~tffd_viz.models.resnet.CifarResNet`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tffd_viz.models.resnet import BasicBlock, CifarResNet

__all__ = ["RESNET_A_CONFIGS", "OptionAResNet", "ZeroPadShortcut"]

#: Zoo name -> depth (``6 n + 2``); widths are always 16, 32, 64.
RESNET_A_CONFIGS: dict[str, int] = {f"resnet{d}_a": d for d in (20, 32, 44, 56, 110, 1202)}


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: ``(N, C_in, H, W) -> (N, C_out, H / stride, W / stride)``, no parameters.

    Keeps every ``stride``-th row and column, then pads the channel axis with zeros:
    ``(C_out - C_in) // 2`` channels before the input's, the rest after.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"an option-A shortcut cannot shrink {in_planes} channels to {out_planes}")
        self.stride = int(stride)
        self.before = (out_planes - in_planes) // 2
        self.after = out_planes - in_planes - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels=({self.before}, {self.after})"


class OptionAResNet(CifarResNet):
    """CIFAR ResNet of widths 16/32/64 whose resolution-changing blocks use :class:`ZeroPadShortcut`.

    Parameters
    ----------
    depth : int
        ``6 n + 2`` (20, 32, 44, 56, 110, 1202).
    num_classes, in_chans : int

    Input ``(N, in_chans, 32, 32)``, output logits ``(N, num_classes)``; taps ``layer1 (N, 16, 32, 32)``,
    ``layer2 (N, 32, 16, 16)``, ``layer3 (N, 64, 8, 8)``.
    """

    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3):
        super().__init__(depth, (16, 16, 32, 64), num_classes=num_classes, in_chans=in_chans)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        shortcut = None
        if stride != 1 or self.inplanes != planes:
            shortcut = ZeroPadShortcut(self.inplanes, planes, stride)
        layers = [BasicBlock(self.inplanes, planes, stride, shortcut)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)
