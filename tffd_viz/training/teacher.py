"""The frozen teacher of Tf-FD+ (``method="tffd_kd"``): loaded by the safe loader, giving logits of a
batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tffd_viz.data import DatasetBundle
from tffd_viz.errors import TffdVizError
from tffd_viz.training.step import autocast, memory_format

__all__ = ["Teacher", "loaded_teacher"]


@dataclass
class Teacher:
    """A frozen teacher of Tf-FD+: the model (eval mode), its own input normalisation and its card.

    Attributes
    ----------
    model : nn.Module
    mean, std : Tensor (1, C, 1, 1)
        The teacher's input normalisation (its card's, else the dataset's).
    description : dict
        What the student's card records: ``path``, ``sha256``, ``arch``, ``final_acc``, ``method``.
    """

    model: nn.Module
    mean: Tensor
    std: Tensor
    description: dict[str, Any]

    def logits(self, x01: Tensor, amp: torch.dtype | None) -> Tensor:
        """Teacher logits (N, K) of images in [0, 1] (N, C, H, W), normalised with the teacher's
        statistics."""
        x = ((x01 - self.mean) / self.std).contiguous(memory_format=memory_format(self.model))
        with torch.no_grad(), autocast(x01.device, amp):
            return self.model(x).float()


def loaded_teacher(path: str, bundle: DatasetBundle, device: torch.device) -> Teacher:
    """Load the teacher checkpoint at ``path`` with the safe loader, check it fits ``bundle``, freeze it.

    Raises
    ------
    TffdVizError
        A teacher whose number of classes or input channels differs from the dataset's.
    """
    from tffd_viz.checkpoints import load_checkpoint

    model, card = load_checkpoint(path, device=device)
    if card["num_classes"] != len(bundle.classes) or card["in_chans"] != bundle.in_chans:
        raise TffdVizError(
            f"teacher {path!r} has {card['num_classes']} classes and {card['in_chans']} "
            f"input channels; {bundle.name} has {len(bundle.classes)} and {bundle.in_chans}"
        )
    model.eval().requires_grad_(False)
    mean = card.get("mean") or list(bundle.mean)
    std = card.get("std") or list(bundle.std)
    view = (1, -1, 1, 1)
    return Teacher(
        model=model,
        mean=torch.tensor(mean, device=device).view(view),
        std=torch.tensor(std, device=device).view(view),
        description={
            "path": path,
            "sha256": card.get("sha256"),
            "arch": card["arch"],
            "final_acc": card.get("final_acc"),
            "method": card.get("method"),
        },
    )
