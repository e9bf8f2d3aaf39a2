"""The training recipes: one dict of hyper-parameters per recipe, and the paper's numbers.

This module is the only place the paper's numbers (lambdas, warm-up, learning-rate schedule, ...) are written;
:class:`tffd_viz.train.TrainConfig` takes its defaults from ``RECIPES["paper"]`` and
:mod:`tffd_viz.losses` re-exports :data:`PAPER_LAMBDA_INTRA`, :data:`PAPER_LAMBDA_INTER` and
:data:`PAPER_WARMUP` from here.

Every recipe has the same keys (airbench style: nothing hidden elsewhere); the recipes other than ``paper``
are ``paper`` with the values that differ written out.

>>> from tffd_viz.recipes import RECIPES
>>> RECIPES["paper"]["lambda_intra"], RECIPES["cpu30"]["epochs"]
(0.0008, 30)
"""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER_LAMBDA_INTER", "PAPER_LAMBDA_INTRA", "PAPER_WARMUP", "RECIPES"]

#: Recipe name -> hyper-parameters (:class:`tffd_viz.train.TrainConfig` option -> value).
RECIPES: dict[str, dict[str, Any]] = {
    # The reference CIFAR setting of the Tf-FD authors' ``train_kd.py`` (Teacher-free-Distillation, newest
    # version; line numbers of that file). Lambdas: the reference README's command (8e-4 / 5e-4); the argparse
    # defaults of ``train_kd.py`` (lines 71-72) are 4e-4 / 5e-3 instead.
    "paper": {
        "arch": "resnet20",  # zoo model (tffd_viz.models)
        "dataset": "cifar100",  # tffd_viz.data name
        "epochs": 240,  # passes over the training split (argparse default)
        "batch_size": 128,  # images per optimiser step, per process (argparse default)
        "lr": 0.1,  # peak learning rate of SGD (argparse default)
        "schedule": "multistep",  # lr schedule (tffd_viz.train.SCHEDULES); adjust_lr of train_kd.py
        "milestones": (150, 180, 210),  # epochs after which multistep multiplies the lr by gamma
        "gamma": 0.1,  # multistep factor: lr / 10 at each milestone
        "lr_warmup": 0.0,  # epochs of linear lr warm-up (cosine schedule only)
        "pct_start": 0.25,  # fraction of all steps spent ramping up (onecycle schedule only)
        "momentum": 0.9,  # SGD momentum (argparse default)
        "nesterov": True,  # Nesterov momentum: SGD(..., nesterov=True), lines 191/197
        "weight_decay": 5e-4,  # L2 penalty on every parameter (argparse default)
        "crop_padding": 4,  # pixels padded on each side before the random 32-pixel crop, line 212
        "padding_mode": "reflect",  # how the crop pads: transforms.Pad(4, padding_mode='reflect'), line 212
        "flip": True,  # random horizontal flip after the crop (RandomHorizontalFlip), line 212
        "lambda_intra": 8e-4,  # weight of the mean intra-layer Tf-FD term (the reference README's command)
        "lambda_inter": 5e-4,  # weight of the mean inter-layer Tf-FD term (the reference README's command)
        "warmup": 20.0,  # epochs of Tf-FD warm-up, weight min(1, epoch / 20): --kd-warm-up 20, line 73
        "lambda_kd": 1.0,  # Tf-FD+ (tffd_kd) weight of the logit KD: KL(s/T || t/T) * T^2 * lambda_kd
        "kd_temperature": 4.0,  # Tf-FD+ softmax temperature T (--T 4)
        "augment": "pad_crop_flip",  # tffd_viz.train.AUGMENTATIONS: pad, random crop, flip
    },
}

# A 30-epoch CPU-affordable CIFAR schedule. Plain momentum and zero padding, as the shipped ``cpu30``
# checkpoints were trained.
RECIPES["cpu30"] = {
    **RECIPES["paper"],
    "epochs": 30,  # passes over the training split
    "lr": 0.15,  # peak of the one-cycle schedule
    "schedule": "onecycle",  # cosine ramp to lr over pct_start of the steps, cosine anneal to lr / 1e4
    "milestones": (),  # unused by onecycle
    "pct_start": 0.2,  # fraction of the steps spent ramping up
    "warmup": 3.0,  # Tf-FD warm-up scaled to the shorter run: 20 / 240 * 30 ~ 3 epochs
    "nesterov": False,  # plain momentum
    "padding_mode": "zeros",  # black padding (torchvision's RandomCrop(32, padding=4))
}

# torchvision's ImageNet reference (references/classification: resnet18 ... resnet50): SGD 0.1, momentum 0.9
# (not Nesterov), weight decay 1e-4, 90 epochs, /10 at 30 and 60, RandomResizedCrop(224) + flip, evaluation
# resize 256 + centre crop 224. Lambdas and warm-up stay the CIFAR ones.
RECIPES["imagenet"] = {
    **RECIPES["paper"],
    "arch": "resnet18",  # torchvision architecture, 224-pixel inputs
    "dataset": "imagefolder",  # an ImageNet-style train/ + val/ folder
    "epochs": 90,  # passes over the training split
    "batch_size": 256,  # images per step per process (torchvision: 32 per GPU x 8)
    "lr": 0.1,  # initial learning rate
    "schedule": "multistep",  # lr / 10 at each milestone
    "milestones": (30, 60),  # epochs of the lr drops
    "gamma": 0.1,  # multistep factor
    "nesterov": False,  # plain momentum
    "weight_decay": 1e-4,  # L2 penalty on every parameter
    "crop_padding": 0,  # no padding: the crop is RandomResizedCrop's
    "padding_mode": "zeros",  # unused without padding
    "flip": True,  # random horizontal flip
    "augment": "random_resized_crop",  # scale 0.08-1, aspect 3/4-4/3, resized to 224
}

# resnet8 on scikit-learn digits: small crop (zero padding), no flip (digits are not mirror-symmetric),
# one-cycle.
RECIPES["digits"] = {
    **RECIPES["paper"],
    "arch": "resnet8",  # the smallest zoo ResNet
    "dataset": "digits",  # scikit-learn's 8x8 digits, upsampled to 32x32, one channel
    "epochs": 30,  # passes over the training split
    "batch_size": 64,  # images per step
    "schedule": "onecycle",  # cosine ramp to lr over pct_start of the steps, cosine anneal to lr / 1e4
    "milestones": (),  # unused by onecycle
    "crop_padding": 2,  # pixels padded on each side before the random crop
    "flip": False,  # digits are not mirror-symmetric
    "warmup": 3.0,  # epochs of Tf-FD warm-up
    "nesterov": False,  # plain momentum
    "padding_mode": "zeros",  # black padding
}

PAPER_LAMBDA_INTRA: float = RECIPES["paper"]["lambda_intra"]
"""Published weight of the intra-layer term."""

PAPER_LAMBDA_INTER: float = RECIPES["paper"]["lambda_inter"]
"""Published weight of the inter-layer term."""

PAPER_WARMUP: float = RECIPES["paper"]["warmup"]
"""Published number of warm-up epochs over which the Tf-FD weight ramps from 0 to 1."""
