"""Measures of one model on a whole held-out split: held-out terms, channel cosines, seed siblings.

Part of :mod:`tffd_viz.verdicts`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tffd_viz.data import ImageDataset
from tffd_viz.errors import TffdVizError
from tffd_viz.features import eval_mode, model_device
from tffd_viz.heldout import heldout_terms
from tffd_viz.losses import salient_order
from tffd_viz.models import default_taps, extract_taps
from tffd_viz.similarity import (
    channel_cosine_matrix,
    inter_layer_alignment,
    paired_channel_cosine,
)


def heldout_slices(n: int, batch_size: int = 500, min_batches: int = 4) -> list[slice]:
    """The batches :func:`tffd_viz.heldout.heldout_terms` uses for a split of ``n`` images.

    ``batch_size`` lowered to ``ceil(n / min_batches)`` (at least 2); a last batch of one image joins the one
    before. The digits test split (360 images): 4 batches of 90; CIFAR (10,000): 20 batches of 500.
    """
    if n < 2 or batch_size < 2:
        raise TffdVizError(
            f"heldout_slices needs n >= 2 and batch_size >= 2, got n={n}, batch_size={batch_size}"
        )
    size = max(2, min(batch_size, math.ceil(n / max(1, min_batches))))
    slices = [slice(s, min(s + size, n)) for s in range(0, n, size)]
    if len(slices) > 1 and slices[-1].stop - slices[-1].start < 2:
        slices = [*slices[:-2], slice(slices[-2].start, n)]
    return slices


def random_pair_cosine(cosine: torch.Tensor) -> float:
    """Mean cosine over every pair of distinct channels: the expected cosine of a random channel pair.

    Parameters
    ----------
    cosine : Tensor (C, C)
        :func:`tffd_viz.similarity.channel_cosine_matrix` of one layer (C >= 2).
    """
    c = cosine.shape[0]
    if cosine.dim() != 2 or c != cosine.shape[1] or c < 2:
        raise TffdVizError(
            f"random_pair_cosine needs a square (C, C) cosine matrix with C >= 2, got {tuple(cosine.shape)}"
        )
    cosine = cosine.double()
    return float((cosine.sum() - cosine.diagonal().sum()) / (c * (c - 1)))


def _weighted_mean_std(values: list[float], weights: list[int]) -> tuple[float, float | None]:
    total = sum(weights)
    mean = sum(v * w for v, w in zip(values, weights, strict=True)) / total
    return mean, (statistics.stdev(values) if len(values) >= 2 else None)


def channel_cosine_stats(
    model: nn.Module,
    dataset: ImageDataset,
    taps: Sequence[str] | None = None,
    *,
    batch_size: int = 500,
    min_batches: int = 4,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Channel cosines of a model over a whole split, batch by batch as :func:`heldout_terms` batches it.

    Per batch and stage (channels flattened over images and positions; each batch ranks its own channels,
    as the loss does): ``paired`` = the mean cosine between each salient channel and its redundant partner
    (:func:`tffd_viz.similarity.paired_channel_cosine`), ``random`` = :func:`random_pair_cosine` (the mean
    over every pair of distinct channels), ``excess = paired - random``; per pair of stages ``alignment`` =
    the mean :func:`tffd_viz.similarity.inter_layer_alignment`.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode (restored afterwards).
    dataset : ImageDataset
        The split, e.g. ``load_dataset(...).test``.
    taps : list of str, optional
        Stages (default: the model's default taps).
    batch_size, min_batches : int
        As :func:`heldout_slices`.
    device : optional
        Default: the model's device.

    Returns
    -------
    dict
        ``n``, ``batches``; ``paired``, ``random``, ``excess`` (stage -> mean over batches, weighted by batch
        size), ``alignment`` (``"a->b"`` -> mean), and the same with ``_std`` (std over batches, ddof 1, None
        with one batch).
    """
    n = len(dataset)
    slices = heldout_slices(n, batch_size, min_batches)
    names = list(taps) if taps is not None else list(default_taps(model))
    device = torch.device(device) if device is not None else model_device(model)
    per: dict[str, dict[str, list[float]]] = {k: {} for k in ("paired", "random", "excess", "alignment")}
    weights = []
    with eval_mode(model), torch.no_grad():
        for sl in slices:
            feats = extract_taps(model, dataset.normalized(sl).to(device), names)
            for name in names:
                f = feats[name].float()
                paired = float(paired_channel_cosine(f, salient_order(f)).double().mean())
                rand = random_pair_cosine(channel_cosine_matrix(f))
                for key, v in (("paired", paired), ("random", rand), ("excess", paired - rand)):
                    per[key].setdefault(name, []).append(v)
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    value = float(inter_layer_alignment(feats[a].float(), feats[b].float()).double().mean())
                    per["alignment"].setdefault(f"{a}->{b}", []).append(value)
            weights.append(sl.stop - sl.start)
    out: dict[str, Any] = {"n": n, "batches": len(slices)}
    for family, items in per.items():
        stats = {k: _weighted_mean_std(v, weights) for k, v in items.items()}
        out[family] = {k: m for k, (m, _) in stats.items()}
        out[f"{family}_std"] = {k: s for k, (_, s) in stats.items()}
    return out


