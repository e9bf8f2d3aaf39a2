"""Scores and rankings: channel scores under a criterion, Tf-FD's order and its salient / redundant halves.

:func:`channel_scores` scores the channels of one tap; :func:`channel_ranking` orders them exactly as
intra-layer Tf-FD does (descending, ties to the lower index) and :func:`salient_split` pairs its halves.
:func:`tap_rankings` and :func:`rankings_table` do that for every tap of one or several models.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import numpy as np
import torch
from torch import Tensor, nn

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.features import extract_features
from tffd_viz.importance.criteria import Criterion, get_criterion
from tffd_viz.importance.feature_criteria import check_feature
from tffd_viz.models import resolve_taps
from tffd_viz.types import ArrayLike

__all__ = [
    "SalientSplit",
    "TapRanking",
    "channel_ranking",
    "channel_scores",
    "checked_scores",
    "rank_positions",
    "rankings_table",
    "salient_split",
    "tap_rankings",
]


def checked_scores(scores: object, what: str = "scores") -> Tensor:
    """Return ``scores`` as a detached 1-D tensor ``(C,)``; :class:`TffdVizError` naming ``what`` when they
    are not 1-D or hold NaN/Inf."""
    t = scores if isinstance(scores, Tensor) else torch.as_tensor(np.asarray(scores))
    if t.dim() != 1:
        raise TffdVizError(f"{what} must be 1-D (C,), got shape {tuple(t.shape)}")
    t = t.detach()
    if t.is_floating_point():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise TffdVizError(f"{what} are not finite at channels {bad.nonzero().flatten().tolist()[:10]}")
    return t


def channel_scores(
    criterion: str | Criterion,
    *,
    features: Tensor | None = None,
    model: nn.Module | None = None,
    images: Tensor | None = None,
    labels: Tensor | None = None,
    tap: str | None = None,
) -> Tensor:
    """Return the importance score of every channel of a tap under ``criterion``.

    Parameters
    ----------
    criterion : str or Criterion
        A key of :func:`available_criteria`.
    features : Tensor (N, C, H, W), optional
        The tap's features (feature criteria). When absent, they are extracted from ``model``,
        ``images`` and ``tap`` (eval mode).
    model, images, labels, tap
        Model criteria: ``fn(model, images, labels, tap)``.

    Returns
    -------
    Tensor (C,)
        Detached, on the CPU; higher = more important. Float32 features so large that the criterion
        could overflow (activations near 1e30) are scored in float64 (float64 scores).

    Raises
    ------
    TapError
        Features not ``(N, C, H, W)`` or holding NaN/Inf (naming ``tap`` when given).
    TffdVizError
        Missing inputs for the criterion, unknown criterion, non-finite scores (naming ``tap``).
    """
    crit = get_criterion(criterion)
    if crit.needs == "features":
        if features is None:
            if model is None or images is None or tap is None:
                raise TffdVizError(
                    f"criterion {crit.name!r} needs features=(N, C, H, W), or model, images and "
                    "tap to extract them"
                )
            features = extract_features(model, images, [tap])[tap]
        features = check_feature(features, "features" if tap is None else f"features of tap {tap!r}")
        with torch.no_grad():
            scores = crit.fn(features)
    else:
        if model is None or tap is None:
            raise TffdVizError(f"criterion {crit.name!r} needs model and tap (and images/labels)")
        scores = crit.fn(model, images, labels, tap)
    return checked_scores(scores, f"{crit.name} scores" + ("" if tap is None else f" of tap {tap!r}")).cpu()


def channel_ranking(scores: ArrayLike | Sequence[float]) -> Tensor:
    """Return channel indices by descending score, ties broken by lower index (stable).

    For ``channel_scores("tffd", features=f)`` this equals :func:`tffd_viz.losses.salient_order`.

    Parameters
    ----------
    scores : Tensor (C,)

    Returns
    -------
    LongTensor (C,)
        ``order[0]`` is the most important channel.
    """
    t = checked_scores(scores)
    return torch.sort(t, dim=0, descending=True, stable=True).indices


def rank_positions(scores: ArrayLike | Sequence[float]) -> Tensor:
    """Return the rank of every channel (0 = most important), the inverse of :func:`channel_ranking`.

    Returns
    -------
    LongTensor (C,)
        ``ranks[channel_ranking(scores)[i]] == i``.
    """
    order = channel_ranking(scores)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return ranks


class SalientSplit(NamedTuple):
    """Tf-FD's halves of a stage: ``salient[i]`` is paired with (mimicked by) ``redundant[i]``."""

    salient: Tensor
    redundant: Tensor
    middle: Tensor


