"""Try a lambda before training with it: short Tf-FD fine-tunes from one model, against controls.

From a starting model, :class:`WhatIf` runs three short fine-tunes from the *same* weights:

* ``control``: plain cross-entropy (the Tf-FD terms at the chosen lambdas are computed, detached, and logged);
* ``tffd``: cross-entropy plus the chosen lambda-weighted Tf-FD terms (no warm-up: the lambdas act from step 1);
* ``control2``: plain cross-entropy on another batch order (``noise_seed``). Its distance from ``control`` is the
  noise floor against which the Tf-FD arm's difference from ``control`` is read.

``control`` and ``tffd`` draw the same batches and augmentations (one seeded generator each, same seed, with
:func:`tffd_viz.train._epoch_draws` and :func:`tffd_viz.train.augment_batch`); every step is
:func:`tffd_viz.train.train_step` (BatchNorm in train mode), with SGD at the card recipe's momentum, Nesterov
flag and weight decay, the recipe's batch size and a constant learning rate (default: a tenth of the recipe's
peak lr). The arms advance together, step by step, so a run stopped early compares them at the same step.

Before the first step and after the last, every arm is evaluated on a fixed held-out subset of the test split
(:func:`tffd_viz.heldout.heldout_terms`: eval mode, accuracy and every Tf-FD term with its batch-to-batch
spread, raw and divided by the activation energy of the maps it compares). :func:`compare_arms` turns those into
one row per quantity, :func:`whatif_answer` states the answer in words and numbers and :func:`train_command` gives
the ``tffd-viz train`` command line that trains with these settings for real.

The starting model is never modified: it is deep-copied once (hold its lock while constructing a
:class:`WhatIf` from a model shared between threads) and each arm trains its own copy. On the CPU the rows are
deterministic: the same inputs give the same rows bit for bit.

>>> from tffd_viz.checkpoints import load_checkpoint
>>> from tffd_viz.data import load_dataset
>>> model, card = load_checkpoint("checkpoints/digits_resnet8_baseline_s0.safetensors")  # doctest: +SKIP
>>> w = WhatIf(model, load_dataset("digits"), WhatIfConfig(lambda_intra=1.0, lambda_inter=0.0), card=card)
>>> rows = list(w.run())                       # 3 rows (one per arm) per step   # doctest: +SKIP
>>> print(whatif_answer(w.result()))                                             # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import copy
import math
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tffd_viz.data import DatasetBundle, ImageDataset, sample_indices
from tffd_viz.errors import TffdVizError
from tffd_viz.features import eval_mode, model_device
from tffd_viz.heldout import heldout_terms
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA, TfFD
from tffd_viz.models import default_taps
from tffd_viz.train import (
    RECIPES,
    TrainConfig,
    _epoch_draws,
    _resolved_stages,
    augment_batch,
    config_from_recipe,
    train_step,
)

__all__ = [
    "ARMS", "ARM_LABELS", "DEFAULT_HELDOUT_N", "DEFAULT_STEPS", "LR_FRACTION", "WhatIf", "WhatIfConfig",
    "add_whatif_arguments", "checkpoint_file", "compare_arms", "default_steps", "heldout_rows", "heldout_subset",
    "run_whatif", "train_command", "whatif_answer", "whatif_html", "whatif_rows", "whatif_settings",
    "write_rows_csv",
]

#: The arms, in the order they step and are reported.
ARMS: tuple[str, ...] = ("control", "tffd", "control2")
#: Legend label of each arm.
ARM_LABELS: dict[str, str] = {"control": "control (CE only)", "tffd": "Tf-FD arm",
                              "control2": "control, other batch order"}
#: Default number of steps per dataset (a few seconds for digits/resnet8, about 30 s for CIFAR/resnet20 on 2 cores).
DEFAULT_STEPS: dict[str, int] = {"digits": 100}
FALLBACK_STEPS = 30
#: Held-out images (a fixed subset of the test split; the whole split when it is smaller).
DEFAULT_HELDOUT_N = 2000
#: Default constant learning rate as a fraction of the recipe's peak lr.
LR_FRACTION = 0.1
#: Recipe options the fine-tune takes from the card's ``hparams`` (else from the recipe).
_RECIPE_KEYS = ("batch_size", "momentum", "nesterov", "weight_decay", "crop_padding", "padding_mode", "flip", "lr")


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
    stages: tuple[str | int, ...] | None = None
    pairs: tuple[tuple[str | int, str | int], ...] | None = None
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
                raise TffdVizError(f"{name} = {v!r} is not allowed: a finite number >= 0 (0 switches the family off)")
        if self.steps is not None and not (_whole(self.steps) and self.steps >= 1):
            raise TffdVizError(f"steps = {self.steps!r} is not allowed: a whole number >= 1")
        if self.lr is not None and not (_finite(self.lr) and 0 < self.lr <= 10):
            raise TffdVizError(f"lr = {self.lr!r} is not allowed: a finite number in (0, 10]")
        if not (_whole(self.seed) and self.seed >= 0):
            raise TffdVizError(f"seed = {self.seed!r} is not allowed: a whole number >= 0")
        if self.noise_seed is not None and not (_whole(self.noise_seed) and self.noise_seed >= 0
                                                and self.noise_seed != self.seed):
            raise TffdVizError(f"noise_seed = {self.noise_seed!r} is not allowed: a whole number >= 0 other than "
                               f"seed ({self.seed}); the second control needs another batch order")
        if not (_whole(self.heldout_n) and self.heldout_n >= 8):
            raise TffdVizError(f"heldout_n = {self.heldout_n!r} is not allowed: a whole number of images >= 8")
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


def whatif_settings(card: Mapping[str, Any] | None, dataset: str, config: WhatIfConfig,
                    taps: Sequence[str]) -> dict[str, Any]:
    """The effective settings of a what-if, every one shown to the user.

    Parameters
    ----------
    card : dict or None
        The starting model's card: ``hparams`` (the recipe it was trained with), ``recipe``, ``arch``, ``seed``.
        Absent values come from the recipe (``card["recipe"]``, else ``digits`` for digits, else ``paper``).
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
        ``weight_decay``, ``crop_padding``, ``padding_mode``, ``flip``, ``seed``, ``noise_seed``, ``heldout_n``
        and ``train_config`` (the :class:`TrainConfig` of the equivalent real training run).

    Raises
    ------
    TffdVizError
        A bad config value, or a stage or pair the model does not have (naming its taps).
    """
    config.check()
    card = dict(card or {})
    recipe = _recipe_name(card, dataset)
    hp = {**RECIPES[recipe], **{k: v for k, v in (card.get("hparams") or {}).items() if k in RECIPES["paper"]}}
    if "padding_mode" not in (card.get("hparams") or {}) and card.get("hparams"):
        hp["padding_mode"] = "zeros"  # cards written before the option existed were trained with zero padding
    method = "tffd" if (config.lambda_intra > 0 or config.lambda_inter > 0) else "baseline"
    overrides = {k: hp[k] for k in hp if k not in ("arch", "dataset", "lambda_intra", "lambda_inter")}
    arch = card.get("arch") or hp.get("arch")
    train_cfg = config_from_recipe(
        recipe, **overrides, arch=arch, dataset=dataset, method=method, lambda_intra=float(config.lambda_intra),
        lambda_inter=float(config.lambda_inter), seed=int(card.get("seed") or 0),
        stages=None if config.stages is None else list(config.stages),
        pairs=None if config.pairs is None else [tuple(p) for p in config.pairs])
    stages, pairs = _resolved_stages(train_cfg, list(taps))
    train_cfg.stages = None if config.stages is None else stages
    train_cfg.pairs = None if config.pairs is None else pairs
    lr = float(config.lr) if config.lr is not None else float(f"{LR_FRACTION * float(hp['lr']):.6g}")
    return {
        "recipe": recipe, "arch": arch, "dataset": dataset,
        "lambda_intra": float(config.lambda_intra), "lambda_inter": float(config.lambda_inter),
        "stages": stages, "pairs": [f"{a}->{b}" for a, b in pairs],
        "steps": int(config.steps) if config.steps is not None else default_steps(dataset),
        "lr": lr, "recipe_lr": float(hp["lr"]),
        **{k: getattr(train_cfg, k) for k in _RECIPE_KEYS if k != "lr"},
        "seed": int(config.seed), "noise_seed": int(config.noise_seed if config.noise_seed is not None
                                                    else config.seed + 1),
        "heldout_n": int(config.heldout_n), "train_config": train_cfg,
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


def _draws(n: int, cfg: TrainConfig, seed: int) -> Iterator[tuple[Tensor, Tensor | None, Tensor | None]]:
    """Batches ``(indices (b,), offsets (b, 2) or None, flips (b,) or None)`` as :func:`tffd_viz.train.train` draws
    them: an epoch's permutation, crops and flips from one generator seeded with ``seed``, cut into consecutive
    batches of ``cfg.batch_size`` (the last one of an epoch shorter), epoch after epoch."""
    gen = torch.Generator().manual_seed(int(seed))
    while True:
        perm, offsets, flips = _epoch_draws(n, cfg, gen)
        for start in range(0, n, cfg.batch_size):
            pos = slice(start, min(start + cfg.batch_size, n))
            yield perm[pos], None if offsets is None else offsets[pos], None if flips is None else flips[pos]


@dataclass
class _Arm:
    """One fine-tune: its own model copy, optimiser and batch stream."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    apply: bool
    batches: Iterator[tuple[Tensor, Tensor | None, Tensor | None]]


