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
