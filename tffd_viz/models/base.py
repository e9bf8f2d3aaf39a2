"""Common base class of the zoo models: input checking and self-description."""

from __future__ import annotations

import torch
from torch import nn

from tffd_viz.errors import DataError

__all__ = ["ZooModel"]


class ZooModel(nn.Module):
    """Base of every zoo model: knows its class count, input channels and default taps.

    Attributes
    ----------
    num_classes : int
    in_chans : int
    default_taps : tuple of str
        Module names of the stage outputs Tf-FD trains on, shallow to deep.
    """

    default_taps: tuple[str, ...] = ()

    def __init__(self, num_classes: int, in_chans: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.in_chans = int(in_chans)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` unless ``x`` is ``(N, in_chans, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise DataError(
                f"{type(self).__name__} expects images of shape (N, {self.in_chans}, H, W) "
                f"({self.in_chans} input channel(s)), got {tuple(x.shape)}"
                + (f" with {x.shape[1]} channel(s)" if x.ndim == 4 else "")
            )

    def _init_weights(self, zero_linear_bias: bool = False) -> None:
        """Initialise the weights in place, module by module in ``self.modules()`` order.

        Conv weights He-normal (``fan_out``, ReLU gain), BatchNorm weight 1 and bias 0; with
        ``zero_linear_bias`` also every ``nn.Linear`` bias 0 (its weight keeps PyTorch's default init).
        Call at the end of a subclass's ``__init__``.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif zero_linear_bias and isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
