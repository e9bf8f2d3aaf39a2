"""ImageNet-size architectures built by torchvision: ``resnet18/34/50`` and ``mobilenet_v2``.

torchvision builds the networks (its own classes, its own initialisation, its module names, so a
torchvision state dict loads with ``strict=True``); no weights are ever downloaded. The subclasses
only add what the rest of tffd-viz asks of a model: ``arch``, ``num_classes``, ``in_chans``,
``input_size`` (224) and the default Tf-FD taps.

* ResNets: ``layer1..4`` (ResNet-18 on 224x224: ``(64, 56, 56)``, ``(128, 28, 28)``, ``(256, 14, 14)``,
  ``(512, 7, 7)``; ResNet-50 four times the channels), the post-ReLU stage outputs.
* MobileNetV2: the last inverted-residual block at each resolution, ``features.1`` (16 x 112 x 112),
  ``features.3`` (24 x 56 x 56), ``features.6`` (32 x 28 x 28), ``features.13`` (96 x 14 x 14),
  ``features.17`` (320 x 7 x 7); these are linear bottlenecks (no ReLU after the block).

:func:`torchvision_arch` tells these architectures apart from the keys and shapes of a state dict
alone (used by :mod:`tffd_viz.checkpoints`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torchvision.models import MobileNetV2
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from tffd_viz.errors import DataError
from tffd_viz.normalisation import IMAGENET_MEAN, IMAGENET_STD  # one definition, re-exported here

__all__ = [
    "IMAGENET_ARCHS",
    "IMAGENET_INPUT_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_RESIZE",
    "IMAGENET_STD",
    "ImageNetMobileNetV2",
    "ImageNetResNet",
    "imagenet_card_defaults",
    "torchvision_arch",
]

#: Side of the square input the torchvision networks are trained and evaluated at.
IMAGENET_INPUT_SIZE = 224
#: Shorter side the evaluation transform resizes to before the centre crop (torchvision's reference).
IMAGENET_RESIZE = 256

#: ResNet name -> (block, blocks per stage), as torchvision's ``resnet18/34/50``.
RESNET_SPECS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def _check_input(model: nn.Module, x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != model.in_chans:
        raise DataError(
            f"{model.arch} expects images of shape (N, {model.in_chans}, H, W) ({model.in_chans} input "
            f"channel(s), {model.input_size}x{model.input_size} as trained), got {tuple(x.shape)}"
        )


def _stem(in_chans: int, out_chans: int, kernel: int, stride: int, padding: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_chans, out_chans, kernel_size=kernel, stride=stride, padding=padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class ImageNetResNet(ResNet):
    """torchvision's ResNet (``resnet18/34/50``) with tffd-viz's self-description.

    Input ``(N, in_chans, 224, 224)`` (any size >= 32 runs), output logits ``(N, num_classes)``.
    With ``in_chans == 3`` the module is torchvision's, parameter for parameter and in the same
    initialisation order; another ``in_chans`` swaps the stem convolution for one of that width.
    """

    default_taps = ("layer1", "layer2", "layer3", "layer4")
    input_size = IMAGENET_INPUT_SIZE

    def __init__(self, name: str, num_classes: int = 1000, in_chans: int = 3):
        block, layers = RESNET_SPECS[name]
        super().__init__(block, list(layers), num_classes=num_classes)
        if in_chans != 3:
            self.conv1 = _stem(in_chans, 64, 7, 2, 3)
        self.arch, self.num_classes, self.in_chans = name, int(num_classes), int(in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x)
        return super().forward(x)


class ImageNetMobileNetV2(MobileNetV2):
    """torchvision's MobileNetV2 (width 1.0) with tffd-viz's self-description; taps as in the module
    docstring."""

    default_taps = ("features.1", "features.3", "features.6", "features.13", "features.17")
    input_size = IMAGENET_INPUT_SIZE

    def __init__(self, num_classes: int = 1000, in_chans: int = 3):
        super().__init__(num_classes=num_classes)
        if in_chans != 3:
            self.features[0][0] = _stem(in_chans, self.features[0][0].out_channels, 3, 2, 1)
        self.arch, self.num_classes, self.in_chans = "mobilenet_v2", int(num_classes), int(in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x)
        return super().forward(x)


#: Architecture name -> factory ``(num_classes=, in_chans=) -> model``.
IMAGENET_ARCHS: dict[str, Callable[..., nn.Module]] = {
    **{
        name: (lambda n: lambda num_classes=1000, in_chans=3: ImageNetResNet(n, num_classes, in_chans))(name)
        for name in RESNET_SPECS
    },
    "mobilenet_v2": lambda num_classes=1000, in_chans=3: ImageNetMobileNetV2(num_classes, in_chans),
}


# ----------------------------------------------------------------------------------- keys -> arch
Shapes = Mapping[str, tuple[int, ...]]


def _blocks(shapes: Shapes, stage: int) -> int:
    pattern = re.compile(rf"layer{stage}\.(\d+)\.conv1\.weight")
    return len({m.group(1) for k in shapes if (m := pattern.fullmatch(k))})


def _resnet_name(shapes: Shapes) -> str | None:
    if "layer4.0.conv1.weight" not in shapes or "conv1.weight" not in shapes:
        return None
    bottleneck = "layer1.0.conv3.weight" in shapes
    counts = tuple(_blocks(shapes, s) for s in (1, 2, 3, 4))
    for name, (block, layers) in RESNET_SPECS.items():
        if layers == counts and (block is Bottleneck) == bottleneck:
            return name
    return None


def _mobilenet_name(shapes: Shapes) -> str | None:
    ok = (
        "features.18.0.weight" in shapes
        and "features.17.conv.0.0.weight" in shapes
        and "classifier.1.weight" in shapes
    )
    return "mobilenet_v2" if ok else None


def torchvision_arch(shapes: Shapes) -> str | None:
    """Return the architecture name of a torchvision-keyed state dict's ``shapes``, or None when it is none of
    them.

    ResNets have a ``layer4`` (the CIFAR zoo has three stages) and are told apart by the blocks per stage
    (``layer{1-4}.{i}.conv1``: 2-2-2-2 is ResNet-18, 3-4-6-3 ResNet-34, or ResNet-50 when the blocks are
    bottlenecks, with a ``conv3``); MobileNetV2 by its ``features.17`` block, ``features.18`` head convolution
    and ``classifier.1`` linear layer. Other depths (ResNet-101/152, ...) give None.
    """
    return _resnet_name(shapes) or _mobilenet_name(shapes)


def imagenet_card_defaults(arch: str) -> dict[str, Any]:
    """Card entries implied by an ImageNet architecture (empty for other names).

    Returns
    -------
    dict
        ``input_size`` (224), ``dataset`` (``"imagefolder"``), ``mean``/``std`` (ImageNet's) and
        ``transform`` (torchvision's evaluation transform: resize the shorter side to 256, centre crop 224).
        A loader fills only the entries a card leaves empty.
    """
    if arch not in IMAGENET_ARCHS:
        return {}
    return {
        "input_size": IMAGENET_INPUT_SIZE,
        "dataset": "imagefolder",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "transform": {"resize": IMAGENET_RESIZE, "crop": IMAGENET_INPUT_SIZE, "interpolation": "bilinear"},
    }
