"""The what-if run: :class:`WhatIf` steps the three arms together and evaluates them on the held-out subset.

Part of :mod:`tffd_viz.whatif`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tffd_viz.data import DatasetBundle
from tffd_viz.errors import TffdVizError
from tffd_viz.features import eval_mode, model_device
from tffd_viz.heldout import heldout_terms
from tffd_viz.losses import TfFD
from tffd_viz.models import default_taps
from tffd_viz.train import (
    TrainConfig,
    augment_batch,
    epoch_draws,
    train_step,
)
from tffd_viz.whatif.answer import compare_arms, train_command
from tffd_viz.whatif.config import ARMS, WhatIfConfig, heldout_subset, whatif_settings


def _draws(n: int, cfg: TrainConfig, seed: int) -> Iterator[tuple[Tensor, Tensor | None, Tensor | None]]:
    """Batches ``(indices (b,), offsets (b, 2) or None, flips (b,) or None)`` as :func:`tffd_viz.train.train`
    draws them: an epoch's permutation, crops and flips from one generator seeded with ``seed``, cut into
    consecutive batches of ``cfg.batch_size`` (the last one of an epoch shorter), epoch after epoch."""
    gen = torch.Generator().manual_seed(int(seed))
    while True:
        perm, offsets, flips = epoch_draws(n, cfg, gen)
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
    """Short fine-tunes from one model: control, Tf-FD arm and a second control (see :mod:`tffd_viz.whatif`).

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

    def __init__(
        self,
        model: nn.Module,
        bundle: DatasetBundle,
        config: WhatIfConfig = WhatIfConfig(),
        card: Mapping[str, Any] | None = None,
    ) -> None:
        config.check()
        if not isinstance(getattr(bundle.train, "images", None), Tensor):
            raise TffdVizError(
                f"the what-if trains on in-memory datasets (digits, CIFAR, 32-pixel image folders); "
                f"the {bundle.name} split given is decoded lazily ({type(bundle.train).__name__})"
            )
        self.config = config
        self.bundle = bundle
        self.taps = list(default_taps(model))
        self.settings = whatif_settings(card, bundle.name, config, self.taps)
        self.device = torch.device(config.device) if config.device is not None else model_device(model)
        fmt = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        base = copy.deepcopy(model).to(self.device).to(memory_format=fmt)
        for p in base.parameters():
            p.requires_grad_(True)
        self._check_fits(base)
        self.heldout_set = heldout_subset(bundle.test, self.settings["heldout_n"])
        s = self.settings
        self.tffd = TfFD(
            s["lambda_intra"],
            s["lambda_inter"],
            stages=s["stages"],
            pairs=[tuple(p.split("->")) for p in s["pairs"]],
        )
        self.arms: dict[str, _Arm] = {}
        for name in ARMS:
            net = copy.deepcopy(base).train()
            opt = torch.optim.SGD(
                net.parameters(),
                lr=s["lr"],
                momentum=s["momentum"],
                nesterov=s["nesterov"],
                weight_decay=s["weight_decay"],
            )
            seed = s["noise_seed"] if name == "control2" else s["seed"]
            self.arms[name] = _Arm(
                name,
                net,
                opt,
                apply=name == "tffd",
                batches=_draws(len(bundle.train), s["train_config"], seed),
            )
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
                raise TffdVizError(
                    f"the model does not take {self.bundle.name} images of shape "
                    f"{tuple(x.shape[1:])} (in_chans {self.bundle.in_chans}): "
                    f"{str(exc).splitlines()[0]}"
                ) from None
        if logits.ndim != 2 or logits.shape[1] != len(self.bundle.classes):
            raise TffdVizError(
                f"the model predicts {tuple(logits.shape[1:])} logits per image but "
                f"{self.bundle.name} has {len(self.bundle.classes)} classes: pick a matching dataset"
            )

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
            lambda-weighted total; logged, not trained on, in the controls), ``intra_<tap>`` and
            ``inter_<a>-><b>`` (the unweighted terms in the loss, on the training batch, train-mode BatchNorm)
            and ``batch_acc`` (%).
        """
        todo = self.total_steps - self.step if steps is None else int(steps)
        self.start_heldout()
        for _ in range(max(0, todo)):
            t0 = time.perf_counter()
            rows = [self._step(arm) for arm in self.arms.values()]
            self.seconds += time.perf_counter() - t0
            self.step += 1
            self.rows += (
                rows  # before yielding: a consumer that stops mid-step leaves every arm's row recorded
            )
            yield from rows

    def _step(self, arm: _Arm) -> dict[str, Any]:
        x, y = self._batch(arm)
        stats = train_step(
            arm.model, x, y, self.tffd, 1.0, arm.optimizer, taps=self.taps, apply_tffd=arm.apply
        )
        row: dict[str, Any] = {
            "arm": arm.name,
            "phase": "train",
            "step": self.step + 1,
            "lr": stats["lr"],
            "ce": stats["ce"],
            "loss": stats["loss"],
            "tffd_total": stats["tffd_total"],
        }
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
                self._end[self.step] = {
                    name: heldout_terms(arm.model, self.heldout_set, taps=self.taps)
                    for name, arm in self.arms.items()
                }
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
        return {
            "settings": shown,
            "step": self.step,
            "seconds": self.seconds,
            "start": start,
            "end": end,
            "comparison": compare_arms(start, end),
            "command": train_command(self.settings),
        }

    def model(self, arm: str) -> nn.Module:
        """The (fine-tuned) model of an arm; one of :data:`ARMS`."""
        if arm not in self.arms:
            raise TffdVizError(f"unknown arm {arm!r}; choose one of {list(ARMS)}")
        return self.arms[arm].model
