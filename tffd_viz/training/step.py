"""One optimisation step, and the evaluations run after each epoch (test accuracy, probe saliency).

A step is a single forward pass giving the logits and the stage taps (:func:`train_step`); the loss is
``CE + warm * TfFD(taps).total`` (+ ``warm * lambda_kd * KD`` with a teacher), or plain CE with the Tf-FD
terms computed detached, for logging only.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tffd_viz.data import ImageDataset
from tffd_viz.features import eval_mode
from tffd_viz.losses import TfFD, channel_saliency, logit_kd
from tffd_viz.models import default_taps, extract_taps

__all__ = ["autocast", "evaluate_accuracy", "inner", "memory_format", "probe_saliency", "train_step"]


def inner(model: nn.Module) -> nn.Module:
    """The module a ``DistributedDataParallel`` wraps, else ``model`` itself."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on ``device``'s type with ``dtype``; a no-op context for ``dtype=None`` (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(model: nn.Module) -> torch.memory_format:
    """``torch.channels_last`` when the model's first 4-D weight is stored so, else
    ``torch.contiguous_format``."""
    w = next((p for p in model.parameters() if p.ndim == 4), None)
    if w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _model_taps(model: nn.Module, x: Tensor, taps: Sequence[str]) -> tuple[Tensor, OrderedDict[str, Tensor]]:
    """One forward pass through ``model`` (possibly a DDP wrapper) with hooks on the inner module's taps."""
    prefix = "module." if isinstance(model, DistributedDataParallel) else ""
    logits, feats = extract_taps(model, x, [prefix + t for t in taps], return_logits=True)
    return logits, OrderedDict((t, feats[prefix + t]) for t in taps)


def train_step(
    model: nn.Module,
    batch: Tensor,
    labels: Tensor,
    tffd: TfFD | None,
    warm: float,
    optimizer: torch.optim.Optimizer,
    *,
    taps: Sequence[str] | None = None,
    apply_tffd: bool = True,
    autocast_dtype: torch.dtype | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    teacher_logits: Tensor | None = None,
    lambda_kd: float = 0.0,
    kd_temperature: float = 4.0,
) -> dict[str, float]:
    """One optimisation step: a single forward pass gives logits and taps, then CE (+ Tf-FD), backward, step.

    Parameters
    ----------
    model : nn.Module
        In train mode; a zoo model or a ``DistributedDataParallel`` wrapping one.
    batch : Tensor (N, C, H, W)
        Normalised images on the model's device.
    labels : LongTensor (N,)
    tffd : TfFD or None
        The Tf-FD loss over the taps; None computes no Tf-FD term at all.
    warm : float
        Warm-up weight of the Tf-FD total (:func:`tffd_viz.losses.warmup_weight`).
    optimizer : Optimizer
    taps : list of str, optional
        Tap names of the inner model (default: its default taps).
    apply_tffd : bool
        False (baseline): the terms are computed under ``no_grad`` from detached taps, for logging only.
    autocast_dtype : torch.dtype or None
        Run forward and loss under ``torch.autocast`` with this dtype.
    scheduler : LRScheduler, optional
        Stepped after the optimiser.
    teacher_logits : Tensor (N, K), optional
        Tf-FD+ (``tffd_kd``): the teacher's logits of this batch; adds
        ``warm * lambda_kd * logit_kd(logits, teacher_logits, kd_temperature)`` to the loss.
    lambda_kd, kd_temperature : float

    Returns
    -------
    dict of float
        ``loss``, ``ce``, ``tffd_total`` (lambda-weighted, before warm-up; NaN without ``tffd``),
        ``intra/<tap>``, ``inter/<a>-><b>``, ``kd`` (unweighted logit KD, with ``teacher_logits`` only),
        ``correct`` (count), ``n`` (batch size), ``lr`` (used).
    """
    names = list(taps) if taps is not None else list(default_taps(inner(model)))
    lr = float(optimizer.param_groups[0]["lr"])
    with autocast(batch.device, autocast_dtype):
        logits, feats = _model_taps(model, batch, names)
        ce = F.cross_entropy(logits.float(), labels)
        out = None
        loss = ce
        if tffd is not None and apply_tffd:
            out = tffd(feats)
            loss = ce + warm * out.total
        elif tffd is not None:
            with torch.no_grad():
                out = tffd(OrderedDict((k, v.detach()) for k, v in feats.items()))
        kd = None
        if teacher_logits is not None:
            kd = logit_kd(logits, teacher_logits, kd_temperature)
            loss = loss + warm * lambda_kd * kd
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    values = {"loss": loss, "ce": ce, "correct": (logits.detach().argmax(1) == labels).sum()}
    if kd is not None:
        values["kd"] = kd
    if out is not None:
        values["tffd_total"] = out.total
        values.update({f"intra/{k}": v for k, v in out.intra.items()})
        values.update({f"inter/{k}": v for k, v in out.inter.items()})
    floats = torch.stack([v.detach().float() for v in values.values()]).tolist()  # one device sync per step
    stats = dict(zip(values, floats, strict=True))
    stats.setdefault("tffd_total", float("nan"))
    stats["n"] = float(labels.shape[0])
    stats["lr"] = lr
    return stats


def evaluate_accuracy(
    model: nn.Module,
    dataset: ImageDataset,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Top-1 accuracy (percent) of ``model`` on a whole split with the test transform, in eval mode.

    Parameters
    ----------
    model : nn.Module
        Maps ``(n, C, H, W)`` normalised images to logits; its train/eval mode is restored afterwards.
    dataset : ImageDataset
    batch_size : int
    device : device, optional
        Default: the model's device.
    autocast_dtype : torch.dtype or None
        Run the forward passes under ``torch.autocast`` with this dtype.

    Returns
    -------
    float
        ``100 * correct / len(dataset)``.
    """
    model = inner(model)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    fmt = memory_format(model)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with eval_mode(model), torch.no_grad(), autocast(device, autocast_dtype):
        for start in range(0, len(dataset), batch_size):
            idx = slice(start, min(start + batch_size, len(dataset)))
            x = dataset.normalized(idx).to(device).contiguous(memory_format=fmt)
            correct += (model(x).argmax(1) == dataset.labels[idx].to(device)).sum()
    return 100.0 * float(correct) / max(1, len(dataset))


def _significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def probe_saliency(model: nn.Module, probe: Tensor, taps: Sequence[str]) -> dict[str, list[float]]:
    """Per-channel :func:`~tffd_viz.losses.channel_saliency` of every tap on a probe batch
    (eval mode, no_grad).

    Parameters
    ----------
    model : nn.Module
    probe : Tensor (n, C, H, W)
        Normalised images on the model's device.
    taps : list of str

    Returns
    -------
    dict[str, list[float]]
        ``tap -> [C_tap values]`` rounded to 4 significant digits.
    """
    model = inner(model)
    with eval_mode(model), torch.no_grad():
        feats = extract_taps(model, probe.contiguous(memory_format=memory_format(model)), list(taps))
    return {
        k: [_significant(v) for v in channel_saliency(f.float()).cpu().tolist()] for k, f in feats.items()
    }