class WhatIf:
    """Short fine-tunes from one model: control, Tf-FD arm and a second control (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        The starting model (zoo model with default stage taps). Deep-copied here and never modified.
    bundle : DatasetBundle
        The dataset: the arms train on ``bundle.train``, the held-out subset comes from ``bundle.test``.
    config : WhatIfConfig
    card : dict, optional
        The model's card (recipe, ``hparams``): see :func:`whatif_settings`.

    Attributes
    ----------
    settings : dict
        :func:`whatif_settings`.
    step : int
        Steps done by every arm.
    rows : list of dict
        Every row :meth:`run` yielded.
    seconds : float
        Wall-clock seconds spent in steps (not in held-out evaluation).

    Raises
    ------
    TffdVizError
        Before any work: a bad config value, a stage or pair the model lacks, a model that does not take the
        dataset's images (input channels) or predicts another number of classes.
    """

    def __init__(self, model: nn.Module, bundle: DatasetBundle, config: WhatIfConfig = WhatIfConfig(),
                 card: Mapping[str, Any] | None = None) -> None:
        config.check()
        if not isinstance(getattr(bundle.train, "images", None), Tensor):
            raise TffdVizError(f"the what-if trains on in-memory datasets (digits, CIFAR, 32-pixel image folders); "
                               f"the {bundle.name} split given is decoded lazily ({type(bundle.train).__name__})")
        self.config = config
        self.bundle = bundle
        self.taps = list(default_taps(model))
        self.settings = whatif_settings(card, bundle.name, config, self.taps)
        self.device = torch.device(config.device) if config.device is not None else model_device(model)
        fmt = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        base = copy.deepcopy(model).to(device=self.device, memory_format=fmt)
        for p in base.parameters():
            p.requires_grad_(True)
        self._check_fits(base)
        self.heldout_set = heldout_subset(bundle.test, self.settings["heldout_n"])
        s = self.settings
        self.tffd = TfFD(s["lambda_intra"], s["lambda_inter"], stages=s["stages"],
                         pairs=[tuple(p.split("->")) for p in s["pairs"]])
        self.arms: dict[str, _Arm] = {}
        for name in ARMS:
            net = copy.deepcopy(base).train()
            opt = torch.optim.SGD(net.parameters(), lr=s["lr"], momentum=s["momentum"], nesterov=s["nesterov"],
                                  weight_decay=s["weight_decay"])
            seed = s["noise_seed"] if name == "control2" else s["seed"]
            self.arms[name] = _Arm(name, net, opt, apply=name == "tffd",
                                   batches=_draws(len(bundle.train), s["train_config"], seed))
        self._fmt = fmt
        self._train_images = bundle.train.images.to(self.device)
        self._train_labels = bundle.train.labels.to(self.device)
        self._start_model = base
        self._start: dict[str, Any] | None = None
        self._end: dict[int, dict[str, dict[str, Any]]] = {}
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        self.seconds = 0.0

    def _check_fits(self, model: nn.Module) -> None:
        test = self.bundle.test
        x = test.normalized(slice(0, min(2, len(test)))).to(self.device)
        with eval_mode(model), torch.no_grad():
            try:
                logits = model(x)
            except (RuntimeError, TffdVizError) as exc:
                raise TffdVizError(f"the model does not take {self.bundle.name} images of shape "
                                   f"{tuple(x.shape[1:])} (in_chans {self.bundle.in_chans}): "
                                   f"{str(exc).splitlines()[0]}") from None
        if logits.ndim != 2 or logits.shape[1] != len(self.bundle.classes):
            raise TffdVizError(f"the model predicts {tuple(logits.shape[1:])} logits per image but "
                               f"{self.bundle.name} has {len(self.bundle.classes)} classes: pick a matching dataset")

    # ----------------------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        """Steps the run is set to (``settings["steps"]``)."""
        return int(self.settings["steps"])

    def start_heldout(self) -> dict[str, Any]:
        """Held-out figures of the starting model (:func:`tffd_viz.heldout.heldout_terms`), computed once."""
        if self._start is None:
            self._start = heldout_terms(self._start_model, self.heldout_set, taps=self.taps)
        return self._start

    def _batch(self, arm: _Arm) -> tuple[Tensor, Tensor]:
        idx, offsets, flips = next(arm.batches)
        idx = idx.to(self.device)
        x01 = self._train_images[idx]
        x01 = x01.float().div_(255.0) if x01.dtype == torch.uint8 else x01.float()
        cfg = self.settings["train_config"]
        x01 = augment_batch(x01, offsets, flips, cfg.crop_padding, cfg.padding_mode)
        return self.bundle.train.normalize(x01).contiguous(memory_format=self._fmt), self._train_labels[idx]

    def run(self, steps: int | None = None) -> Iterator[dict[str, Any]]:
        """Advance every arm by one step at a time, yielding one row per arm and step.

        Parameters
        ----------
        steps : int, optional
            Steps to do now (default: up to ``settings["steps"]``). Calling again continues where it stopped;
            stopping the iteration early (``break``, closing the generator) leaves every arm at the same step.

        Yields
        ------
        dict
            ``arm``, ``phase`` (``"train"``), ``step`` (from 1), ``lr``, ``ce``, ``loss``, ``tffd_total`` (the
            lambda-weighted total; logged, not trained on, in the controls), ``intra_<tap>`` and ``inter_<a>-><b>``
            (the unweighted terms in the loss, on the training batch, train-mode BatchNorm) and ``batch_acc`` (%).
        """
        todo = self.total_steps - self.step if steps is None else int(steps)
        self.start_heldout()
        for _ in range(max(0, todo)):
            t0 = time.perf_counter()
            rows = [self._step(arm) for arm in self.arms.values()]
            self.seconds += time.perf_counter() - t0
            self.step += 1
            self.rows += rows  # before yielding: a consumer that stops mid-step leaves every arm's row recorded
            yield from rows

    def _step(self, arm: _Arm) -> dict[str, Any]:
        x, y = self._batch(arm)
        stats = train_step(arm.model, x, y, self.tffd, 1.0, arm.optimizer, taps=self.taps, apply_tffd=arm.apply)
        row: dict[str, Any] = {"arm": arm.name, "phase": "train", "step": self.step + 1, "lr": stats["lr"],
                               "ce": stats["ce"], "loss": stats["loss"], "tffd_total": stats["tffd_total"]}
        for key, value in stats.items():
            if key.startswith(("intra/", "inter/")):
                row[key.replace("/", "_", 1)] = value
        row["batch_acc"] = 100.0 * stats["correct"] / stats["n"]
        return row

    def end_heldout(self) -> dict[str, dict[str, Any]]:
        """Held-out figures of every arm at the current step (computed once per step)."""
        if self.step not in self._end:
            if self.step == 0:
                self._end[0] = {name: self.start_heldout() for name in ARMS}
            else:
                self._end[self.step] = {name: heldout_terms(arm.model, self.heldout_set, taps=self.taps)
                                        for name, arm in self.arms.items()}
        return self._end[self.step]

    def result(self) -> dict[str, Any]:
        """The comparison at the current step (after :meth:`run`, or after it was stopped early).

        Returns
        -------
        dict
            ``settings`` (without the TrainConfig), ``step``, ``seconds``, ``start`` (held-out of the starting
            model), ``end`` (arm -> held-out), ``comparison`` (:func:`compare_arms`) and ``command``
            (:func:`train_command`).
        """
        start, end = self.start_heldout(), self.end_heldout()
        shown = {k: v for k, v in self.settings.items() if k != "train_config"}
        return {"settings": shown, "step": self.step, "seconds": self.seconds, "start": start, "end": end,
                "comparison": compare_arms(start, end), "command": train_command(self.settings)}

    def model(self, arm: str) -> nn.Module:
        """The (fine-tuned) model of an arm; one of :data:`ARMS`."""
        if arm not in self.arms:
            raise TffdVizError(f"unknown arm {arm!r}; choose one of {list(ARMS)}")
        return self.arms[arm].model