def salient_split(scores: ArrayLike | Sequence[float]) -> SalientSplit:
    """Split channels into Tf-FD's salient and redundant halves, paired as intra-Tf-FD pairs them.

    With ``order = channel_ranking(scores)`` and ``k = C // 2``: ``salient = order[:k]``,
    ``redundant = order[C - k:]`` and ``middle = order[k:C - k]`` (the middle channel of an odd
    ``C``, else empty). Intra-layer Tf-FD pulls ``redundant[i]`` towards ``salient[i]``.

    Returns
    -------
    SalientSplit
        ``(salient (k,), redundant (k,), middle (C - 2k,))`` LongTensors.
    """
    order = channel_ranking(scores)
    c = order.numel()
    k = c // 2
    return SalientSplit(order[:k], order[c - k :], order[k : c - k])


# ------------------------------------------------------------------------------------------ per-tap tables
@dataclass
class TapRanking:
    """Scores and Tf-FD split of one tap under one criterion (numpy arrays, for plotting).

    Attributes
    ----------
    tap, criterion : str
    scores : ndarray float64 (C,)
    order : ndarray int64 (C,)
        Channels by descending score.
    ranks : ndarray int64 (C,)
        Rank of each channel (0 = most important).
    salient, redundant, middle : ndarray int64
        As :func:`salient_split`.
    """

    tap: str
    criterion: str
    scores: np.ndarray
    order: np.ndarray
    ranks: np.ndarray
    salient: np.ndarray
    redundant: np.ndarray
    middle: np.ndarray

    @classmethod
    def from_scores(cls, tap: str, criterion: str, scores: Tensor) -> TapRanking:
        split = salient_split(scores)
        return cls(
            tap=tap,
            criterion=criterion,
            scores=checked_scores(scores).double().cpu().numpy(),
            order=channel_ranking(scores).cpu().numpy(),
            ranks=rank_positions(scores).cpu().numpy(),
            salient=split.salient.cpu().numpy(),
            redundant=split.redundant.cpu().numpy(),
            middle=split.middle.cpu().numpy(),
        )

    @property
    def channels(self) -> int:
        return int(self.scores.shape[0])

    def rows(self, model: str = "model") -> list[dict]:
        """One dict per channel: model, tap, criterion, channel, score, rank, half, partner.

        ``half`` is ``"salient"``, ``"redundant"`` or ``"middle"``; ``partner`` is the channel it is
        paired with in intra-layer Tf-FD (-1 for the middle channel).
        """
        half = np.full(self.channels, "middle", dtype=object)
        partner = np.full(self.channels, -1, dtype=np.int64)
        half[self.salient] = "salient"
        half[self.redundant] = "redundant"
        partner[self.salient] = self.redundant
        partner[self.redundant] = self.salient
        return [
            {
                "model": model,
                "tap": self.tap,
                "criterion": self.criterion,
                "channel": c,
                "score": float(self.scores[c]),
                "rank": int(self.ranks[c]),
                "half": str(half[c]),
                "partner": int(partner[c]),
            }
            for c in range(self.channels)
        ]


