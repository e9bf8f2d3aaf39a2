"""Feature criteria: channel scores computed from a tap's features alone, ``f (N, C, H, W) -> (C,)``.

Each criterion that is a mean over samples also has a per-sample form ``f -> (N, C)`` whose mean over samples
is the score; bootstraps reweight those instead of recomputing the score per resample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tffd_viz.errors import TapError
from tffd_viz.losses import channel_saliency

__all__ = [
    "check_feature",
    "l1_per_sample",
    "l1_scores",
    "l2_per_sample",
    "l2_scores",
    "mean_per_sample",
    "mean_scores",
    "tffd_per_sample",
    "tffd_scores",
]


def check_feature(f: object, where: str = "features") -> Tensor:
    """Return ``f`` checked: a finite, non-empty ``(N, C, H, W)`` tensor (``where`` names it in errors).

    Float features so large that a sum of squares could overflow their dtype (float32 activations
    near 1e30) are returned as float64, so every criterion stays finite and scale-invariant ones
    (``tffd``) stay correct instead of silently collapsing to 0.

    Raises
    ------
    TapError
        Not a 4-D tensor, no samples or channels, or NaN/Inf values (naming the channels).
    """
    if not isinstance(f, Tensor):
        raise TapError(f"{where} must be a torch.Tensor of shape (N, C, H, W), got {type(f).__name__}")
    if f.dim() != 4:
        raise TapError(f"{where} must be a 4-D tensor (N, C, H, W), got shape {tuple(f.shape)}")
    if f.shape[0] == 0 or f.shape[1] == 0:
        raise TapError(f"{where} have no samples or no channels: shape {tuple(f.shape)}")
    if f.is_floating_point():
        finite = torch.isfinite(f)
        if not bool(finite.all()):
            channels = (~finite).any(dim=(0, 2, 3)).nonzero().flatten().tolist()
            raise TapError(
                f"{where} of shape {tuple(f.shape)} contain {int((~finite).sum())} NaN/Inf values, in "
                f"channels {channels[:10]}{' ...' if len(channels) > 10 else ''} (non-finite weights "
                "or inputs?)"
            )
        if f.dtype != torch.float64 and float(f.abs().amax()) > (torch.finfo(f.dtype).max / f.numel()) ** 0.5:
            return f.double()
    return f


def tffd_scores(f: Tensor) -> Tensor:
    """Tf-FD saliency ``(C,)`` of features ``(N, C, H, W)`` (:func:`tffd_viz.losses.channel_saliency`)."""
    return channel_saliency(check_feature(f))


def tffd_per_sample(f: Tensor) -> Tensor:
    """Per-sample Tf-FD saliency ``(N, C)``: the mean of each map after L2-normalising it over positions."""
    # each (sample, channel) map as its own "channel" of a one-sample batch: channel_saliency then
    # gives the per-map mean of the L2-normalised map, exactly the per-sample term it averages
    f = check_feature(f)
    n, c, h, w = f.shape
    return channel_saliency(f.reshape(1, n * c, h, w)).reshape(n, c)


def l1_per_sample(f: Tensor) -> Tensor:
    """L1 norm ``(N, C)`` of every map of features ``(N, C, H, W)``."""
    return check_feature(f).abs().sum(dim=(2, 3))


def l2_per_sample(f: Tensor) -> Tensor:
    """L2 norm ``(N, C)`` of every map of features ``(N, C, H, W)``."""
    return torch.linalg.vector_norm(check_feature(f), ord=2, dim=(2, 3))


def mean_per_sample(f: Tensor) -> Tensor:
    """Mean activation ``(N, C)`` of every map of features ``(N, C, H, W)``."""
    return check_feature(f).mean(dim=(2, 3))


def l1_scores(f: Tensor) -> Tensor:
    """Mean over samples of the maps' L1 norms, ``(C,)``."""
    return l1_per_sample(f).mean(dim=0)


def l2_scores(f: Tensor) -> Tensor:
    """Mean over samples of the maps' L2 norms, ``(C,)``."""
    return l2_per_sample(f).mean(dim=0)


def mean_scores(f: Tensor) -> Tensor:
    """Mean activation over samples and positions, ``(C,)``."""
    return check_feature(f).mean(dim=(0, 2, 3))
