"""Model zoo of the Tf-FD paper's CIFAR table, built by name, plus feature taps for any model.

>>> from tffd_viz.models import create_model, extract_taps
>>> model = create_model("resnet20", num_classes=100)
>>> taps = extract_taps(model, torch.randn(2, 3, 32, 32))   # layer1, layer2, layer3
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from tffd_viz.errors import TffdVizError
from tffd_viz.models.base import ZooModel
from tffd_viz.models.resnet import RESNET_CONFIGS, CifarResNet
from tffd_viz.models.taps import TapInfo, default_taps, extract_taps, resolve_taps, tap_info, tap_names
from tffd_viz.models.vgg import VGG_CONFIGS, CifarVGG
from tffd_viz.models.wrn import WRN_CONFIGS, WideResNet

__all__ = [
    "MODELS", "ZooModel", "TapInfo", "create_model", "default_taps", "extract_taps", "resolve_taps",
    "tap_info", "tap_names", "model_arch",
]

ModelFactory = Callable[..., ZooModel]

MODELS: dict[str, ModelFactory] = {}
MODELS.update({name: partial(CifarResNet, depth, filters) for name, (depth, filters) in RESNET_CONFIGS.items()})
MODELS.update({name: partial(WideResNet, depth, widen) for name, (depth, widen) in WRN_CONFIGS.items()})
MODELS.update({name: partial(CifarVGG, cfg) for name, cfg in VGG_CONFIGS.items()})


def create_model(name: str, num_classes: int = 100, in_chans: int = 3) -> ZooModel:
    """Build a zoo model by name with freshly initialised weights.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS` (``resnet8 ... resnet110``, ``resnet8x4``, ``resnet32x4``,
        ``wrn_16_2``, ``wrn_40_2``, ``vgg8``, ``vgg13``, ...).
    num_classes : int
    in_chans : int

    Returns
    -------
    ZooModel
        Maps ``(N, in_chans, 32, 32)`` images to ``(N, num_classes)`` logits; ``model.arch`` is ``name``.
    """
    if name not in MODELS:
        raise TffdVizError(f"unknown architecture {name!r}; choose one of {sorted(MODELS)}")
    if num_classes < 1 or in_chans < 1:
        raise TffdVizError(f"num_classes and in_chans must be positive, got {num_classes} and {in_chans}")
    model = MODELS[name](num_classes=num_classes, in_chans=in_chans)
    model.arch = name
    return model


def model_arch(model: nn.Module) -> str:
    """Return the zoo name of ``model`` (``model.arch``) or its class name for foreign models."""
    return str(getattr(model, "arch", type(model).__name__))
