"""The options of a training run: :class:`TrainConfig`, their checks, and the stage / pair specs.

Every option is checked before any work (:data:`OPTION_RULES`, :meth:`TrainConfig.check`); a recipe of
:data:`tffd_viz.recipes.RECIPES` plus explicit overrides gives a config (:func:`config_from_recipe`).
The field names are the keys of saved resume states: they stay as they are (a resume compares them).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tffd_viz.errors import TffdVizError
from tffd_viz.recipes import RECIPES
from tffd_viz.training.augment import AUGMENTATIONS, PADDING_MODES
from tffd_viz.training.schedules import SCHEDULES
from tffd_viz.types import StageKey

__all__ = [
    "METHODS",
    "OPTION_RULES",
    "PRECISIONS",
    "TrainConfig",
    "config_dict",
    "config_from_recipe",
    "parse_pairs",
    "parse_stages",
    "resolved_stages",
]

METHODS: tuple[str, ...] = ("baseline", "tffd", "tffd_kd")
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

#: The defaults of :class:`TrainConfig`.
_PAPER = RECIPES["paper"]


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
        Peak learning rate and the schedule (:data:`~tffd_viz.training.schedules.SCHEDULES`): ``multistep``
        divides by ``1/gamma`` at each milestone epoch; ``onecycle`` ramps (cosine) from ``lr/25`` to ``lr``
        over the first ``pct_start`` of the steps and anneals (cosine) to ``lr/1e4``; ``cosine`` warms up
        linearly for ``lr_warmup`` epochs then follows a cosine to 0.
    momentum, nesterov, weight_decay : SGD settings (weight decay on every parameter, as the reference).
    crop_padding : int
        Random crop after padding by this many pixels (0 = no crop).
    padding_mode : {"zeros", "reflect"}
        How the crop pads: black pixels (torchvision's ``RandomCrop(padding=p)``) or a mirror of the border
        (``Pad(p, padding_mode='reflect')``, the reference).
    flip : bool
        Random horizontal flip.
    augment : {"pad_crop_flip", "random_resized_crop"}
        :data:`~tffd_viz.training.augment.AUGMENTATIONS`: the CIFAR crop after padding (``crop_padding``,
        ``padding_mode``), or torchvision's ``RandomResizedCrop`` (scale 0.08-1, aspect 3/4-4/3) from the full
        image (a 224-pixel image folder is decoded from its files); both then flip when ``flip``.
    seed : int
        Seeds the model initialisation and the data generator.
    device : {"auto", "cpu", "cuda"}
        Resolved by :func:`tffd_viz.devices.resolved_device` (an unavailable CUDA is an error).
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
        ``tffd_kd`` only: path of the teacher checkpoint (any format
        :func:`tffd_viz.checkpoints.load_checkpoint` accepts; its sha256 goes into the card).
    lambda_kd, kd_temperature : float
        ``tffd_kd`` only: weight and temperature ``T`` of the logit KD term.
    """

    arch: str = _PAPER["arch"]
    dataset: str = _PAPER["dataset"]
    data_root: str | None = None
    method: str = "tffd"
    lambda_intra: float = _PAPER["lambda_intra"]
    lambda_inter: float = _PAPER["lambda_inter"]
    stages: list[StageKey] | None = None
    pairs: list[tuple[StageKey, StageKey]] | None = None
    warmup: float = _PAPER["warmup"]
    epochs: int = _PAPER["epochs"]
    batch_size: int = _PAPER["batch_size"]
    lr: float = _PAPER["lr"]
    schedule: str = _PAPER["schedule"]
    milestones: tuple[int, ...] = _PAPER["milestones"]
    gamma: float = _PAPER["gamma"]
    lr_warmup: float = _PAPER["lr_warmup"]
    pct_start: float = _PAPER["pct_start"]
    momentum: float = _PAPER["momentum"]
    nesterov: bool = _PAPER["nesterov"]
    weight_decay: float = _PAPER["weight_decay"]
    crop_padding: int = _PAPER["crop_padding"]
    padding_mode: str = _PAPER["padding_mode"]
    augment: str = _PAPER["augment"]
    flip: bool = _PAPER["flip"]
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
    lambda_kd: float = _PAPER["lambda_kd"]
    kd_temperature: float = _PAPER["kd_temperature"]
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
            if any(b <= a for a, b in itertools.pairwise(ms)) or any(not 0 < m < self.epochs for m in ms):
                raise TffdVizError(
                    f"option milestones = {ms} is not allowed: increasing epochs in "
                    f"[1, epochs - 1] = [1, {self.epochs - 1}] (multistep schedule)"
                )
        if self.nesterov and self.momentum <= 0:
            raise TffdVizError(f"option nesterov = True needs momentum > 0, got momentum = {self.momentum!r}")
        if self.method == "tffd_kd" and not self.teacher:
            raise TffdVizError(
                "option teacher is required by method tffd_kd (a checkpoint path, e.g. "
                "--teacher checkpoints/cifar100_resnet20_baseline_s0.safetensors)"
            )
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


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as plain JSON-like values (lists for tuples): what a resume state stores and compares."""
    d = dataclasses.asdict(cfg)
    d["milestones"] = list(d["milestones"])
    d["stages"] = None if d["stages"] is None else list(d["stages"])
    d["pairs"] = None if d["pairs"] is None else [list(p) for p in d["pairs"]]
    return d


# --------------------------------------------------------------------------------------------------
# stages and pairs
# --------------------------------------------------------------------------------------------------


def _stage_key(text: StageKey) -> StageKey:
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


def parse_stages(spec: str | Sequence[StageKey] | None) -> list[StageKey] | None:
    """Parse ``"layer1,layer3"`` / ``"0,2"`` (or a list) into stage keys; None/``"all"`` -> None;
    ``"none"`` -> []."""
    is_word, value = _spec_word(spec)
    if is_word or spec is None:
        return value
    if isinstance(spec, str):
        return [_stage_key(s) for s in spec.split(",") if s.strip()]
    return [_stage_key(s) for s in spec]


def parse_pairs(spec: str | Sequence[Sequence[StageKey]] | None) -> list[tuple[StageKey, StageKey]] | None:
    """Parse ``"0-1,0-2,1-2"`` or ``"layer1-layer3"`` (or a list of pairs); None/``"all"`` -> None;
    ``"none"`` -> []."""
    is_word, value = _spec_word(spec)
    if is_word or spec is None:
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


def _stage_name(key: StageKey, taps: list[str]) -> str:
    if isinstance(key, int):
        if not 0 <= key < len(taps):
            raise TffdVizError(f"stage index {key} out of range for taps {taps}")
        return taps[key]
    if key not in taps:
        raise TffdVizError(f"unknown stage {key!r}; the model's stage taps are {taps}")
    return key


def resolved_stages(cfg: TrainConfig, taps: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The intra stages and inter pairs of ``cfg`` as tap names of a model with stage taps ``taps``.

    Returns
    -------
    stages : list of str
        Every tap for ``cfg.stages = None``; duplicates dropped, order kept.
    pairs : list of (str, str)
        Every ``(taps[i], taps[j])``, ``i < j``, for ``cfg.pairs = None``.

    Raises
    ------
    TffdVizError
        An unknown stage name, an index out of range, or a pair whose shallow tap is not before its deep one.
    """
    stages = list(taps) if cfg.stages is None else [_stage_name(s, taps) for s in cfg.stages]
    if cfg.pairs is None:
        pairs = [(taps[i], taps[j]) for i in range(len(taps)) for j in range(i + 1, len(taps))]
    else:
        pairs = [(_stage_name(a, taps), _stage_name(b, taps)) for a, b in cfg.pairs]
        bad = [p for p in pairs if taps.index(p[0]) >= taps.index(p[1])]
        if bad:
            raise TffdVizError(f"pairs {bad}: the shallow tap must come before the deep one in {taps}")
    return list(dict.fromkeys(stages)), list(dict.fromkeys(pairs))
