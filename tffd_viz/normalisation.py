"""Input normalisation of a model against the data it is shown: known from its card, or a marked guess.

A sample batch is normalised once, with the dataset's statistics (:mod:`tffd_viz.data`). A model trained
with other statistics (akamaster's CIFAR ResNets use ImageNet's) sees the batch through an *input
adapter*: a forward pre-hook that maps ``(x - data_mean) / data_std`` to ``(x - mean) / std`` exactly,
so every page, tap and gradient works on the one shared batch, and module names stay the model's own.

Where a checkpoint does not say (no ``mean``/``std`` in its card: a bare state dict, a chenyaofo
ResNet) the statistics are a *guess* among :data:`NORMALISATIONS`; :func:`accuracy_by_normalisation`
gives the batch accuracy under each choice so a wrong guess shows at once.

>>> from tffd_viz.models import create_model
>>> data_mean, data_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)   # what the batch was normalised with
>>> norm = model_normalisation({}, data_mean, data_std, guess="imagenet")   # its card does not say
>>> norm.guessed, norm.mean
(True, (0.485, 0.456, 0.406))
>>> model = create_model("resnet20", num_classes=10)
>>> attach_input_normalisation(model, data_mean, data_std, norm.mean, norm.std) is model.input_normalisation
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from tffd_viz.errors import DataError

__all__ = [
    "DATA_COPY_CAVEAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALISATIONS",
    "InputNormalisation",
    "ModelNormalisation",
    "accuracy_by_normalisation",
    "adapter_stats",
    "attach_input_normalisation",
    "card_normalisation",
    "model_normalisation",
    "normalisation_stats",
    "renormalised",
    "trained_elsewhere",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Choices for a checkpoint whose card does not say how its inputs were normalised: key -> label.
NORMALISATIONS: dict[str, str] = {
    "dataset": "dataset statistics",
    "imagenet": "ImageNet statistics",
    "none": "none (pixels in [0, 1])",
}

#: Said wherever the accuracy of a model trained elsewhere is shown.
DATA_COPY_CAVEAT = (
    "This model was trained elsewhere: the copy of the data used here may differ from the one it was trained "
    "on (the CIFAR copies shared with this project are JPEG re-encodes), so its accuracy here can be lower "
    "than the published figure."
)

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def _imagenet(mean: Sequence[float], std: Sequence[float]) -> Stats:
    if len(mean) != 3:
        raise DataError(f"ImageNet statistics are for 3-channel images; this data has {len(mean)} channel(s)")
    return IMAGENET_MEAN, IMAGENET_STD


# Choice -> (dataset mean, dataset std) -> (mean, std) the model gets.
_STATS: dict[str, Callable[[Sequence[float], Sequence[float]], Stats]] = {
    "dataset": lambda mean, std: (tuple(map(float, mean)), tuple(map(float, std))),
    "imagenet": _imagenet,
    "none": lambda mean, std: ((0.0,) * len(mean), (1.0,) * len(std)),
}


def normalisation_stats(choice: str, data_mean: Sequence[float], data_std: Sequence[float]) -> Stats:
    """Return the ``(mean, std)`` of a :data:`NORMALISATIONS` choice for data of ``len(data_mean)`` channels.

    Raises
    ------
    DataError
        For an unknown choice, or ImageNet statistics on data that has not 3 channels.
    """
    if choice not in _STATS:
        raise DataError(f"unknown normalisation {choice!r}; choose one of {list(NORMALISATIONS)}")
    return _STATS[choice](data_mean, data_std)


def card_normalisation(card: Mapping[str, Any]) -> Stats | None:
    """Return the card's ``(mean, std)``, or None when it lacks either (or they are malformed)."""
    mean, std = card.get("mean"), card.get("std")
    if (
        not isinstance(mean, (list, tuple))
        or not isinstance(std, (list, tuple))
        or len(mean) != len(std)
        or not mean
    ):
        return None
    try:
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)
    except (TypeError, ValueError):
        return None