# --------------------------------------------------------------------------------------------------
# comparison and answer
# --------------------------------------------------------------------------------------------------

#: Families of the comparison: (result key, label, scale).
_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("intra", "intra", "raw"), ("inter", "inter", "raw"),
    ("intra_rel", "intra", "relative"), ("inter_rel", "inter", "relative"),
)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept and len(kept) == len(values) else None


def _change(control: float | None, other: float | None, relative: bool) -> float | None:
    if control is None or other is None:
        return None
    if not relative:
        return other - control
    return 100.0 * (other - control) / abs(control) if control != 0 else None


def compare_arms(start: Mapping[str, Any], end: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per held-out quantity: its value per arm, the Tf-FD arm's change and the noise floor.

    Parameters
    ----------
    start : dict
        :func:`tffd_viz.heldout.heldout_terms` of the starting model.
    end : dict
        Arm (:data:`ARMS`) -> :func:`tffd_viz.heldout.heldout_terms` after the fine-tune.

    Returns
    -------
    list of dict
        Rows for ``accuracy``, every intra term (``intra <tap>``), their mean over stages (``intra mean``), every
        inter term and their mean, then the same for the relative terms (``scale = "relative"``). Keys: ``quantity``,
        ``family`` (``accuracy``/``intra``/``inter``), ``term`` (tap, pair or ``mean``), ``scale``, ``start``,
        ``control``, ``tffd``, ``control2``, ``control_std`` and ``tffd_std`` (batch-to-batch spread; None for means
        and accuracy), ``change`` (``tffd - control``: percentage points for accuracy, else percent of
        ``control``), ``noise`` (``|control2 - control|`` in the same unit) and ``beyond_noise``
        (``|change| > noise``).
    """
    rows: list[dict[str, Any]] = []

    def add(family: str, term: str, scale: str, values: dict[str, float | None], stds: dict[str, float | None],
            relative: bool) -> None:
        change = _change(values["control"], values["tffd"], relative)
        noise = _change(values["control"], values["control2"], relative)
        noise = None if noise is None else abs(noise)
        quantity = "accuracy" if family == "accuracy" else f"{family} {term}" + (" (relative)" if scale == "relative"
                                                                               else "")
        rows.append({"quantity": quantity, "family": family, "term": term, "scale": scale, **values,
                     "control_std": stds.get("control"), "tffd_std": stds.get("tffd"), "change": change,
                     "noise": noise, "beyond_noise": None if change is None or noise is None else abs(change) > noise})

    acc = {"start": start["accuracy"], **{a: end[a]["accuracy"] for a in ARMS}}
    add("accuracy", "top-1 %", "raw", acc, {}, relative=False)
    for key, family, scale in _FAMILIES:
        terms = list(start[key])
        for term in terms:
            values = {"start": start[key][term], **{a: end[a][key][term] for a in ARMS}}
            add(family, term, scale, values, {a: end[a][f"{key}_std"][term] for a in ("control", "tffd")}, True)
        if len(terms) > 1:
            means = {"start": _mean([start[key][t] for t in terms]),
                     **{a: _mean([end[a][key][t] for t in terms]) for a in ARMS}}
            add(family, "mean", scale, means, {}, True)
    return rows


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def _signed(v: float | None, unit: str) -> str:
    return "n/a" if v is None else f"{v:+.{1 if abs(v) < 10 else 0}f}{unit}".replace("-", "−")


def _pm(std: float | None) -> str:
    return "" if std is None or not math.isfinite(std) else f" ± {std:.2g}"


def _verdict(row: Mapping[str, Any]) -> str:
    if row["beyond_noise"] is None:
        return ""
    return " (beyond the noise floor)" if row["beyond_noise"] else " (within the noise floor)"


def whatif_answer(result: Mapping[str, Any]) -> str:
    """The answer of a what-if in words and numbers, one line per quantity, then the train command.

    Lines: the setting; every term in the loss with a lambda > 0 (and the mean of its family), raw held-out
    value of ``control`` and the Tf-FD arm with the change in percent and the noise floor, then the same relative
    to the energy of the compared maps; held-out accuracy in points; the ``tffd-viz train`` command line.

    Parameters
    ----------
    result : dict
        :meth:`WhatIf.result`.

    Returns
    -------
    str
    """
    s, rows = result["settings"], result["comparison"]
    by = {(r["family"], r["term"], r["scale"]): r for r in rows}
    lines = [f"After {result['step']} steps per arm (lr {s['lr']:g}, batch {s['batch_size']}, momentum "
             f"{s['momentum']:g}, weight decay {s['weight_decay']:g}), λ_intra {s['lambda_intra']:g} on "
             f"{', '.join(s['stages']) or 'no stage'}, λ_inter {s['lambda_inter']:g} on "
             f"{', '.join(s['pairs']) or 'no pair'}; held-out: {result['start']['n']} test images, eval mode, ± = standard "
             f"deviation over its {result['start']['batches']} batches."]
    shown: list[tuple[str, str]] = []
    for family, terms in (("intra", s["stages"]), ("inter", s["pairs"])):
        if s[f"lambda_{family}"] > 0 and terms:
            shown += [(family, t) for t in terms]
            if (family, "mean", "raw") in by:
                shown.append((family, "mean"))
    if not shown:
        shown = [(f, "mean") for f in ("intra", "inter") if (f, "mean", "raw") in by]
    for family, term in shown:
        raw, rel = by[(family, term, "raw")], by.get((family, term, "relative"))
        name = f"{term} {family} term" if term != "mean" else f"{family} terms, mean over {family == 'intra' and 'stages' or 'pairs'}"
        line = (f"{name} (held-out): control {_fmt(raw['control'])}{_pm(raw['control_std'])}, Tf-FD arm "
                f"{_fmt(raw['tffd'])}{_pm(raw['tffd_std'])} "
                f"({_signed(raw['change'], ' %')}), noise floor ±{_fmt(raw['noise'], 2)} %{_verdict(raw)}")
        if rel is not None:
            line += (f"; relative to the maps' mean square: {_fmt(rel['control'])} vs {_fmt(rel['tffd'])} "
                     f"({_signed(rel['change'], ' %')}, noise ±{_fmt(rel['noise'], 2)} %){_verdict(rel)}")
        lines.append(line)
    acc = by[("accuracy", "top-1 %", "raw")]
    lines.append(f"accuracy (held-out): control {_fmt(acc['control'], 4)} %, Tf-FD arm {_fmt(acc['tffd'], 4)} % "
                 f"({_signed(acc['change'], ' pt')}), noise floor ±{_fmt(acc['noise'], 2)} pt{_verdict(acc)}; "
                 f"start {_fmt(acc['start'], 4)} %")
    lines.append(f"Train with these settings for real: {result['command']}")
    return "\n".join(lines)


def train_command(settings: Mapping[str, Any], out: str | None = None, data_root: str | None = None) -> str:
    """The ``tffd-viz train`` command line that trains from scratch with the what-if's lambdas and layers.

    Parameters
    ----------
    settings : dict
        :func:`whatif_settings` (its ``train_config``; else its recipe, arch, dataset, lambdas, stages, pairs).
    out : str, optional
        ``--out`` (default ``runs/<dataset>_<arch>_<method>_li<λ>_le<λ>_s<seed>.safetensors``).
    data_root : str, optional
        ``--data-root``.

    Returns
    -------
    str
        A shell-quoted command line.
    """
    cfg = settings.get("train_config")
    stages = settings["stages"] if cfg is None else cfg.stages
    pairs = [tuple(p.split("->")) for p in settings["pairs"]] if cfg is None else cfg.pairs
    li, le = settings["lambda_intra"], settings["lambda_inter"]
    method = "tffd" if li > 0 or le > 0 else "baseline"
    seed = 0 if cfg is None else cfg.seed
    words = ["tffd-viz", "train", "--recipe", settings["recipe"], "--arch", str(settings["arch"]),
             "--dataset", settings["dataset"], "--method", method, "--lambda-intra", f"{li:g}",
             "--lambda-inter", f"{le:g}"]
    if stages is not None:
        words += ["--stages", ",".join(map(str, stages)) or "none"]
    if pairs is not None:
        words += ["--pairs", ",".join(f"{a}-{b}" for a, b in pairs) or "none"]
    if data_root:
        words += ["--data-root", str(data_root)]
    words += ["--seed", str(seed), "--out",
              out or f"runs/{settings['dataset']}_{settings['arch']}_{method}_li{li:g}_le{le:g}_s{seed}.safetensors"]
    return shlex.join(words)


# --------------------------------------------------------------------------------------------------
# rows for tables and notebooks
# --------------------------------------------------------------------------------------------------


def heldout_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The held-out figures of a result as table rows: one per arm at the start (``phase="heldout_start"``,
    step 0) and at the end (``"heldout_end"``).

    Columns: ``arm``, ``phase``, ``step``, ``accuracy``, ``intra_<tap>``, ``inter_<a>-><b>``, the same with
    ``_rel`` before the tap (``intra_rel_<tap>``), ``..._std`` after it (batch-to-batch spread) and
    ``energy_<tap>``, ``heldout_n``.
    """
    out = []
    for phase, step, per_arm in (("heldout_start", 0, {a: result["start"] for a in ARMS}),
                                 ("heldout_end", result["step"], result["end"])):
        for arm in ARMS:
            h = per_arm[arm]
            row: dict[str, Any] = {"arm": arm, "phase": phase, "step": step, "accuracy": h["accuracy"]}
            for key in ("intra", "inter", "intra_rel", "inter_rel", "energy"):
                row.update({f"{key}_{t}": v for t, v in h[key].items()})
                row.update({f"{key}_{t}_std": v for t, v in h[f"{key}_std"].items()})
            row["heldout_n"] = h["n"]
            out.append(row)
    return out


def whatif_rows(model: nn.Module, bundle: DatasetBundle, config: WhatIfConfig = WhatIfConfig(),
                card: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Run a what-if and yield its rows: one per arm and step as they come, then :func:`heldout_rows`.

    The generator for notebooks: ``pd.DataFrame(whatif_rows(model, load_dataset("digits"), cfg, card))``.
    Validation errors are raised at the first ``next`` (before any step).
    """
    w = WhatIf(model, bundle, config, card)
    yield from w.run()
    yield from heldout_rows(w.result())



# --------------------------------------------------------------------------------------------------
# command line: tffd-viz whatif
# --------------------------------------------------------------------------------------------------

_SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


def checkpoint_file(name: str) -> Path:
    """A checkpoint path, or the name of a shipped one (``digits_resnet8_baseline_s0`` ->
    ``checkpoints/digits_resnet8_baseline_s0.safetensors``).

    Raises
    ------
    TffdVizError
        When neither exists (naming both places).
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = _SHIPPED / f"{name.removesuffix('.safetensors')}.safetensors"
    if shipped.is_file():
        return shipped
    raise TffdVizError(f"no checkpoint {name!r}: not a file, and not a shipped name ({shipped} does not exist)")


def write_rows_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows (dicts, columns = union of their keys in first-appearance order) to a CSV file."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    return path


def whatif_html(rows: Sequence[Mapping[str, Any]], result: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """One self-contained HTML page of a what-if: the answer, the comparison table, the curves and the held-out
    figure (:mod:`tffd_viz.plots_whatif`), rendered by :func:`tffd_viz.report.render_html`."""
    import pandas as pd

    from tffd_viz.plots_whatif import whatif_curves_figure, whatif_heldout_figure
    from tffd_viz.report import ReportSection, ReportTable, render_html

    comparison = pd.DataFrame(result["comparison"])
    settings = pd.DataFrame([{"setting": k, "value": str(v)} for k, v in result["settings"].items()])
    section = ReportSection(
        id="whatif", title="Try a lambda: short fine-tunes from one model", intro=whatif_answer(result).replace(
            "\n", "\n\n"),
        figures=[whatif_curves_figure(list(rows), total_steps=result["settings"]["steps"]),
                 whatif_heldout_figure(result)],
        tables=[ReportTable("Held-out comparison (change and noise: % of control; accuracy: points)", comparison),
                ReportTable("Settings", settings)])
    return render_html([section], title="Tf-FD what-if", meta=meta)


def add_whatif_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``tffd-viz whatif``."""
    p.add_argument("--a", required=True, metavar="CKPT", help="starting model: a checkpoint path or a shipped name")
    p.add_argument("--lambda-intra", type=float, default=PAPER_LAMBDA_INTRA, help="λ_intra of the Tf-FD arm")
    p.add_argument("--lambda-inter", type=float, default=PAPER_LAMBDA_INTER, help="λ_inter of the Tf-FD arm")
    p.add_argument("--stages", default=None, help="taps taking the intra term, comma list ('all', 'none')")
    p.add_argument("--pairs", default=None, help="inter-term pairs shallow-deep, e.g. '0-1,1-2' ('all', 'none')")
    p.add_argument("--steps", type=int, default=None, help="steps per arm (default: 100 for digits, else 30)")
    p.add_argument("--lr", type=float, default=None, help="constant lr (default: a tenth of the recipe's peak lr)")
    p.add_argument("--seed", type=int, default=0, help="batch-order seed of the control and Tf-FD arms")
    p.add_argument("--noise-seed", type=int, default=None, help="batch-order seed of the second control (seed + 1)")
    p.add_argument("--heldout-n", type=int, default=DEFAULT_HELDOUT_N, help="held-out test images (2000)")
    p.add_argument("--dataset", default=None, help="default: the model card's dataset")
    p.add_argument("--data-root", default=None, help="data root for CIFAR / image folders ($TFFD_DATA, ./data)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--out", default="whatif.csv", help="CSV of the rows; the HTML figure goes beside it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_whatif(args: argparse.Namespace) -> int:
    """Run ``tffd-viz whatif``: write ``<out>.csv`` and ``<out>.html``, print the answer, return 0."""
    import sys

    from tffd_viz.checkpoints import load_checkpoint
    from tffd_viz.data import load_dataset
    from tffd_viz.train import parse_pairs, parse_stages

    stages, pairs = parse_stages(args.stages), parse_pairs(args.pairs)
    config = WhatIfConfig(lambda_intra=args.lambda_intra, lambda_inter=args.lambda_inter,
                          stages=None if stages is None else tuple(stages),
                          pairs=None if pairs is None else tuple(tuple(p) for p in pairs), steps=args.steps,
                          lr=args.lr, seed=args.seed, noise_seed=args.noise_seed, heldout_n=args.heldout_n).check()
    path = checkpoint_file(args.a)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, card = load_checkpoint(str(path), device=device)
    dataset = args.dataset or card.get("dataset") or "digits"
    w = WhatIf(model, load_dataset(dataset, args.data_root), config, card=card)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=w.total_steps, desc="what-if steps", file=sys.stderr)
    for row in w.run():
        if bar is not None and row["arm"] == ARMS[-1]:
            bar.update(1)
    if bar is not None:
        bar.close()
    result = w.result()
    result["command"] = train_command(w.settings, data_root=args.data_root)
    out = Path(args.out)
    csv_path = write_rows_csv([*w.rows, *heldout_rows(result)], out.with_suffix(".csv"))
    html_path = out.with_suffix(".html")
    html_path.write_text(whatif_html(w.rows, result, {"model": str(path), "dataset": dataset, "device": device}),
                         encoding="utf-8")
    print(whatif_answer(result))
    print(f"rows: {csv_path}\nfigure: {html_path}")
    return 0
