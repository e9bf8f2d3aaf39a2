"""Settings of a what-if: :class:`WhatIfConfig`, the effective settings and the held-out subset.

Part of :mod:`tffd_viz.whatif` (its docstring describes the what-if).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tffd_viz.data import ImageDataset, sample_indices
from tffd_viz.errors import TffdVizError
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA
from tffd_viz.train import (
    RECIPES,
    config_from_recipe,
    resolved_stages,
)
from tffd_viz.types import StageKey

#: The arms, in the order they step and are reported.
ARMS: tuple[str, ...] = ("control", "tffd", "control2")
#: Legend label of each arm.
ARM_LABELS: dict[str, str] = {
    "control": "control (CE only)",
    "tffd": "Tf-FD arm",
    "control2": "control, other batch order",
}
#: Default number of steps per dataset (a few seconds for digits/resnet8, about 30 s for CIFAR/resnet20 on 2
#: cores).
DEFAULT_STEPS: dict[str, int] = {"digits": 100}
FALLBACK_STEPS = 30
#: Held-out images (a fixed subset of the test split; the whole split when it is smaller).
DEFAULT_HELDOUT_N = 2000
#: Default constant learning rate as a fraction of the recipe's peak lr.
LR_FRACTION = 0.1
#: Recipe options the fine-tune takes from the card's ``hparams`` (else from the recipe).
_RECIPE_KEYS = (
    "batch_size",
    "momentum",
    "nesterov",
    "weight_decay",
    "crop_padding",
    "padding_mode",
    "flip",
    "lr",
)


def default_steps(dataset: str) -> int:
    """Default number of steps for ``dataset`` (:data:`DEFAULT_STEPS`, else 30)."""
    return DEFAULT_STEPS.get(dataset, FALLBACK_STEPS)


@dataclass(frozen=True)
class WhatIfConfig:
    """Settings of a what-if (hashable; None = the default named below).

    Attributes
    ----------
    lambda_intra, lambda_inter : float
        Weights of the Tf-FD arm's intra and inter families (finite, >= 0; default: the paper's).
    stages : tuple of str or int, optional
        Stages taking the intra term, by tap name or index (default: every stage; empty: none).
    pairs : tuple of (str or int, str or int), optional
        ``(shallow, deep)`` pairs taking the inter term (default: every ``i < j``; empty: none).
    steps : int, optional
        Optimisation steps per arm, >= 1 (default :func:`default_steps` of the dataset).
    lr : float, optional
        Constant learning rate, > 0 (default :data:`LR_FRACTION` x the recipe's peak lr).
    seed : int
        Batch-order seed of ``control`` and ``tffd``.
    noise_seed : int, optional
        Batch-order seed of ``control2`` (default ``seed + 1``); must differ from ``seed``.
    heldout_n : int
        Held-out test images (fixed subset, :func:`heldout_subset`), >= 8.
    device : str, optional
        Where the arms train (default: the starting model's device).
    """

    lambda_intra: float = PAPER_LAMBDA_INTRA
    lambda_inter: float = PAPER_LAMBDA_INTER
    stages: tuple[StageKey, ...] | None = None
    pairs: tuple[tuple[StageKey, StageKey], ...] | None = None
    steps: int | None = None
    lr: float | None = None
    seed: int = 0
    noise_seed: int | None = None
    heldout_n: int = DEFAULT_HELDOUT_N
    device: str | None = None

    def check(self) -> WhatIfConfig:
        """Return self after validating every value; raise :class:`TffdVizError` naming the bad one."""
        for name in ("lambda_intra", "lambda_inter"):
            v = getattr(self, name)
            if not _finite(v) or v < 0:
                raise TffdVizError(
                    f"{name} = {v!r} is not allowed: a finite number >= 0 (0 switches the family off)"
                )
        if self.steps is not None and not (_whole(self.steps) and self.steps >= 1):
            raise TffdVizError(f"steps = {self.steps!r} is not allowed: a whole number >= 1")
        if self.lr is not None and not (_finite(self.lr) and 0 < self.lr <= 10):
            raise TffdVizError(f"lr = {self.lr!r} is not allowed: a finite number in (0, 10]")
        if not (_whole(self.seed) and self.seed >= 0):
            raise TffdVizError(f"seed = {self.seed!r} is not allowed: a whole number >= 0")
        if self.noise_seed is not None and not (
            _whole(self.noise_seed) and self.noise_seed >= 0 and self.noise_seed != self.seed
        ):
            raise TffdVizError(
                f"noise_seed = {self.noise_seed!r} is not allowed: a whole number >= 0 other than "
                f"seed ({self.seed}); the second control needs another batch order"
            )
        if not (_whole(self.heldout_n) and self.heldout_n >= 8):
            raise TffdVizError(
                f"heldout_n = {self.heldout_n!r} is not allowed: a whole number of images >= 8"
            )
        return self


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _recipe_name(card: Mapping[str, Any], dataset: str) -> str:
    name = card.get("recipe")
    if name in RECIPES:
        return str(name)
    return "digits" if dataset == "digits" else "paper"


def whatif_settings(
    card: Mapping[str, Any] | None, dataset: str, config: WhatIfConfig, taps: Sequence[str]
) -> dict[str, Any]:
    """The effective settings of a what-if, every one shown to the user.

    Parameters
    ----------
    card : dict or None
        The starting model's card: ``hparams`` (the recipe it was trained with), ``recipe``, ``arch``,
        ``seed``. Absent values come from the recipe (``card["recipe"]``, else ``digits`` for digits, else
        ``paper``).
    dataset : str
        The dataset the arms train on.
    config : WhatIfConfig
    taps : list of str
        The model's stage taps (stages and pairs are resolved against them).

    Returns
    -------
    dict
        ``recipe``, ``arch``, ``dataset``, ``lambda_intra``, ``lambda_inter``, ``stages`` (tap names),
        ``pairs`` (``"a->b"``), ``steps``, ``lr``, ``recipe_lr``, ``batch_size``, ``momentum``, ``nesterov``,
        ``weight_decay``, ``crop_padding``, ``padding_mode``, ``flip``, ``seed``, ``noise_seed``,
        ``heldout_n`` and ``train_config`` (the :class:`TrainConfig` of the equivalent real training run).

    Raises
    ------
    TffdVizError
        A bad config value, or a stage or pair the model does not have (naming its taps).
    """
    config.check()
    card = dict(card or {})
    recipe = _recipe_name(card, dataset)
    hp = {
        **RECIPES[recipe],
        **{k: v for k, v in (card.get("hparams") or {}).items() if k in RECIPES["paper"]},
    }
    if "padding_mode" not in (card.get("hparams") or {}) and card.get("hparams"):
        hp["padding_mode"] = "zeros"  # cards written before the option existed were trained with zero padding
    method = "tffd" if (config.lambda_intra > 0 or config.lambda_inter > 0) else "baseline"
    overrides = {k: hp[k] for k in hp if k not in ("arch", "dataset", "lambda_intra", "lambda_inter")}
    arch = card.get("arch") or hp.get("arch")
    train_cfg = config_from_recipe(
        recipe,
        **overrides,
        arch=arch,
        dataset=dataset,
        method=method,
        lambda_intra=float(config.lambda_intra),
        lambda_inter=float(config.lambda_inter),
        seed=int(card.get("seed") or 0),
        stages=None if config.stages is None else list(config.stages),
        pairs=None if config.pairs is None else [tuple(p) for p in config.pairs],
    )
    stages, pairs = resolved_stages(train_cfg, list(taps))
    train_cfg.stages = None if config.stages is None else list(stages)  # typed list[StageKey], as TrainConfig
    train_cfg.pairs = None if config.pairs is None else list(pairs)
    lr = float(config.lr) if config.lr is not None else float(f"{LR_FRACTION * float(hp['lr']):.6g}")
    return {
        "recipe": recipe,
        "arch": arch,
        "dataset": dataset,
        "lambda_intra": float(config.lambda_intra),
        "lambda_inter": float(config.lambda_inter),
        "stages": stages,
        "pairs": [f"{a}->{b}" for a, b in pairs],
        "steps": int(config.steps) if config.steps is not None else default_steps(dataset),
        "lr": lr,
        "recipe_lr": float(hp["lr"]),
        **{k: getattr(train_cfg, k) for k in _RECIPE_KEYS if k != "lr"},
        "seed": int(config.seed),
        "noise_seed": int(config.noise_seed if config.noise_seed is not None else config.seed + 1),
        "heldout_n": int(config.heldout_n),
        "train_config": train_cfg,
    }


def heldout_subset(test: ImageDataset, n: int = DEFAULT_HELDOUT_N) -> ImageDataset:
    """A fixed subset of a test split: the whole split when ``n >= len(test)``, else ``n`` images drawn with
    seed 0 (:func:`tffd_viz.data.sample_indices`), in split order.

    Returns
    -------
    ImageDataset
        Images ``(min(n, N), C, H, W)`` with the split's labels and normalisation.
    """
    if n >= len(test):
        return test
    idx = sample_indices(len(test), int(n), seed=0).sort().values
    return ImageDataset(test.images[idx], test.labels[idx], test.mean, test.std)
