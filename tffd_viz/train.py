"""Training with and without Tf-FD: recipes, the seeded in-memory loop, resumable state, model cards.

One hyper-parameter dict per recipe (:data:`RECIPES`), a :class:`TrainConfig` holding every option,
and :func:`train` running the loop:

* data stay in memory; each epoch draws, from one seeded ``torch.Generator``, a permutation of the
  training split and per-image crop offsets and flips (:func:`augment_batch`, whole-batch tensor ops,
  no DataLoader workers); normalisation uses the dataset's mean/std;
* one forward pass per step gives the logits and the stage taps (:func:`train_step`); the loss is
  ``CE + warmup_weight(epoch, warmup) * TfFD(taps).total`` for ``method="tffd"``, plain CE for
  ``"baseline"`` (whose Tf-FD terms are still computed, detached, and logged);
* after every epoch: test accuracy, a history row (lr, CE, every intra/inter term, weighted total,
  train/test accuracy, seconds, per-channel saliency of every tap on a fixed probe batch) and a
  resumable state ``<out>.resume.pt`` (torch.save, read back with ``weights_only=True``);
* at the end the weights and a model card go to ``<out>.safetensors`` + ``<out>.json``
  (:func:`tffd_viz.checkpoints.save_checkpoint`).

Multi-process data parallel training (``torchrun --nproc_per_node=N -m tffd_viz train ...``) is
detected from ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``: each rank takes a disjoint shard of the epoch's
seeded permutation (DistributedSampler semantics), the model is wrapped in
``DistributedDataParallel``, and only rank 0 evaluates and writes files.

>>> from tffd_viz.train import config_from_recipe, train
>>> model, card = train(config_from_recipe("digits", method="tffd", epochs=2, out=None))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import platform
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tffd_viz.data import SIZED_DATASETS, DatasetBundle, ImageDataset, load_dataset, sample_indices
from tffd_viz.errors import CheckpointError, TffdVizError, TrainingDiverged
from tffd_viz.features import eval_mode
from tffd_viz.losses import TfFD, channel_saliency, logit_kd, warmup_weight
from tffd_viz.models import create_model, default_taps, extract_taps, input_size

__all__ = [
    "AUGMENTATIONS",
    "LAYER_PRESETS",
    "METHODS",
    "PRECISIONS",
    "RECIPES",
    "SCHEDULES",
    "SWEEP_KEYS",
    "TrainConfig",
    "augment_batch",
    "checkpoint_stem",
    "config_from_recipe",
    "evaluate_accuracy",
    "parse_pairs",
    "parse_stages",
    "probe_saliency",
    "resume_path",
    "run_sweep",
    "state_sha256",
    "sweep_prefix",
    "train",
    "train_step",
]

# --------------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------------

#: Hyper-parameters of each named recipe (airbench style: one dict per recipe, nothing hidden elsewhere; the
#: others are ``paper`` with the values that differ written out).
RECIPES: dict[str, dict[str, Any]] = {
    # The reference CIFAR setting of the Tf-FD authors' ``train_kd.py`` (Teacher-free-Distillation, newest
    # version; line numbers of that file). Lambdas: the reference README's command (8e-4 / 5e-4); the argparse
    # defaults of ``train_kd.py`` (lines 71-72) are 4e-4 / 5e-3 instead.
    "paper": {
        "arch": "resnet20", "dataset": "cifar100",
        "epochs": 240,                      # epochs (argparse default)
        "batch_size": 128,                  # images per step (argparse default)
        "lr": 0.1,                          # initial lr (argparse default)
        "schedule": "multistep", "milestones": (150, 180, 210), "gamma": 0.1,  # adjust_lr: /10 at 150/180/210
        "lr_warmup": 0.0, "pct_start": 0.25,  # unused by multistep
        "momentum": 0.9,                    # SGD momentum (argparse default)
        "nesterov": True,                   # SGD(..., nesterov=True), lines 191/197
        "weight_decay": 5e-4,               # on every parameter (argparse default)
        "crop_padding": 4, "padding_mode": "reflect",  # transforms.Pad(4, padding_mode='reflect'), line 212
        "flip": True,                       # RandomCrop(32) then RandomHorizontalFlip, line 212
        "lambda_intra": 8e-4, "lambda_inter": 5e-4,  # the reference README's command
        "warmup": 20.0,                     # --kd-warm-up 20 (line 73): weight min(1, epoch / 20)
        "lambda_kd": 1.0, "kd_temperature": 4.0,  # Tf-FD+ (tffd_kd) logit KD: KL(s/T || t/T) * T^2 * lambda_kd
        "augment": "pad_crop_flip",         # AUGMENTATIONS: pad, random crop, flip (crop_padding, flip above)
    },
}
# A 30-epoch CPU-affordable CIFAR schedule: one-cycle to 0.15, paper lambdas, warm-up scaled 20/240*30 ~ 3. Plain
# momentum and zero padding, as the shipped ``cpu30`` checkpoints were trained.
RECIPES["cpu30"] = {
    **RECIPES["paper"],
    "epochs": 30, "lr": 0.15, "schedule": "onecycle", "milestones": (), "pct_start": 0.2, "warmup": 3.0,
    "nesterov": False, "padding_mode": "zeros",
}
# resnet8 on scikit-learn digits: small crop (zero padding), no flip (digits are not mirror-symmetric), one-cycle.
# torchvision's ImageNet reference (references/classification: resnet18 ... resnet50): SGD 0.1, momentum 0.9 (not
# Nesterov), weight decay 1e-4, 90 epochs, /10 at 30 and 60, RandomResizedCrop(224) + flip, evaluation resize 256 +
# centre crop 224. batch_size is per process (torchvision: 32 per GPU x 8); lambdas and warm-up stay the CIFAR ones.
RECIPES["imagenet"] = {
    **RECIPES["paper"],
    "arch": "resnet18", "dataset": "imagefolder", "epochs": 90, "batch_size": 256, "lr": 0.1,
    "schedule": "multistep", "milestones": (30, 60), "gamma": 0.1, "nesterov": False, "weight_decay": 1e-4,
    "crop_padding": 0, "padding_mode": "zeros", "flip": True, "augment": "random_resized_crop",
}
RECIPES["digits"] = {
    **RECIPES["paper"],
    "arch": "resnet8", "dataset": "digits", "epochs": 30, "batch_size": 64,
    "schedule": "onecycle", "milestones": (), "crop_padding": 2, "flip": False, "warmup": 3.0,
    "nesterov": False, "padding_mode": "zeros",
}

METHODS: tuple[str, ...] = ("baseline", "tffd", "tffd_kd")
PADDING_MODES: tuple[str, ...] = ("zeros", "reflect")
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

#: Options a resumed run may change without changing the trained weights.
_RESUME_FREE = frozenset({"device", "out", "resume", "quiet", "threads", "probe_size", "stop_after", "time_limit",
                          "data_root", "eval_batch_size"})

#: Options added after runs were already in progress: the value a saved state that lacks the key was trained
#: with. A state without the key resumes only where the option now has that value; any other key a state lacks
#: is a difference.
_RESUME_ABSENT_MEANS: dict[str, Any] = {"padding_mode": "zeros", "lambda_kd": 1.0, "kd_temperature": 4.0,
                                        "teacher": None, "augment": "pad_crop_flip"}


@dataclass
class TrainConfig:
    """Every option of a training run (defaults: the ``paper`` recipe, ``method="tffd"``).

    Attributes
    ----------
    arch, dataset : str
        Zoo model name and dataset name (see :mod:`tffd_viz.models`, :mod:`tffd_viz.data`).
    data_root : str or None
        Data root for CIFAR / image folders.
    method : {"baseline", "tffd", "tffd_kd"}
        Train on CE only, on ``CE + warm-up * Tf-FD``, or (Tf-FD+, the reference's ``tfd+`` mode) on
        ``CE + warm-up * (Tf-FD + lambda_kd * T^2 * KL(softmax(t / T) || softmax(s / T)))`` with a teacher.
    lambda_intra, lambda_inter : float
        Weights of the two Tf-FD families.
    stages : list of str/int or None
        Taps that take the intra term (names or indices into the model's default taps); None = all.
    pairs : list of (str/int, str/int) or None
        ``(shallow, deep)`` pairs of the inter term; None = every ``i < j``.
    warmup : float
        Epochs over which the Tf-FD weight ramps up (``min(1, epoch / warmup)``, epoch from 1).
    epochs, batch_size : int
        ``batch_size`` is per process under torchrun.
    lr, schedule, milestones, gamma, lr_warmup, pct_start
        Peak learning rate and the schedule (:data:`SCHEDULES`): ``multistep`` divides by ``1/gamma`` at
        each milestone epoch; ``onecycle`` ramps (cosine) from ``lr/25`` to ``lr`` over the first
        ``pct_start`` of the steps and anneals (cosine) to ``lr/1e4``; ``cosine`` warms up linearly for
        ``lr_warmup`` epochs then follows a cosine to 0.
    momentum, nesterov, weight_decay : SGD settings (weight decay on every parameter, as the reference).
    crop_padding : int
        Random crop after padding by this many pixels (0 = no crop).
    padding_mode : {"zeros", "reflect"}
        How the crop pads: black pixels (torchvision's ``RandomCrop(padding=p)``) or a mirror of the border
        (``Pad(p, padding_mode='reflect')``, the reference).
    flip : bool
        Random horizontal flip.
    augment : {"pad_crop_flip", "random_resized_crop"}
        :data:`AUGMENTATIONS`: the CIFAR crop after padding (``crop_padding``, ``padding_mode``), or torchvision's
        ``RandomResizedCrop`` (scale 0.08-1, aspect 3/4-4/3) from the full image (a 224-pixel image folder is
        decoded from its files); both then flip when ``flip``.
    seed : int
        Seeds the model initialisation and the data generator.
    device : {"auto", "cpu", "cuda"}
    out : str or None
        Output path (``x`` or ``x.safetensors``): writes ``x.safetensors``, ``x.json`` and the resumable
        ``x.resume.pt`` after each epoch; None writes nothing.
    resume : str or None
        ``"auto"`` = continue from ``<out>.resume.pt`` if it exists; a path = continue from that file.
    recipe : str or None
        Name of the recipe the values came from (recorded in the card).
    precision : {"fp32", "bf16"}
        ``bf16`` runs forward/loss under ``torch.autocast(bfloat16)``; weights stay fp32.
    threads : int or None
        ``torch.set_num_threads`` for this process (None: leave as is).
    probe_size : int
        Images of the fixed probe batch (train split, seed 0, test transform) for the saliency log.
    quiet : bool
        No per-epoch lines or progress bar.
    limit_train : int or None
        Use only the first ``limit_train`` images of each epoch's permutation (tests, smoke runs).
    time_limit : float or None
        Stop, as ``stop_after`` does, after the epoch past which another epoch of the same length would end
        later than this many seconds after the start of this process's training (device calls with a limit).
    stop_after : int or None
        Stop after this epoch as if interrupted (the resume state is written; no checkpoint).
    sync_saliency : bool
        Under torchrun, average the channel saliency over ranks before ordering channels.
    eval_batch_size : int
    teacher : str or None
        ``tffd_kd`` only: path of the teacher checkpoint (any format :func:`tffd_viz.checkpoints.load_checkpoint`
        accepts; its sha256 goes into the card).
    lambda_kd, kd_temperature : float
        ``tffd_kd`` only: weight and temperature ``T`` of the logit KD term.
    """

    arch: str = "resnet20"
    dataset: str = "cifar100"
    data_root: str | None = None
    method: str = "tffd"
    lambda_intra: float = 8e-4
    lambda_inter: float = 5e-4
    stages: list[str | int] | None = None
    pairs: list[tuple[str | int, str | int]] | None = None
    warmup: float = 20.0
    epochs: int = 240
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "multistep"
    milestones: tuple[int, ...] = (150, 180, 210)
    gamma: float = 0.1
    lr_warmup: float = 0.0
    pct_start: float = 0.25
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    crop_padding: int = 4
    padding_mode: str = "reflect"
    augment: str = "pad_crop_flip"
    flip: bool = True
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    resume: str | None = None
    recipe: str | None = None
    precision: str = "fp32"
    threads: int | None = None
    probe_size: int = 256
    quiet: bool = False
    limit_train: int | None = None
    stop_after: int | None = None
    time_limit: float | None = None
    sync_saliency: bool = False
    eval_batch_size: int = 512
    teacher: str | None = None
    lambda_kd: float = 1.0
    kd_temperature: float = 4.0
    hparams: dict[str, Any] = field(default_factory=dict)

    def check(self) -> TrainConfig:
        """Return self after validating every value; raise :class:`TffdVizError` naming the bad one.

        Each rule of :data:`OPTION_RULES` names the option, the value and the allowed range; then the
        rules that tie options together (multistep milestones increasing and below ``epochs``, a teacher for
        ``tffd_kd``, Nesterov momentum > 0).
        """
        for name, (ok, allowed) in OPTION_RULES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if not ok(value):
                raise TffdVizError(f"option {name} = {value!r} is not allowed: {allowed}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise TffdVizError(f"option device = {self.device!r} is not allowed: auto, cpu, cuda or cuda:N")
        if self.schedule == "multistep":
            ms = list(self.milestones)
            if any(b <= a for a, b in zip(ms, ms[1:])) or any(not 0 < m < self.epochs for m in ms):
                raise TffdVizError(f"option milestones = {ms} is not allowed: increasing epochs in "
                                   f"[1, epochs - 1] = [1, {self.epochs - 1}] (multistep schedule)")
        if self.nesterov and self.momentum <= 0:
            raise TffdVizError(f"option nesterov = True needs momentum > 0, got momentum = {self.momentum!r}")
        if self.method == "tffd_kd" and not self.teacher:
            raise TffdVizError("option teacher is required by method tffd_kd (a checkpoint path, e.g. "
                               "--teacher checkpoints/cifar100_resnet20_baseline_s0.safetensors)")
        return self


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _one_of(options: Sequence[Any] | dict) -> Callable[[Any], bool]:
    return lambda v: v in options


#: Option -> (test, allowed range in words). Every option a user sets is checked before any work.
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "method": (_one_of(METHODS), f"one of {list(METHODS)}"),
    "lambda_intra": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 switches the family off)"),
    "lambda_inter": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 switches the family off)"),
    "lambda_kd": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "kd_temperature": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "warmup": (lambda v: _finite(v) and v >= 0, "a finite number of epochs >= 0 (0 = no warm-up)"),
    "epochs": (_int_at_least(1), "a whole number >= 1"),
    "batch_size": (_int_at_least(1), "a whole number >= 1"),
    "lr": (lambda v: _finite(v) and 0 < v <= 10, "a finite number in (0, 10]"),
    "schedule": (lambda v: v in SCHEDULES, "multistep, onecycle or cosine (SCHEDULES)"),
    "gamma": (lambda v: _finite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "lr_warmup": (lambda v: _finite(v) and v >= 0, "a finite number of epochs >= 0"),
    "pct_start": (lambda v: _finite(v) and 0 < v < 1, "a number in (0, 1)"),
    "momentum": (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "crop_padding": (lambda v: _int_at_least(0)(v) and v <= 64, "a whole number of pixels in [0, 64]"),
    "padding_mode": (_one_of(PADDING_MODES), f"one of {list(PADDING_MODES)}"),
    "augment": (lambda v: v in AUGMENTATIONS, "pad_crop_flip or random_resized_crop (AUGMENTATIONS)"),
    "seed": (_int_at_least(0), "a whole number >= 0"),
    "precision": (_one_of(PRECISIONS), f"one of {sorted(PRECISIONS)}"),
    "threads": (_int_at_least(1), "a whole number >= 1"),
    "probe_size": (_int_at_least(1), "a whole number >= 1"),
    "eval_batch_size": (_int_at_least(1), "a whole number >= 1"),
    "limit_train": (_int_at_least(1), "a whole number >= 1"),
    "stop_after": (_int_at_least(1), "a whole number >= 1"),
    "time_limit": (lambda v: _finite(v) and v > 0, "a finite number of seconds > 0"),
}
_OPTIONAL = frozenset({"threads", "limit_train", "stop_after", "time_limit"})


def config_from_recipe(name: str, **overrides: Any) -> TrainConfig:
    """Return the :class:`TrainConfig` of recipe ``name`` with ``overrides`` (None values are ignored).

    The effective hyper-parameters (recipe values with overrides applied) are kept in
    ``config.hparams`` and go into the model card.

    Raises
    ------
    TffdVizError
        For an unknown recipe or option name.
    """
    if name not in RECIPES:
        raise TffdVizError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"hparams"}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TffdVizError(f"unknown training option(s) {unknown}; valid: {sorted(names)}")
    values: dict[str, Any] = dict(RECIPES[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    hparams = {k: values[k] for k in RECIPES[name]}
    if "milestones" in values:
        values["milestones"] = tuple(int(m) for m in values["milestones"])
        hparams["milestones"] = list(values["milestones"])
    return TrainConfig(recipe=name, hparams=hparams, **values).check()


# --------------------------------------------------------------------------------------------------
# learning-rate schedules (step -> factor of the peak lr)
# --------------------------------------------------------------------------------------------------


def _multistep(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        epoch = step // steps_per_epoch  # 0-based epoch of this step
        return cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    return factor


def _onecycle(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, cfg.epochs * steps_per_epoch)
    start, end = 1.0 / 25.0, 1.0 / 1e4

    def factor(step: int) -> float:
        t = min(step, total) / total
        if t < cfg.pct_start:
            return start + (1 - start) * (1 - math.cos(math.pi * t / cfg.pct_start)) / 2
        return end + (1 - end) * (1 + math.cos(math.pi * (t - cfg.pct_start) / (1 - cfg.pct_start))) / 2
    return factor


def _cosine(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(round(cfg.lr_warmup * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(step - warm, total - warm) / max(1, total - warm)
        return (1 + math.cos(math.pi * t)) / 2
    return factor


#: Schedule name -> ``(config, steps_per_epoch) -> (step -> lr factor)``; stepped once per optimiser step.
SCHEDULES: dict[str, Callable[[TrainConfig, int], Callable[[int], float]]] = {
    "multistep": _multistep,
    "onecycle": _onecycle,
    "cosine": _cosine,
}


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


def augment_batch(x01: Tensor, offsets: Tensor | None, flips: Tensor | None, padding: int,
                  padding_mode: str = "zeros") -> Tensor:
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
        ``"reflect"`` mirrors the border without repeating it (torchvision's ``Pad(p, padding_mode='reflect')``).

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
        out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if flips is not None:
        out = torch.where(flips.to(x01.device).view(n, 1, 1, 1), out.flip(3), out)
    return out.contiguous()


def _epoch_draws(n: int, cfg: TrainConfig, gen: torch.Generator) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Draw, in this order, the permutation (n,), the crop draws of :data:`AUGMENTATIONS` (``pad_crop_flip``:
    offsets (n, 2); ``random_resized_crop``: uniforms (n, 10, 4)) and flips (n,) of one epoch."""
    perm = torch.randperm(n, generator=gen)
    offsets = AUGMENTATIONS[cfg.augment].crops(n, cfg, gen)
    flips = torch.rand(n, generator=gen) < 0.5 if cfg.flip else None
    return perm, offsets, flips


def _pad_crops(n: int, cfg: TrainConfig, gen: torch.Generator) -> Tensor | None:
    return torch.randint(0, 2 * cfg.crop_padding + 1, (n, 2), generator=gen) if cfg.crop_padding > 0 else None


def _pad_crop_flip(train_set: Any, images: Tensor | None, idx: Tensor, crops: Tensor | None, flips: Tensor | None,
                   cfg: TrainConfig) -> Tensor:
    x01 = images[idx] if images is not None else train_set.float01(idx.cpu()).to(idx.device)
    x01 = x01.float().div_(255.0) if x01.dtype == torch.uint8 else x01.float()
    return augment_batch(x01, crops, flips, cfg.crop_padding, cfg.padding_mode)


def _rrc_crops(n: int, cfg: TrainConfig, gen: torch.Generator) -> Tensor:
    from tffd_viz.imagefolder import RRC_ATTEMPTS

    return torch.rand(n, RRC_ATTEMPTS, 4, generator=gen)


def _random_resized_crop(train_set: Any, images: Tensor | None, idx: Tensor, crops: Tensor, flips: Tensor | None,
                         cfg: TrainConfig) -> Tensor:
    """torchvision's RandomResizedCrop (+ flip): from the files of a lazy folder, else from the in-memory images."""
    from tffd_viz.imagefolder import random_resized_crop_box

    if images is None:
        return train_set.random_resized_crops01(idx.cpu(), crops, flips).to(idx.device)
    x = images[idx]
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    h, w = x.shape[2:]
    out = torch.empty_like(x)
    for k in range(x.shape[0]):
        top, left, ch, cw = random_resized_crop_box(w, h, crops[k])
        out[k] = F.interpolate(x[k:k + 1, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                               align_corners=False, antialias=True)[0]
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


def _shard_positions(n: int, world: int, rank: int) -> Tensor:
    """Positions into an epoch's permutation for ``rank`` (DistributedSampler: pad by wrapping, stride)."""
    total = math.ceil(n / world) * world
    positions = torch.arange(total) % n
    return positions[rank:total:world]


# --------------------------------------------------------------------------------------------------
# one step
# --------------------------------------------------------------------------------------------------


def _inner(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _model_taps(model: nn.Module, x: Tensor, taps: Sequence[str]) -> tuple[Tensor, OrderedDict[str, Tensor]]:
    """One forward pass through ``model`` (possibly a DDP wrapper) with hooks on the inner module's taps."""
    prefix = "module." if isinstance(model, DistributedDataParallel) else ""
    logits, feats = extract_taps(model, x, [prefix + t for t in taps], return_logits=True)
    return logits, OrderedDict((t, feats[prefix + t]) for t in taps)


def train_step(model: nn.Module, batch: Tensor, labels: Tensor, tffd: TfFD | None, warm: float,
               optimizer: torch.optim.Optimizer, *, taps: Sequence[str] | None = None, apply_tffd: bool = True,
               autocast_dtype: torch.dtype | None = None,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
               teacher_logits: Tensor | None = None, lambda_kd: float = 0.0,
               kd_temperature: float = 4.0) -> dict[str, float]:
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
    names = list(taps) if taps is not None else list(default_taps(_inner(model)))
    lr = float(optimizer.param_groups[0]["lr"])
    with _autocast(batch.device, autocast_dtype):
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
    keys = ["loss", "ce", "correct"]
    values = [loss.detach().float(), ce.detach().float(), (logits.detach().argmax(1) == labels).sum().float()]
    if kd is not None:
        keys.append("kd")
        values.append(kd.detach().float())
    if out is not None:
        keys.append("tffd_total")
        values.append(out.total.detach().float())
        for k, v in out.intra.items():
            keys.append(f"intra/{k}")
            values.append(v.detach().float())
        for k, v in out.inter.items():
            keys.append(f"inter/{k}")
            values.append(v.detach().float())
    stats = dict(zip(keys, torch.stack(values).tolist(), strict=True))  # one device sync per step
    stats.setdefault("tffd_total", float("nan"))
    stats["n"] = float(labels.shape[0])
    stats["lr"] = lr
    return stats


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------


def _memory_format(model: nn.Module) -> torch.memory_format:
    w = next((p for p in model.parameters() if p.ndim == 4), None)
    if w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def evaluate_accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 512,
                      device: torch.device | str | None = None, autocast_dtype: torch.dtype | None = None) -> float:
    """Top-1 accuracy (percent) of ``model`` on a whole split with the test transform, in eval mode.

    Parameters
    ----------
    model : nn.Module
        Maps ``(n, C, H, W)`` normalised images to logits; its train/eval mode is restored afterwards.
    dataset : ImageDataset
    batch_size : int
    device : device, optional
        Default: the model's device.

    Returns
    -------
    float
        ``100 * correct / len(dataset)``.
    """
    model = _inner(model)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    fmt = _memory_format(model)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with eval_mode(model), torch.no_grad(), _autocast(device, autocast_dtype):
        for start in range(0, len(dataset), batch_size):
            idx = slice(start, min(start + batch_size, len(dataset)))
            x = dataset.normalized(idx).to(device).contiguous(memory_format=fmt)
            correct += (model(x).argmax(1) == dataset.labels[idx].to(device)).sum()
    return 100.0 * float(correct) / max(1, len(dataset))


def _significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def probe_saliency(model: nn.Module, probe: Tensor, taps: Sequence[str]) -> dict[str, list[float]]:
    """Per-channel :func:`channel_saliency` of every tap on a probe batch (eval mode, no_grad), 4 digits.

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
    model = _inner(model)
    with eval_mode(model), torch.no_grad():
        feats = extract_taps(model, probe.contiguous(memory_format=_memory_format(model)), list(taps))
    return {k: [_significant(v) for v in channel_saliency(f.float()).cpu().tolist()] for k, f in feats.items()}


# --------------------------------------------------------------------------------------------------
# stages, pairs, paths
# --------------------------------------------------------------------------------------------------


def _stage_key(text: str | int) -> str | int:
    if isinstance(text, int):
        return text
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _spec_word(spec: object) -> tuple[bool, list | None]:
    """The words :func:`parse_stages` and :func:`parse_pairs` share: ``(True, None)`` for None or ``"all"``,
    ``(True, [])`` for ``"none"`` or ``""`` (case and surrounding spaces ignored), else ``(False, None)``."""
    if spec is None:
        return True, None
    word = spec.strip().lower() if isinstance(spec, str) else None
    if word == "all":
        return True, None
    if word in ("none", ""):
        return True, []
    return False, None


def parse_stages(spec: str | Sequence[str | int] | None) -> list[str | int] | None:
    """Parse ``"layer1,layer3"`` / ``"0,2"`` (or a list) into stage keys; None/``"all"`` -> None; ``"none"`` -> []."""
    is_word, value = _spec_word(spec)
    if is_word:
        return value
    if isinstance(spec, str):
        return [_stage_key(s) for s in spec.split(",") if s.strip()]
    return [_stage_key(s) for s in spec]


def parse_pairs(spec: str | Sequence[Sequence[str | int]] | None) -> list[tuple[str | int, str | int]] | None:
    """Parse ``"0-1,0-2,1-2"`` or ``"layer1-layer3"`` (or a list of pairs); None/``"all"`` -> None; ``"none"`` -> []."""
    is_word, value = _spec_word(spec)
    if is_word:
        return value
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            sep = "->" if "->" in item else "-"
            parts = item.split(sep)
            if len(parts) != 2 or not all(p.strip() for p in parts):
                raise TffdVizError(f"a pair must look like 'a-b' (shallow-deep), got {item!r} in {spec!r}")
            pairs.append((_stage_key(parts[0]), _stage_key(parts[1])))
        return pairs
    out = []
    for p in spec:
        if isinstance(p, str) or len(p) != 2:
            raise TffdVizError(f"each pair must be (shallow, deep), got {p!r}")
        out.append((_stage_key(p[0]), _stage_key(p[1])))
    return out


def _stage_name(key: str | int, taps: list[str]) -> str:
    if isinstance(key, int):
        if not 0 <= key < len(taps):
            raise TffdVizError(f"stage index {key} out of range for taps {taps}")
        return taps[key]
    if key not in taps:
        raise TffdVizError(f"unknown stage {key!r}; the model's stage taps are {taps}")
    return key


def _resolved_stages(cfg: TrainConfig, taps: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    stages = list(taps) if cfg.stages is None else [_stage_name(s, taps) for s in cfg.stages]
    if cfg.pairs is None:
        pairs = [(taps[i], taps[j]) for i in range(len(taps)) for j in range(i + 1, len(taps))]
    else:
        pairs = [(_stage_name(a, taps), _stage_name(b, taps)) for a, b in cfg.pairs]
        bad = [p for p in pairs if taps.index(p[0]) >= taps.index(p[1])]
        if bad:
            raise TffdVizError(f"pairs {bad}: the shallow tap must come before the deep one in {taps}")
    return list(dict.fromkeys(stages)), list(dict.fromkeys(pairs))


def checkpoint_stem(out: str | os.PathLike) -> Path:
    """Return ``out`` without a ``.safetensors`` / ``.json`` suffix (``runs/x.safetensors`` -> ``runs/x``)."""
    path = Path(out)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def resume_path(out: str | os.PathLike) -> Path:
    """Return the resumable-state path of output ``out``: ``<stem>.resume.pt``."""
    stem = checkpoint_stem(out)
    return stem.with_name(stem.name + ".resume.pt")


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``model.state_dict()`` (sorted by name)."""
    digest = hashlib.sha256()
    for name, t in sorted(_inner(model).state_dict().items()):
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# distributed context
# --------------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_context(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        owns = True
    return _Dist(world=world, rank=rank, local_rank=local_rank, owns_group=owns)


def _resolved_device(spec: str, ctx_local_rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TffdVizError("device 'cuda' was asked for but torch.cuda.is_available() is False")
        return torch.device(spec if ":" in spec else f"cuda:{ctx_local_rank}")
    return torch.device("cpu")


def _averaged_saliency(f: Tensor) -> Tensor:
    """Channel saliency of the local batch averaged over all ranks (for ``--sync-saliency``)."""
    s = channel_saliency(f.detach()).float().contiguous()
    dist.all_reduce(s, op=dist.ReduceOp.SUM)
    return (s / dist.get_world_size()).to(f.dtype)


# --------------------------------------------------------------------------------------------------
# loop
# --------------------------------------------------------------------------------------------------

_EPOCH_SUM_KEYS = ("loss", "ce", "tffd_total")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _versions() -> dict[str, str]:
    import torchvision

    from tffd_viz import __version__

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "tffd_viz": __version__,
            "python": platform.python_version()}


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["milestones"] = list(d["milestones"])
    d["stages"] = None if d["stages"] is None else list(d["stages"])
    d["pairs"] = None if d["pairs"] is None else [list(p) for p in d["pairs"]]
    return d


def _log(cfg: TrainConfig, ctx: _Dist, text: str) -> None:
    if ctx.main and not cfg.quiet:
        print(text, file=sys.stderr, flush=True)


def _format_row(row: dict[str, Any], epochs: int) -> str:
    terms = " ".join(f"{k}={v:.4g}" for k, v in row["intra"].items())
    inter = " ".join(f"{k}={v:.4g}" for k, v in row["inter"].items())
    return (f"epoch {row['epoch']}/{epochs} lr={row['lr']:.4g} ce={row['ce']:.4f} tffd={row['tffd_total']:.4g} "
            f"w={row['tffd_weight']:.3g} intra[{terms}] inter[{inter}] train_acc={row['train_acc']:.2f} "
            f"test_acc={row['test_acc']:.2f} {row['seconds']:.1f}s")


def _progress_bar(cfg: TrainConfig, ctx: _Dist, total: int, epoch: int) -> Any:
    if not ctx.main or cfg.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, file=sys.stderr)


def _resume_state(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read the resume state {str(path)!r}: {exc}") from None
    if not isinstance(state, dict) or "config" not in state or "epoch" not in state:
        raise CheckpointError(f"{str(path)!r} is not a tffd-viz resume state (no 'config'/'epoch' keys)")
    now, then = _config_dict(cfg), dict(state["config"])
    for key, value in _RESUME_ABSENT_MEANS.items():
        then.setdefault(key, value)
        if isinstance(then.get("hparams"), dict) and key in (now.get("hparams") or {}):  # recipe keys added later
            then["hparams"] = {**then["hparams"], key: then["hparams"].get(key, value)}
    differ = {k: (then.get(k, "<absent>"), now[k]) for k in now
              if k not in _RESUME_FREE and then.get(k, "<absent>") != now[k]}
    if differ:
        raise CheckpointError(f"cannot resume from {str(path)!r}: these options differ from the saved run "
                              f"(saved, now): {differ}")
    return state


#: Order in which :func:`_nonfinite_terms` names the quantities of one step (prefixes; tap names keep their order).
_TERM_ORDER: tuple[str, ...] = ("ce", "intra/", "inter/", "kd", "tffd_total", "loss")

#: First non-finite quantity (prefix) -> the usual remedy, in words, with the run's current values.
_DIVERGENCE_REMEDIES: dict[str, Callable[[TrainConfig], str]] = {
    "ce": lambda c: f"lower lr (now {c.lr:g})",
    "intra/": lambda c: f"lower lambda_intra (now {c.lambda_intra:g}) or lr (now {c.lr:g})",
    "inter/": lambda c: f"lower lambda_inter (now {c.lambda_inter:g}) or lr (now {c.lr:g})",
    "kd": lambda c: f"lower lambda_kd (now {c.lambda_kd:g}) or lr (now {c.lr:g})",
    "tffd_total": lambda c: f"lower lambda_intra / lambda_inter (now {c.lambda_intra:g} / {c.lambda_inter:g}) "
                            f"or lr (now {c.lr:g})",
    "loss": lambda c: f"lower lr (now {c.lr:g})" + ("" if c.method == "baseline" else
                      f" or the lambdas (intra {c.lambda_intra:g}, inter {c.lambda_inter:g})"),
    "weights": lambda c: f"lower lr (now {c.lr:g})" + ("" if c.method == "baseline" else
                         f" or the lambdas (intra {c.lambda_intra:g}, inter {c.lambda_inter:g})"),
}


def _nonfinite_terms(stats: dict[str, float], trained_on_tffd: bool) -> list[str]:
    """Names of the non-finite quantities of one :func:`train_step` (Python floats: no device sync).

    Checked: ``loss``, ``ce``, ``kd`` and, when the Tf-FD terms are trained on, ``tffd_total``, ``intra/*`` and
    ``inter/*`` (a baseline's detached terms are only logged). Ordered as :data:`_TERM_ORDER`.
    """
    checked = [k for k in stats if k in ("loss", "ce", "kd")
               or (trained_on_tffd and (k == "tffd_total" or k.startswith(("intra/", "inter/"))))]
    bad = [k for k in checked if not math.isfinite(stats[k])]
    return sorted(bad, key=lambda k: next(i for i, p in enumerate(_TERM_ORDER) if k == p or k.startswith(p)))


def _nonfinite_weights(model: nn.Module) -> list[str]:
    """Names of the floating parameters / buffers of ``model`` holding a NaN or inf (one device sync)."""
    tensors = [(k, t) for k, t in model.state_dict().items() if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return []
    return [k for k, t in tensors if not bool(torch.isfinite(t).all())]


def _diverged(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int, bad: list[str],
              stats: dict[str, float], previous: dict[str, float] | None, good: tuple[Path, int] | None,
              weights: Sequence[str] = ()) -> TrainingDiverged:
    """The :class:`TrainingDiverged` of a run whose ``bad`` quantities went non-finite at ``epoch``/``step``.

    ``bad`` lists step quantities (:func:`_nonfinite_terms`) or is ``["weights"]``, with the names of the
    non-finite tensors in ``weights``; ``previous`` is the last finite step's stats (shown for context);
    ``good`` is ``(path, epoch)`` of the last resume state this run wrote or resumed from.
    """
    term = bad[0]
    cause = term
    if previous is not None and not term.startswith(("intra/", "inter/", "kd")) \
            and previous["loss"] - previous["ce"] > abs(previous["ce"]):
        cause = "tffd_total"  # the step before was dominated by the (weighted) Tf-FD / KD part of the loss
    remedy = next(f for p, f in _DIVERGENCE_REMEDIES.items() if cause == p or cause.startswith(p))(cfg)
    if term == "weights":
        names = ", ".join(list(weights)[:3]) + (f" and {len(weights) - 3} more" if len(weights) > 3 else "")
        what = f"non-finite weights after the epoch's last step ({names})"
    else:
        what = f"{term} = {stats[term]} (non-finite: {', '.join(bad)})"
    before = ""
    if previous is not None:
        terms = {k: v for k, v in previous.items() if k.startswith(("intra/", "inter/")) and math.isfinite(v)}
        largest = max(terms, key=lambda k: abs(terms[k]), default=None)
        before = ("; the last finite step" + ("" if term == "weights" else " (the one before)")
                  + f" had loss={previous['loss']:.4g}, ce={previous['ce']:.4g}"
                  + ("" if largest is None else f", largest Tf-FD term {largest}={terms[largest]:.4g}")
                  + (f", kd={previous['kd']:.4g}" if "kd" in previous else ""))
    kept = (f"; the last good resume state {str(good[0])!r} (after epoch {good[1]}) is kept" if good is not None
            else "; this run had written no resume state yet")
    return TrainingDiverged(
        f"training diverged at epoch {epoch} step {step}/{steps_per_epoch}: {what}{before}. Nothing was saved "
        f"from the non-finite weights{kept}. Usual remedy: {remedy}.", epoch=epoch, step=step, term=term)


def _save_resume(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _checked_before_work(cfg: TrainConfig) -> None:
    """The checks :meth:`TrainConfig.check` cannot make alone, before any data is loaded: the architecture and its
    stages / pairs (on a shape-only ``meta`` model), and an output folder that can be created and written."""
    try:
        with torch.device("meta"):
            taps = list(default_taps(create_model(cfg.arch, num_classes=2, in_chans=3)))
    except TffdVizError as exc:
        raise TffdVizError(f"option arch = {cfg.arch!r}: {exc}") from None
    for name, only in (("stages", {"pairs": []}), ("pairs", {"stages": []})):
        try:
            _resolved_stages(dataclasses.replace(cfg, **only), taps)
        except TffdVizError as exc:
            raise TffdVizError(f"option {name} = {getattr(cfg, name)!r} does not fit {cfg.arch}: {exc}") from None
    if cfg.out is None:
        return
    folder = checkpoint_stem(cfg.out).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TffdVizError(f"option out = {cfg.out!r}: cannot create the folder {str(folder)!r} "
                           f"({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK):
        raise TffdVizError(f"option out = {cfg.out!r}: the folder {str(folder)!r} is not writable")


def train(config: TrainConfig, progress: Callable[[dict[str, Any]], None] | None = None
          ) -> tuple[nn.Module, dict[str, Any]]:
    """Train a zoo model with or without Tf-FD and return it with its model card.

    Parameters
    ----------
    config : TrainConfig
    progress : callable, optional
        Called on rank 0 with each epoch's history row as it completes.

    Returns
    -------
    model : nn.Module
        The trained (inner, unwrapped) model, in eval mode, on the training device.
    card : dict
        Every key of :data:`tffd_viz.checkpoints.CARD_KEYS` plus ``hparams``, ``stages``, ``world_size``,
        ``precision``, ``completed`` (False when stopped early by ``stop_after``).

    Raises
    ------
    TffdVizError
        Bad options (before any data is loaded or file written); :class:`CheckpointError` for an unusable resume
        state; :class:`TrainingDiverged` when a step's loss or term, or the weights after an epoch, go non-finite
        (naming the epoch, step and term; nothing is written from the non-finite weights, the last good resume
        state is kept).
    """
    cfg = config.check()
    _checked_before_work(cfg)
    device_kind = "cuda" if (cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())) \
        else "cpu"
    ctx = _dist_context(device_kind)
    try:
        return _train(cfg, ctx, progress)
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, ctx: _Dist, progress: Callable[[dict[str, Any]], None] | None
           ) -> tuple[nn.Module, dict[str, Any]]:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = _resolved_device(cfg.device, ctx.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp = PRECISIONS[cfg.precision]
    bundle: DatasetBundle = load_dataset(cfg.dataset, cfg.data_root, image_size=(
        input_size(cfg.arch) if cfg.dataset in SIZED_DATASETS else None))  # 224 for torchvision's archs
    train_set, test_set = bundle.train, bundle.test

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, num_classes=len(bundle.classes), in_chans=bundle.in_chans)
    use_cl = device.type == "cpu" or amp is not None
    fmt = torch.channels_last if use_cl else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    taps = list(default_taps(model))
    stages, pairs = _resolved_stages(cfg, taps)
    saliency_fn = _averaged_saliency if (cfg.sync_saliency and ctx.active) else None
    tffd = TfFD(cfg.lambda_intra, cfg.lambda_inter, stages=stages, pairs=pairs, saliency_fn=saliency_fn)

    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay)
    n_train = len(train_set) if cfg.limit_train is None else min(cfg.limit_train, len(train_set))
    shard_len = math.ceil(n_train / ctx.world)
    steps_per_epoch = math.ceil(shard_len / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[cfg.schedule](cfg, steps_per_epoch))
    gen = torch.Generator().manual_seed(cfg.seed)

    train_images = train_set.images.to(device) if isinstance(train_set, ImageDataset) else None  # else: lazy
    train_labels = train_set.labels.to(device)
    probe_idx = sample_indices(len(train_set), min(cfg.probe_size, len(train_set)), seed=0)
    probe = train_set.normalized(probe_idx).to(device)

    history: list[dict[str, Any]] = []
    best_acc, start_epoch, seconds_done = float("-inf"), 0, 0.0
    rpath = resume_path(cfg.out) if cfg.out is not None else None
    good: tuple[Path, int] | None = None  # (path, epoch) of the last resume state written or resumed from
    if cfg.resume is not None:
        source = rpath if cfg.resume == "auto" else Path(cfg.resume)
        if source is None:
            raise TffdVizError("resume='auto' needs out=... (the resume state is <out>.resume.pt)")
        if source.is_file():
            state = _resume_state(source, cfg)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            history, best_acc = list(state["history"]), float(state["best_acc"])
            start_epoch, seconds_done = int(state["epoch"]), float(state["train_seconds"])
            good = (source, start_epoch)
            _log(cfg, ctx, f"resumed from {source} after epoch {start_epoch}")
        elif cfg.resume != "auto":
            raise CheckpointError(f"resume state {str(source)!r} does not exist")

    net: nn.Module = model
    if ctx.active:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    positions = _shard_positions(n_train, ctx.world, ctx.rank)
    apply = cfg.method in ("tffd", "tffd_kd")
    teacher = _loaded_teacher(cfg, bundle, device) if cfg.method == "tffd_kd" else None
    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    _log(cfg, ctx, f"training {cfg.arch} on {cfg.dataset} ({n_train} images, {steps_per_epoch} steps/epoch, "
                   f"world {ctx.world}) method={cfg.method} stages={stages} pairs={pairs} device={device}")

    t_begin = time.perf_counter()
    for epoch in range(start_epoch + 1, last_epoch + 1):
        t0 = time.perf_counter()
        perm, offsets, flips = _epoch_draws(len(train_set), cfg, gen)
        perm = perm[:n_train]
        warm = warmup_weight(epoch, cfg.warmup)
        sums: dict[str, float] = {}
        lr_first = float(optimizer.param_groups[0]["lr"])
        previous: dict[str, float] | None = None
        net.train()
        bar = _progress_bar(cfg, ctx, steps_per_epoch, epoch)
        for step in range(steps_per_epoch):
            pos = positions[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            idx = perm[pos].to(device)
            x01 = AUGMENTATIONS[cfg.augment].batch(train_set, train_images, idx,
                                                   None if offsets is None else offsets[pos],
                                                   None if flips is None else flips[pos], cfg)
            x = train_set.normalize(x01).contiguous(memory_format=fmt)
            t_logits = None if teacher is None else teacher.logits(x01, amp)
            stats = train_step(net, x, train_labels[idx], tffd, warm, optimizer, taps=taps, apply_tffd=apply,
                               autocast_dtype=amp, scheduler=scheduler, teacher_logits=t_logits,
                               lambda_kd=cfg.lambda_kd, kd_temperature=cfg.kd_temperature)
            bad = _nonfinite_terms(stats, apply)
            if bad:
                if bar is not None:
                    bar.close()
                raise _diverged(cfg, epoch, step + 1, steps_per_epoch, bad, stats, previous, good)
            previous = stats
            n = stats["n"]
            for k, v in stats.items():
                if k in ("n", "correct", "lr"):
                    sums[k] = sums.get(k, 0.0) + v
                else:
                    sums[k] = sums.get(k, 0.0) + v * n
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ce=f"{stats['ce']:.3f}", tffd=f"{stats['tffd_total']:.3g}")
        if bar is not None:
            bar.close()
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        if ctx.active:
            totals = totals.to(device)
            dist.all_reduce(totals, op=dist.ReduceOp.SUM)
            for buf in model.buffers():  # BN running statistics: rank 0's, so every rank ends identical
                dist.broadcast(buf, src=0)
        sums = dict(zip(keys, totals.cpu().tolist(), strict=True))
        count = sums["n"]
        seconds = time.perf_counter() - t0
        seconds_done += seconds
        row: dict[str, Any] | None = None
        broken = _nonfinite_weights(model)  # finite losses can still step into inf weights; never save those
        if broken:
            raise _diverged(cfg, epoch, steps_per_epoch, steps_per_epoch, ["weights"], {}, previous, good,
                            weights=broken)
        if ctx.main:
            test_acc = evaluate_accuracy(model, test_set, cfg.eval_batch_size, device, amp)
            best_acc = max(best_acc, test_acc)
            row = {
                "epoch": epoch, "lr": lr_first, "ce": sums["ce"] / count,
                "intra": {k[6:]: sums[k] / count for k in keys if k.startswith("intra/")},
                "inter": {k[6:]: sums[k] / count for k in keys if k.startswith("inter/")},
                "tffd_total": sums["tffd_total"] / count, "tffd_weight": warm if apply else 0.0,
                **({"kd": sums["kd"] / count} if "kd" in sums else {}),
                "loss": sums["loss"] / count, "train_acc": 100.0 * sums["correct"] / count, "test_acc": test_acc,
                "seconds": seconds, "saliency": probe_saliency(model, probe, taps),
            }
            history.append(row)
            _log(cfg, ctx, _format_row(row, cfg.epochs))
            if rpath is not None:
                _save_resume(rpath, {
                    "config": _config_dict(cfg), "epoch": epoch, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "history": history, "best_acc": best_acc, "train_seconds": seconds_done,
                })
                good = (rpath, epoch)
            if progress is not None:
                progress(row)
        if cfg.time_limit is not None and _out_of_time(cfg.time_limit, t_begin, seconds, ctx, device):
            _log(cfg, ctx, f"time limit {cfg.time_limit:g} s: stopping after epoch {epoch} (resume state kept)")
            last_epoch = epoch
            break

    model.eval()
    _write_rank_hash(model, ctx)
    completed = last_epoch == cfg.epochs
    card = _card(cfg, bundle, model, taps, stages, pairs, history, best_acc, seconds_done, device, ctx, completed)
    if teacher is not None:
        card["lambda_kd"], card["kd_temperature"] = cfg.lambda_kd, cfg.kd_temperature
        card["teacher"] = teacher.description
    if ctx.main and completed:
        from tffd_viz.heldout import heldout_terms

        card["heldout_terms"] = heldout_terms(model, test_set, taps=taps)
    if ctx.main and cfg.out is not None and completed:
        from tffd_viz.checkpoints import save_checkpoint

        path = save_checkpoint(model, card, checkpoint_stem(cfg.out).with_suffix(".safetensors"))
        _log(cfg, ctx, f"saved {path}")
    return model, card


def _out_of_time(limit: float, t_begin: float, epoch_seconds: float, ctx: _Dist, device: torch.device) -> bool:
    """Whether another epoch as long as the last would end past ``limit`` seconds (any rank's view, so all
    ranks stop after the same epoch)."""
    late = (time.perf_counter() - t_begin) + epoch_seconds > limit
    if not ctx.active:
        return late
    flag = torch.tensor(float(late), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


@dataclass
class _Teacher:
    """A frozen teacher of Tf-FD+: the model (eval mode), its own input normalisation and its card."""

    model: nn.Module
    mean: Tensor
    std: Tensor
    description: dict[str, Any]

    def logits(self, x01: Tensor, amp: torch.dtype | None) -> Tensor:
        """Teacher logits (N, K) of images in [0, 1] (N, C, H, W), normalised with the teacher's statistics."""
        x = ((x01 - self.mean) / self.std).contiguous(memory_format=_memory_format(self.model))
        with torch.no_grad(), _autocast(x01.device, amp):
            return self.model(x).float()


def _loaded_teacher(cfg: TrainConfig, bundle: DatasetBundle, device: torch.device) -> _Teacher:
    """Load ``cfg.teacher`` with the safe loader, check it fits the dataset, freeze it."""
    from tffd_viz.checkpoints import load_checkpoint

    model, card = load_checkpoint(str(cfg.teacher), device=device)
    if card["num_classes"] != len(bundle.classes) or card["in_chans"] != bundle.in_chans:
        raise TffdVizError(f"teacher {str(cfg.teacher)!r} has {card['num_classes']} classes and {card['in_chans']} "
                           f"input channels; {cfg.dataset} has {len(bundle.classes)} and {bundle.in_chans}")
    model.eval().requires_grad_(False)
    mean = card.get("mean") or list(bundle.mean)
    std = card.get("std") or list(bundle.std)
    view = (1, -1, 1, 1)
    return _Teacher(model=model, mean=torch.tensor(mean, device=device).view(view),
                    std=torch.tensor(std, device=device).view(view),
                    description={"path": str(cfg.teacher), "sha256": card.get("sha256"), "arch": card["arch"],
                                 "final_acc": card.get("final_acc"), "method": card.get("method")})


def _write_rank_hash(model: nn.Module, ctx: _Dist) -> None:
    """With ``$TFFD_DEBUG_RANK_HASH_DIR`` set, write ``rank<r>.sha256`` holding :func:`state_sha256`."""
    folder = os.environ.get("TFFD_DEBUG_RANK_HASH_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"rank{ctx.rank}.sha256").write_text(state_sha256(model) + "\n")


def _card(cfg: TrainConfig, bundle: DatasetBundle, model: nn.Module, taps: list[str], stages: list[str],
          pairs: list[tuple[str, str]], history: list[dict[str, Any]], best_acc: float, seconds: float,
          device: torch.device, ctx: _Dist, completed: bool) -> dict[str, Any]:
    return {
        "arch": cfg.arch, "num_classes": len(bundle.classes), "in_chans": bundle.in_chans, "dataset": cfg.dataset,
        "mean": list(bundle.mean), "std": list(bundle.std), "method": cfg.method,
        "lambda_intra": cfg.lambda_intra, "lambda_inter": cfg.lambda_inter, "taps": list(taps),
        "pairs": [list(p) for p in pairs], "epochs": cfg.epochs, "warmup": cfg.warmup, "seed": cfg.seed,
        "recipe": cfg.recipe, "final_acc": history[-1]["test_acc"] if history else None,
        "best_acc": best_acc if history else None, "train_seconds": seconds, "device": _device_name(device),
        "versions": _versions(), "history": history,
        "hparams": dict(cfg.hparams) if cfg.hparams else {k: v for k, v in _config_dict(cfg).items()
                                                         if k in RECIPES["paper"]},
        "stages": list(stages), "world_size": ctx.world, "precision": cfg.precision, "completed": completed,
        "classes": list(bundle.classes),
        **({"input_size": bundle.extra.get("image_size", 32), "transform": bundle.extra.get("transform")}
           if "image_size" in bundle.extra or input_size(cfg.arch) != 32 else {}),  # e.g. resnet18 on CIFAR: 32
    }


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------


def _preset_all(n: int) -> tuple[list[int] | None, list[tuple[int, int]] | None]:
    return None, None


def _preset_intra_only(n: int) -> tuple[list[int] | None, list[tuple[int, int]] | None]:
    return None, []


def _preset_inter_only(n: int) -> tuple[list[int] | None, list[tuple[int, int]] | None]:
    return [], None


def _preset_last2(n: int) -> tuple[list[int] | None, list[tuple[int, int]] | None]:
    return [n - 2, n - 1], [(n - 2, n - 1)]


def _preset_adjacent(n: int) -> tuple[list[int] | None, list[tuple[int, int]] | None]:
    return None, [(i, i + 1) for i in range(n - 1)]


#: Layer preset -> (number of stage taps) -> (intra stages, inter pairs) as indices; None = all.
LAYER_PRESETS: dict[str, Callable[[int], tuple[list[int] | None, list[tuple[int, int]] | None]]] = {
    "all": _preset_all,
    "intra-only": _preset_intra_only,
    "inter-only": _preset_inter_only,
    "last2": _preset_last2,
    "adjacent": _preset_adjacent,
}

#: Settings that identify a sweep row (with the seed); a rerun skips rows whose settings are in the table.
SWEEP_KEYS: tuple[str, ...] = ("recipe", "arch", "dataset", "epochs", "batch_size", "lr", "schedule", "warmup",
                               "limit_train", "method", "layers", "lambda_intra", "lambda_inter", "seed")


def _row_key(row: dict[str, Any]) -> tuple:
    return tuple(None if row.get(k) in ("", None) else str(row.get(k)) for k in SWEEP_KEYS)


def _sweep_row(cfg: TrainConfig, layers: str, card: dict[str, Any]) -> dict[str, Any]:
    last = card["history"][-1]
    row: dict[str, Any] = {k: getattr(cfg, k) for k in SWEEP_KEYS if k != "layers"}
    row["layers"] = layers
    row.update({"final_acc": card["final_acc"], "best_acc": card["best_acc"], "train_acc": last["train_acc"],
                "ce": last["ce"], "tffd_total": last["tffd_total"]})
    row.update({f"intra_{k}": v for k, v in last["intra"].items()})
    row.update({f"inter_{k}": v for k, v in last["inter"].items()})
    held = card.get("heldout_terms") or {}
    if held:  # eval mode on the test split: raw, scale-free and the energy per stage
        row["heldout_acc"] = held["accuracy"]
        for family in ("intra", "intra_rel", "energy", "inter", "inter_rel"):
            row.update({f"heldout_{family}_{k}": v for k, v in held[family].items()})
    row["train_seconds"] = card["train_seconds"]
    row["diverged"], row["diverged_at"] = False, None
    return {k: row[k] for k in SWEEP_KEYS} | {k: v for k, v in row.items() if k not in SWEEP_KEYS}


def _write_table(rows: list[dict[str, Any]], prefix: Path) -> None:
    import csv
    import json

    prefix.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = prefix.with_name(prefix.name + ".json.tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    tmp.replace(prefix.with_name(prefix.name + ".json"))
    tmp = prefix.with_name(prefix.name + ".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    tmp.replace(prefix.with_name(prefix.name + ".csv"))


def _read_table(prefix: Path) -> list[dict[str, Any]]:
    import json

    path = prefix.with_name(prefix.name + ".json")
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TffdVizError(f"cannot read the sweep table {str(path)!r}: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TffdVizError(f"the sweep table {str(path)!r} is not a JSON list of row objects")
    return rows


def sweep_prefix(out_prefix: str | os.PathLike) -> Path:
    """Return the table prefix (``x.csv``/``x.json`` -> ``x``)."""
    path = Path(out_prefix)
    return path.with_suffix("") if path.suffix in (".csv", ".json") else path


def _sweep_plan(base_config: TrainConfig, grid: dict[str, Sequence[Any]]) -> list[tuple[TrainConfig, str]]:
    """Every row's ``(config, layer preset)`` of a sweep, each checked (:meth:`TrainConfig.check`, stages and
    pairs against the architecture's taps); raise :class:`TffdVizError` naming the first bad row and option."""
    import itertools

    axes: dict[str, list[Any]] = {
        "seeds": list(grid.get("seeds", [base_config.seed])), "layers": list(grid.get("layers", ["all"])),
        "lambda_intra": list(grid.get("lambda_intra", [base_config.lambda_intra])),
        "lambda_inter": list(grid.get("lambda_inter", [base_config.lambda_inter])),
    }
    unexpected = sorted(set(grid) - set(axes))
    if unexpected:
        raise TffdVizError(f"unknown sweep grid key(s) {unexpected}; valid: {list(axes)}")
    empty = [k for k, v in axes.items() if not v]
    if empty:
        raise TffdVizError(f"sweep grid {empty} is empty; give at least one value")
    unknown = [name for name in axes["layers"] if name not in LAYER_PRESETS]
    if unknown:
        raise TffdVizError(f"unknown layer preset(s) {unknown}; choose from {list(LAYER_PRESETS)}")
    base_config.check()
    taps = list(default_taps(create_model(base_config.arch, num_classes=2, in_chans=1)))
    combos = list(itertools.product(axes["seeds"], axes["layers"], axes["lambda_intra"], axes["lambda_inter"]))
    plan = []
    for i, (seed, layer, li, le) in enumerate(combos):
        where = (f"sweep row {i + 1} of {len(combos)} (seed={seed!r}, layers={layer}, lambda_intra={li!r}, "
                 f"lambda_inter={le!r})")
        try:
            stages, pairs = LAYER_PRESETS[layer](len(taps))
            whole = not isinstance(seed, bool) and float(seed).is_integer()  # "3", 3.0 -> 3; 1.5, True: refused
            values = {"seed": int(float(seed)) if whole else seed, "lambda_intra": float(li), "lambda_inter": float(le)}
        except (TypeError, ValueError, OverflowError):
            raise TffdVizError(f"{where}: seeds must be whole numbers and lambdas numbers") from None
        method = "baseline" if values["lambda_intra"] == 0.0 and values["lambda_inter"] == 0.0 else "tffd"
        cfg = dataclasses.replace(base_config, **values, stages=stages, pairs=pairs, method=method, out=None,
                                  resume=None, stop_after=None)
        try:
            cfg.check()
            _resolved_stages(cfg, taps)
        except TffdVizError as exc:
            raise TffdVizError(f"{where}: {exc}") from None
        plan.append((cfg, layer))
    return plan


def run_sweep(base_config: TrainConfig, grid: dict[str, Sequence[Any]], out_prefix: str | os.PathLike,
              progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train every combination of a grid and write one results table, skipping rows already there.

    Parameters
    ----------
    base_config : TrainConfig
        Every other option (its ``out``/``resume`` are ignored: sweep runs write no checkpoints).
    grid : dict
        ``lambda_intra``, ``lambda_inter`` (lists of floats), ``layers`` (list of :data:`LAYER_PRESETS`
        names) and ``seeds`` (list of ints); missing keys take the base config's single value / ``["all"]``.
        A run with both lambdas 0 is trained as ``method="baseline"`` (its terms are still logged).
    out_prefix : path
        Writes ``<prefix>.csv`` and ``<prefix>.json`` (same rows) after every run.
    progress : callable, optional
        Called with each new row.

    Returns
    -------
    list of dict
        Every row of the table (old and new): the settings of :data:`SWEEP_KEYS`, ``final_acc``, ``best_acc``,
        ``train_acc``, ``ce``, ``tffd_total``, ``intra_<tap>``, ``inter_<a>-><b>`` (last epoch), ``train_seconds``,
        ``diverged`` and ``diverged_at``. A run that diverges (:class:`TrainingDiverged`) is a row with only its
        settings, ``train_seconds``, ``diverged=True`` and ``diverged_at="epoch E step S term T"``; the sweep
        goes on with the next row.

    Raises
    ------
    TffdVizError
        Before any training, naming the first row of the grid with a bad option (every row is checked).
    """

    prefix = sweep_prefix(out_prefix)
    plan = _sweep_plan(base_config, grid)  # the whole grid is checked before the first row trains
    rows = _read_table(prefix)
    done = {_row_key(r) for r in rows}
    for cfg, layer in plan:
        key_row = {k: getattr(cfg, k) for k in SWEEP_KEYS if k != "layers"} | {"layers": layer}
        if _row_key(key_row) in done:
            continue
        t0 = time.perf_counter()
        try:
            _, card = train(cfg)
        except TrainingDiverged as exc:
            row = key_row | {"diverged": True, "diverged_at": exc.where,
                             "train_seconds": time.perf_counter() - t0}
            row = {k: row[k] for k in SWEEP_KEYS} | {k: v for k, v in row.items() if k not in SWEEP_KEYS}
            result = f"diverged at {exc.where}"
        else:
            row = _sweep_row(cfg, layer, card)
            result = f"final_acc={row['final_acc']:.2f}"
        rows.append(row)
        done.add(_row_key(row))
        _write_table(rows, prefix)
        if progress is not None:
            progress(row)
        print(f"sweep row {len(rows)}: layers={layer} lambda_intra={cfg.lambda_intra:g} "
              f"lambda_inter={cfg.lambda_inter:g} seed={cfg.seed} {result} ({row['train_seconds']:.0f}s)",
              file=sys.stderr, flush=True)
    if not prefix.with_name(prefix.name + ".json").is_file():
        _write_table(rows, prefix)
    return rows
