"""Training data as whole-batch tensor ops: the seeded draws of an epoch, the augmentations, the rank shards.

Each epoch draws, from one seeded ``torch.Generator`` and in this order, a permutation of the training split,
the crop draws of the augmentation and the flips (:func:`epoch_draws`); a batch is then cut from the images in
memory (or decoded from a lazy image folder) by :data:`AUGMENTATIONS` ``[name].batch``. No DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tffd_viz.errors import TffdVizError

if TYPE_CHECKING:
    from tffd_viz.training.config import TrainConfig

__all__ = [
    "AUGMENTATIONS",
    "PADDING_MODES",
    "Augmentation",
    "augment_batch",
    "epoch_draws",
    "shard_positions",
]

PADDING_MODES: tuple[str, ...] = ("zeros", "reflect")


def augment_batch(
    x01: Tensor, offsets: Tensor | None, flips: Tensor | None, padding: int, padding_mode: str = "zeros"
) -> Tensor:
    """Random crop (after zero or reflect padding) and horizontal flip of a batch, as tensor ops.

    Parameters
    ----------
    x01 : Tensor (N, C, H, W)
        Images in [0, 1] (before normalisation, so zero padding is black as in torchvision's RandomCrop).
    offsets : LongTensor (N, 2) or None
        Top-left corner ``(dy, dx)`` of each crop in the padded image, each in ``[0, 2 * padding]``.
    flips : BoolTensor (N,) or None
        Which images to mirror left-right (after cropping).
    padding : int
        Pixels added on each side; ``"reflect"`` needs ``padding < min(H, W)``.
    padding_mode : {"zeros", "reflect"}
        ``"reflect"`` mirrors the border without repeating it (torchvision's
        ``Pad(p, padding_mode='reflect')``).

    Returns
    -------
    Tensor (N, C, H, W)
        ``out[i] = pad(x01[i])[:, dy:dy+H, dx:dx+W]``, flipped where ``flips[i]``.
    """
    n, _, h, w = x01.shape
    out = x01
    if padding > 0 and offsets is not None:
        if padding_mode not in PADDING_MODES:
            raise TffdVizError(f"padding_mode must be one of {list(PADDING_MODES)}, got {padding_mode!r}")
        if padding_mode == "reflect" and padding >= min(h, w):
            raise TffdVizError(f"reflect padding {padding} needs images larger than it, got {h}x{w}")
        pad_mode = "constant" if padding_mode == "zeros" else "reflect"
        padded = F.pad(x01, (padding, padding, padding, padding), mode=pad_mode)
        offsets = offsets.to(x01.device)
        rows = offsets[:, 0].view(n, 1, 1) + torch.arange(h, device=x01.device).view(1, h, 1)
        cols = offsets[:, 1].view(n, 1, 1) + torch.arange(w, device=x01.device).view(1, 1, w)
        batch = torch.arange(n, device=x01.device).view(n, 1, 1)
        out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(
            0, 3, 1, 2
        )  # (N, H, W, C) -> (N, C, H, W)
    if flips is not None:
        out = torch.where(flips.to(x01.device).view(n, 1, 1, 1), out.flip(3), out)
    return out.contiguous()


def epoch_draws(
    n: int, cfg: TrainConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Draw, in this order, the permutation (n,), the crop draws of :data:`AUGMENTATIONS` (``pad_crop_flip``:
    offsets (n, 2); ``random_resized_crop``: uniforms (n, 10, 4)) and flips (n,) of one epoch."""
    perm = torch.randperm(n, generator=gen)
    offsets = AUGMENTATIONS[cfg.augment].crops(n, cfg, gen)
    flips = torch.rand(n, generator=gen) < 0.5 if cfg.flip else None
    return perm, offsets, flips


def _as_float01(x: Tensor) -> Tensor:
    """Images as float in [0, 1]: uint8 divided by 255, anything else as float."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _pad_crops(n: int, cfg: TrainConfig, gen: torch.Generator) -> Tensor | None:
    return torch.randint(0, 2 * cfg.crop_padding + 1, (n, 2), generator=gen) if cfg.crop_padding > 0 else None


def _pad_crop_flip(
    train_set: Any,
    images: Tensor | None,
    idx: Tensor,
    crops: Tensor | None,
    flips: Tensor | None,
    cfg: TrainConfig,
) -> Tensor:
    x01 = images[idx] if images is not None else train_set.float01(idx.cpu()).to(idx.device)
    return augment_batch(_as_float01(x01), crops, flips, cfg.crop_padding, cfg.padding_mode)


def _rrc_crops(n: int, cfg: TrainConfig, gen: torch.Generator) -> Tensor:
    from tffd_viz.imagefolder import RRC_ATTEMPTS

    return torch.rand(n, RRC_ATTEMPTS, 4, generator=gen)


def _random_resized_crop(
    train_set: Any,
    images: Tensor | None,
    idx: Tensor,
    crops: Tensor | None,
    flips: Tensor | None,
    cfg: TrainConfig,
) -> Tensor:
    """torchvision's RandomResizedCrop (+ flip): from the files of a lazy folder, else from the in-memory
    images."""
    from tffd_viz.imagefolder import random_resized_crop_box

    if crops is None:
        raise TffdVizError("random_resized_crop needs the epoch's crop draws (epoch_draws), got None")
    if images is None:
        return train_set.random_resized_crops01(idx.cpu(), crops, flips).to(idx.device)
    x = _as_float01(images[idx])
    h, w = x.shape[2:]
    out = torch.empty_like(x)
    for k in range(x.shape[0]):
        top, left, ch, cw = random_resized_crop_box(w, h, crops[k])
        out[k] = F.interpolate(
            x[k : k + 1, :, top : top + ch, left : left + cw],
            size=(h, w),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0]
    return augment_batch(out, None, flips, 0)


@dataclass(frozen=True)
class Augmentation:
    """A training augmentation: its per-epoch crop draws and how a batch is made from them."""

    crops: Callable[[int, TrainConfig, torch.Generator], Tensor | None]
    batch: Callable[[Any, Tensor | None, Tensor, Tensor | None, Tensor | None, TrainConfig], Tensor]


#: Augmentation name -> draws and batch function ``(split, images on device or None, idx, crops, flips, cfg)
#: -> float images (n, C, H, W) in [0, 1]``.
AUGMENTATIONS: dict[str, Augmentation] = {
    "pad_crop_flip": Augmentation(_pad_crops, _pad_crop_flip),
    "random_resized_crop": Augmentation(_rrc_crops, _random_resized_crop),
}


def shard_positions(n: int, world: int, rank: int) -> Tensor:
    """Positions into an epoch's permutation for ``rank`` (DistributedSampler: pad by wrapping, stride).

    Returns
    -------
    LongTensor (ceil(n / world),)
        ``arange(ceil(n / world) * world) % n``, every ``world``-th from ``rank``.
    """
    total = math.ceil(n / world) * world
    positions = torch.arange(total) % n
    return positions[rank:total:world]