def tap_rankings(
    source: nn.Module | Mapping[str, Tensor],
    criterion: str | Criterion = "tffd",
    *,
    images: Tensor | None = None,
    labels: Tensor | None = None,
    taps: Sequence[str] | str | None = None,
    batch_size: int = 256,
) -> OrderedDict[str, TapRanking]:
    """Return ``tap -> TapRanking`` for a model or for already extracted features.

    Parameters
    ----------
    source : nn.Module or Mapping[str, Tensor (N, C, H, W)]
        A model (feature criteria extract its taps from ``images``) or ``tap -> features``
        (feature criteria only).
    criterion : str or Criterion
    images, labels : Tensor, optional
        Needed for models (labels only by criteria that need them, e.g. ``taylor``).
    taps : list of str, optional
        Default: the model's default taps, or every key of the features mapping.
    batch_size : int
        Extraction batch size.
    """
    crit = get_criterion(criterion)
    out: OrderedDict[str, TapRanking] = OrderedDict()
    if isinstance(source, nn.Module):
        names = resolve_taps(source, taps)
        if crit.needs == "features":
            if images is None:
                raise TffdVizError(f"criterion {crit.name!r} on a model needs images (N, C, H, W)")
            feats = extract_features(source, images, names, batch_size=batch_size)
            for name in names:
                out[name] = TapRanking.from_scores(
                    name, crit.name, channel_scores(crit, features=feats[name], tap=name)
                )
        else:
            for name in names:
                scores = channel_scores(crit, model=source, images=images, labels=labels, tap=name)
                out[name] = TapRanking.from_scores(name, crit.name, scores)
        return out
    if not isinstance(source, Mapping):
        raise TffdVizError(
            f"source must be a model or a tap -> features mapping, got {type(source).__name__}"
        )
    if crit.needs != "features":
        raise TffdVizError(f"criterion {crit.name!r} needs the model, not extracted features")
    names = list(source) if taps is None else ([taps] if isinstance(taps, str) else list(taps))
    unknown = [n for n in names if n not in source]
    if unknown:
        raise TapError(f"taps {unknown} not among the features' keys {list(source)}")
    for name in names:
        out[name] = TapRanking.from_scores(
            name, crit.name, channel_scores(crit, features=source[name], tap=name)
        )
    return out


def rankings_table(
    sources: nn.Module | Mapping[str, Tensor] | Mapping[str, nn.Module | Mapping[str, Tensor]],
    criterion: str | Criterion = "tffd",
    *,
    images: Tensor | None = None,
    labels: Tensor | None = None,
    taps: Sequence[str] | str | None = None,
    batch_size: int = 256,
) -> list[dict]:
    """Return a long table (one row per model, tap and channel) of scores, ranks and Tf-FD halves.

    Parameters
    ----------
    sources : model, tap -> features mapping, or name -> (model or tap -> features)
        One source (named ``"model"`` in the rows) or several by name. A mapping whose values are
        all tensors is one feature source; a mapping of models/mappings is several sources.
    criterion, images, labels, taps, batch_size
        As in :func:`tap_rankings` (the same images for every model).

    Returns
    -------
    list of dict
        Keys ``model, tap, criterion, channel, score, rank, half, partner`` (see
        :meth:`TapRanking.rows`), models in the given order, then taps, then channels.
    """
    named: dict[str, nn.Module | Mapping[str, Tensor]]
    if isinstance(sources, nn.Module) or (
        isinstance(sources, Mapping) and sources and all(isinstance(v, Tensor) for v in sources.values())
    ):
        named = {"model": cast("nn.Module | Mapping[str, Tensor]", sources)}  # one source: checked just above
    elif isinstance(sources, Mapping) and sources:
        named = dict(cast("Mapping[str, nn.Module | Mapping[str, Tensor]]", sources))  # several, by name
    else:
        raise TffdVizError(
            f"sources must be a model, a tap -> features mapping or a non-empty name -> source "
            f"mapping, got {type(sources).__name__}"
        )
    rows: list[dict] = []
    for model_name, source in named.items():
        table = tap_rankings(
            source, criterion, images=images, labels=labels, taps=taps, batch_size=batch_size
        )
        for ranking in table.values():
            rows += ranking.rows(model=str(model_name))
    return rows
