"""Model zoo of the Tf-FD paper's CIFAR table, built by name, plus feature taps for any model.

torchvision's ``resnet18/34/50`` and ``mobilenet_v2`` (224x224 inputs, :mod:`tffd_viz.models.imagenet`) are in
the zoo too.

>>> import torch
>>> from tffd_viz.models import create_model, extract_taps
>>> model = create_model("resnet20", num_classes=100)
>>> taps = extract_taps(model, torch.randn(2, 3, 32, 32))
>>> {name: tuple(t.shape) for name, t in taps.items()}
{'layer1': (2, 16, 32, 32), 'layer2': (2, 32, 16, 16), 'layer3': (2, 64, 8, 8)}
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from tffd_viz.errors import TffdVizError
from tffd_viz.models.base import ZooModel
from tffd_viz.models.imagenet import IMAGENET_ARCHS, IMAGENET_INPUT_SIZE
from tffd_viz.models.resnet import RESNET_CONFIGS, CifarResNet
from tffd_viz.models.resnet_a import RESNET_A_CONFIGS, OptionAResNet
from tffd_viz.models.taps import TapInfo, default_taps, extract_taps, resolve_taps, tap_info, tap_names
from tffd_viz.models.vgg import VGG_CONFIGS, CifarVGG
from tffd_viz.models.vgg_bn import VGG_BN_CONFIGS, CifarVGGBN
from tffd_viz.models.wrn import WRN_CONFIGS, WideResNet

__all__ = [
    "MODELS",
    "TapInfo",
    "ZooModel",
    "create_model",
    "default_taps",
    "extract_taps",
    "input_size",
    "model_arch",
    "resolve_taps",
    "tap_info",
    "tap_names",
]

#: ``(num_classes=, in_chans=) -> model``: a :class:`ZooModel`, or one of torchvision's classes with the same
#: attributes (``arch``, ``num_classes``, ``in_chans``, ``default_taps``; :mod:`tffd_viz.models.imagenet`).
ModelFactory = Callable[..., nn.Module]

MODELS: dict[str, ModelFactory] = {}
MODELS.update(
    {name: partial(CifarResNet, depth, filters) for name, (depth, filters) in RESNET_CONFIGS.items()}
)
MODELS.update({name: partial(WideResNet, depth, widen) for name, (depth, widen) in WRN_CONFIGS.items()})
MODELS.update({name: partial(CifarVGG, cfg) for name, cfg in VGG_CONFIGS.items()})
MODELS.update({name: partial(OptionAResNet, depth) for name, depth in RESNET_A_CONFIGS.items()})
MODELS.update({name: partial(CifarVGGBN, cfg) for name, cfg in VGG_BN_CONFIGS.items()})
MODELS.update(IMAGENET_ARCHS)  # torchvision's resnet18/34/50 and mobilenet_v2, 224x224 inputs


def create_model(name: str, num_classes: int = 100, in_chans: int = 3) -> nn.Module:
    """Build a zoo model by name with freshly initialised weights.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS` (``resnet8 ... resnet110``, ``resnet8x4``, ``resnet32x4``,
        ``wrn_16_2``, ``wrn_40_2``, ``vgg8``, ``vgg13``, ..., option-A ``resnet20_a ... resnet1202_a``,
        ``cifar_vgg11_bn ... cifar_vgg19_bn``, torchvision's ``resnet18/34/50`` and ``mobilenet_v2``).
    num_classes : int
    in_chans : int

    Returns
    -------
    nn.Module
        A :class:`ZooModel` (torchvision's own class for the ImageNet architectures, with the same
        attributes); maps ``(N, in_chans, S, S)`` images (``S`` = :func:`input_size`: 32, or 224 for
        torchvision's architectures) to ``(N, num_classes)`` logits; ``model.arch`` is ``name``.
    """
    if name not in MODELS:
        raise TffdVizError(f"unknown architecture {name!r}; choose one of {sorted(MODELS)}")
    if num_classes < 1 or in_chans < 1:
        raise TffdVizError(f"num_classes and in_chans must be positive, got {num_classes} and {in_chans}")
    model = MODELS[name](num_classes=num_classes, in_chans=in_chans)
    model.arch = name  # type: ignore[assignment]  # nn.Module.__setattr__ is typed for tensors and modules only
    return model


def input_size(model_or_arch: nn.Module | str) -> int:
    """Return the input side a model (or architecture name) is made for: 224 for the ImageNet ones, else
    32."""
    if isinstance(model_or_arch, str):
        return IMAGENET_INPUT_SIZE if model_or_arch in IMAGENET_ARCHS else 32
    return int(getattr(model_or_arch, "input_size", 32))


def model_arch(model: nn.Module) -> str:
    """Return the zoo name of ``model`` (``model.arch``) or its class name for foreign models."""
    return str(getattr(model, "arch", type(model).__name__))