def trained_elsewhere(card: Mapping[str, Any]) -> bool:
    """Whether a loaded card describes a model trained outside tffd-viz (not a tffd-viz checkpoint file)."""
    fmt = card.get("source_format")
    return fmt is not None and not str(fmt).startswith("tffd-viz/")


@dataclass(frozen=True)
class ModelNormalisation:
    """The statistics a model's inputs are normalised with, and where they come from.

    Attributes
    ----------
    mean, std : tuple of float, one per input channel
    guessed : bool
        True when the card does not say and ``choice`` was taken.
    choice : str or None
        The key of :data:`NORMALISATIONS` taken (guesses only).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    guessed: bool
    choice: str | None = None

    def describe(self) -> str:
        """E.g. ``"from its card (mean 0.485, 0.456, 0.406; std ...)"`` or ``"a guess (...): ..."``."""
        if self.guessed:
            return f"a guess (its file does not say): {NORMALISATIONS[str(self.choice)]}"
        return (
            f"from its card (mean {', '.join(f'{m:.4g}' for m in self.mean)}; "
            f"std {', '.join(f'{s:.4g}' for s in self.std)})"
        )


def model_normalisation(
    card: Mapping[str, Any], data_mean: Sequence[float], data_std: Sequence[float], guess: str = "dataset"
) -> ModelNormalisation:
    """Return the card's statistics, else the ``guess`` (a key of :data:`NORMALISATIONS`), marked as a guess.

    Raises
    ------
    DataError
        When the card's statistics have another channel count than the data, or the guess is invalid.
    """
    known = card_normalisation(card)
    if known is not None:
        if len(known[0]) != len(data_mean):
            raise DataError(f"the card's mean/std have {len(known[0])} channel(s), the data {len(data_mean)}")
        return ModelNormalisation(known[0], known[1], guessed=False)
    mean, std = normalisation_stats(guess, data_mean, data_std)
    return ModelNormalisation(mean, std, guessed=True, choice=guess)


def _affine(
    data_mean: Sequence[float], data_std: Sequence[float], mean: Sequence[float], std: Sequence[float]
) -> tuple[Tensor, Tensor]:
    """Return ``(scale, shift)`` of shape ``(C,)`` with ``x_model = x_data * scale + shift``."""
    dm, ds, m, s = (
        torch.tensor([float(v) for v in t], dtype=torch.float64) for t in (data_mean, data_std, mean, std)
    )
    if not (dm.shape == ds.shape == m.shape == s.shape):
        raise DataError(
            f"mean/std lengths differ: data {len(data_mean)}/{len(data_std)}, model {len(mean)}/{len(std)}"
        )
    if bool((ds <= 0).any()) or bool((s <= 0).any()):
        raise DataError(
            f"standard deviations must be positive, got data {list(data_std)} and model {list(std)}"
        )
    return ds / s, (dm - m) / s


def renormalised(
    images: Tensor,
    data_mean: Sequence[float],
    data_std: Sequence[float],
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """Return ``images (N, C, H, W)`` normalised with ``data_mean/std`` re-expressed with ``mean/std``.

    Equals ``((images * data_std + data_mean) - mean) / std`` per channel.
    """
    if images.ndim != 4 or images.shape[1] != len(mean):
        raise DataError(f"expected images (N, {len(mean)}, H, W), got {tuple(images.shape)}")
    scale, shift = _affine(data_mean, data_std, mean, std)
    view = (1, -1, 1, 1)
    return images * scale.to(images).view(view) + shift.to(images).view(view)


class InputNormalisation:
    """Forward pre-hook mapping dataset-normalised inputs to a model's own normalisation (see module doc).

    Attributes
    ----------
    data_mean, data_std, mean, std : tuple of float
    """

    def __init__(
        self,
        data_mean: Sequence[float],
        data_std: Sequence[float],
        mean: Sequence[float],
        std: Sequence[float],
    ):
        self.data_mean, self.data_std = tuple(map(float, data_mean)), tuple(map(float, data_std))
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        _affine(self.data_mean, self.data_std, self.mean, self.std)  # validates

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if not args or not isinstance(args[0], Tensor):
            return args
        return (renormalised(args[0], self.data_mean, self.data_std, self.mean, self.std), *args[1:])

    def __repr__(self) -> str:
        return (
            f"InputNormalisation(data_mean={self.data_mean}, data_std={self.data_std}, "
            f"mean={self.mean}, std={self.std})"
        )


def attach_input_normalisation(
    model: nn.Module,
    data_mean: Sequence[float],
    data_std: Sequence[float],
    mean: Sequence[float],
    std: Sequence[float],
) -> InputNormalisation | None:
    """Make ``model`` take dataset-normalised inputs: register an :class:`InputNormalisation` pre-hook.

    Replaces an adapter attached before. Nothing is attached (and None returned) when the statistics are
    equal, so the project's own checkpoints run unchanged. The adapter is ``model.input_normalisation``.
    """
    handle = getattr(model, "_input_normalisation_handle", None)
    if handle is not None:
        handle.remove()
    _keep_adapter(model, None, None)
    scale, shift = _affine(data_mean, data_std, mean, std)
    if bool(((scale - 1).abs() <= 1e-6).all()) and bool((shift.abs() <= 1e-6).all()):
        return None
    adapter = InputNormalisation(data_mean, data_std, mean, std)
    _keep_adapter(model, model.register_forward_pre_hook(adapter), adapter)
    return adapter


def _keep_adapter(
    model: nn.Module, handle: RemovableHandle | None, adapter: InputNormalisation | None
) -> None:
    """Store the hook's handle and its adapter as plain attributes of ``model`` (in its ``__dict__``, where
    ``nn.Module.__setattr__`` puts any value that is not a tensor or a module; its signature admits only
    those)."""
    vars(model).update(_input_normalisation_handle=handle, input_normalisation=adapter)


def adapter_stats(
    norm: ModelNormalisation, data_mean: Sequence[float], data_std: Sequence[float], atol: float = 1e-6
) -> tuple[tuple[float, ...], ...] | None:
    """Return ``(data_mean, data_std, mean, std)`` for :func:`attach_input_normalisation`, or None when the
    model's statistics equal the data's (to ``atol``) and no adapter is needed."""
    scale, shift = _affine(data_mean, data_std, norm.mean, norm.std)
    if bool(((scale - 1).abs() <= atol).all()) and bool((shift.abs() <= atol).all()):
        return None
    return tuple(map(float, data_mean)), tuple(map(float, data_std)), norm.mean, norm.std


def accuracy_by_normalisation(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    data_mean: Sequence[float],
    data_std: Sequence[float],
    choices: Sequence[str] = tuple(NORMALISATIONS),
    batch_size: int = 256,
) -> dict[str, float]:
    """Return the top-1 accuracy (%) of ``model`` on a batch under each normalisation choice.

    Parameters
    ----------
    model : nn.Module
        Without an input adapter (it is given the re-normalised images directly).
    images : Tensor (N, C, H, W)
        Normalised with ``data_mean``/``data_std``.
    labels : LongTensor (N,)
    choices : keys of :data:`NORMALISATIONS`
        Choices that do not apply to the data (ImageNet statistics on 1-channel images) are left out.

    Returns
    -------
    dict choice -> accuracy in percent
    """
    from tffd_viz.features import accuracy, predict_logits

    out: dict[str, float] = {}
    for choice in choices:
        try:
            mean, std = normalisation_stats(choice, data_mean, data_std)
        except DataError:
            continue
        logits = predict_logits(
            model, renormalised(images, data_mean, data_std, mean, std), batch_size=batch_size
        )
        out[choice] = accuracy(logits, labels)
    return out