def _card_heldout(card: Mapping[str, Any] | None, split: str, n: int) -> dict[str, Any] | None:
    entry = (card or {}).get("heldout_terms")
    if (
        isinstance(entry, Mapping)
        and entry.get("split") == split
        and entry.get("n") == n
        and entry.get("intra")
    ):
        return dict(entry)
    return None


def model_measures(
    model: nn.Module,
    dataset: ImageDataset,
    card: Mapping[str, Any] | None = None,
    *,
    split: str = "test",
    batch_size: int = 500,
    min_batches: int = 4,
    subset: ImageDataset | None = None,
) -> dict[str, Any]:
    """Everything :func:`what_changed` compares, measured on one model over a whole held-out split.

    Parameters
    ----------
    model : nn.Module
    dataset : ImageDataset
        The split (``split`` names it).
    card : dict, optional
        The model's card: its ``heldout_terms`` entry is used when it describes this split (same name and
        size), else the terms are computed here with :func:`tffd_viz.heldout.heldout_terms`.
    subset : ImageDataset, optional
        Where what is computed here runs (e.g. the split's first 2,000 images, to keep a page fast); default
        ``dataset``. A card's entry for the whole split is still used.

    Returns
    -------
    dict
        ``{"heldout": heldout_terms entry, "cosine": channel_cosine_stats,
        "heldout_from": "card" | "computed"}``.
    """
    held = _card_heldout(card, split, len(dataset))
    source = "card"
    run_on = dataset if subset is None else subset
    if held is None:
        held = heldout_terms(model, run_on, split=split, batch_size=batch_size, min_batches=min_batches)
        source = "computed"
    cosine = channel_cosine_stats(
        model, run_on, list(held["intra"]), batch_size=batch_size, min_batches=min_batches
    )
    return {"heldout": held, "cosine": cosine, "heldout_from": source}


def seed_siblings(card: Mapping[str, Any], shipped: Iterable[Sequence[Any]]) -> list[Path]:
    """Paths of every shipped checkpoint of ``card``'s configuration (all seeds, itself included), by seed.

    Parameters
    ----------
    card : dict
        A model card (configuration: :func:`tffd_viz.summary.config_name`, everything but the seed).
    shipped : iterable of (path, card, ...)
        As :func:`tffd_viz.checkpoints.list_checkpoints` returns them.
    """
    from tffd_viz.summary import config_name

    name = config_name(card)
    found = [
        (int(c.get("seed") or 0), Path(p))
        for p, c, *_ in shipped
        if c.get("seed") is not None and config_name(c) == name
    ]
    return [p for _, p in sorted(found)]
