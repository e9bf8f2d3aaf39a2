"""Tf-FD terms on held-out data, with their batch-to-batch spread and their scale-free versions.

The training-time terms of a card's history come from train-mode BatchNorm on augmented training batches;
what the method did to a model shows on images it never trained on. :func:`heldout_terms` runs a model in
eval mode over a whole split in batches (each batch ranks its own channels, exactly as the loss does during
training), and returns the mean and the standard deviation over batches of every term.

An MSE between channels falls when the maps shrink as a whole, whether or not the channels come to resemble
each other (BatchNorm and weight decay make shrinking cheap). So every term also comes divided by the
activation energy of the maps it compares (:func:`scale_free_terms`, the one definition used everywhere):

* ``intra_rel[s] = intra[s] / mean(F_s ** 2)`` (the mean square of stage ``s``'s map);
* ``inter_rel[i->j] = inter[i->j] / mean(pool(F_j)[:, :m] ** 2)`` (the mean square of the deep side as the
  term reads it: at the pair's common size, first ``m = min(C_i, C_j)`` channels);
* ``energy[s] = mean(F_s ** 2)`` itself, per stage.

A relative term of 1 means the two sides differ as much as a map differs from zero; a drop of the raw term
with an unchanged relative term is a drop of scale, not mimicry.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tffd_viz.data import ImageDataset
from tffd_viz.errors import CheckpointError, TffdVizError
from tffd_viz.features import batch_slices, eval_mode, model_device
from tffd_viz.fused_losses import first_channels, pooled_to
from tffd_viz.losses import tffd_terms
from tffd_viz.models import default_taps, extract_taps
from tffd_viz.types import StageKey

__all__ = [
    "HELDOUT_KEYS",
    "card_normalised_split",
    "heldout_terms",
    "scale_free_terms",
    "stage_energy",
    "write_heldout_terms",
]

#: Keys of a card's ``heldout_terms`` entry.
HELDOUT_KEYS: tuple[str, ...] = (
    "split",
    "n",
    "batch_size",
    "batches",
    "intra",
    "inter",
    "intra_std",
    "inter_std",
    "intra_rel",
    "inter_rel",
    "intra_rel_std",
    "inter_rel_std",
    "energy",
    "energy_std",
    "accuracy",
)


def stage_energy(f: Tensor) -> Tensor:
    """Mean square of a stage map, ``mean(f ** 2)`` over every element, in float32 or wider.

    Parameters
    ----------
    f : Tensor (N, C, H, W)

    Returns
    -------
    Tensor, shape ()
    """
    f = f.float() if f.dtype in (torch.float16, torch.bfloat16) else f
    return f.square().mean()


def _deep_side(shallow: Tensor, deep: Tensor) -> Tensor:
    """The deep map as the inter term reads it: pooled to the pair's common size, first ``min(C_s, C_d)``
    channels (the geometry of :func:`tffd_viz.losses.inter_fd`, through its own pooling helpers)."""
    size = (min(shallow.shape[2], deep.shape[2]), min(shallow.shape[3], deep.shape[3]))
    return first_channels(pooled_to(deep, size), min(shallow.shape[1], deep.shape[1]))


def scale_free_terms(
    features: Mapping[str, Tensor],
    stages: Sequence[StageKey] | None = None,
    pairs: Sequence[tuple[StageKey, StageKey]] | None = None,
) -> dict[str, dict[str, float]]:
    """The Tf-FD terms of one batch, raw and divided by the energy of the maps they compare.

    Parameters
    ----------
    features : dict[str, Tensor]
        Stage maps, shallow to deep, each (N, C_i, H_i, W_i).
    stages, pairs : optional
        As :func:`tffd_viz.losses.tffd_terms` (default: every stage, every pair ``i < j``).

    Returns
    -------
    dict
        ``intra`` (stage -> float), ``inter`` (``"a->b"`` -> float), ``intra_rel``, ``inter_rel`` (same keys,
        the term over the mean square of the compared maps; NaN where that energy is 0) and ``energy``
        (every stage -> mean square of its map).
    """
    with torch.no_grad():
        intra, inter = tffd_terms(features, stages=stages, pairs=pairs)
        energy = {k: float(stage_energy(f)) for k, f in features.items()}
        inter_energy = {}
        for name in inter:
            a, b = name.split("->")
            inter_energy[name] = float(stage_energy(_deep_side(features[a], features[b])))

    def ratio(v: float, e: float) -> float:
        return v / e if e > 0 else float("nan")

    intra_f = {k: float(v) for k, v in intra.items()}
    inter_f = {k: float(v) for k, v in inter.items()}
    return {
        "intra": intra_f,
        "inter": inter_f,
        "intra_rel": {k: ratio(v, energy[k]) for k, v in intra_f.items()},
        "inter_rel": {k: ratio(v, inter_energy[k]) for k, v in inter_f.items()},
        "energy": energy,
    }


def _mean_std(values: list[float], weights: list[int]) -> tuple[float | None, float | None]:
    """Size-weighted mean and the (unweighted, ddof=1) standard deviation over batches; None where
    undefined."""
    finite = [(v, w) for v, w in zip(values, weights, strict=True) if math.isfinite(v)]
    if not finite:
        return None, None
    total = sum(w for _, w in finite)
    mean = sum(v * w for v, w in finite) / total
    if len(finite) < 2:
        return mean, None
    plain = sum(v for v, _ in finite) / len(finite)
    return mean, math.sqrt(sum((v - plain) ** 2 for v, _ in finite) / (len(finite) - 1))


def heldout_terms(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    split: str = "test",
    batch_size: int = 500,
    min_batches: int = 4,
    taps: Sequence[str] | None = None,
    digits: int = 5,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Tf-FD terms of ``model`` over a whole held-out split, in eval mode, with their spread over batches.

    Parameters
    ----------
    model : nn.Module
        Maps normalised images (N, C, H, W) to logits; its mode is restored afterwards.
    dataset : ImageDataset
        The split, e.g. ``load_dataset(...).test``.
    split : str
        Its name, recorded in the result.
    batch_size : int
        Images per batch (500, the training-time loss is per batch); lowered to ``ceil(n / min_batches)``
        for small splits so that a spread can be measured (the digits test split: 4 batches of 90).
    min_batches : int
    taps : list of str, optional
        Stage taps (default: the model's default taps). Every stage takes the intra term, every pair ``i < j``
        the inter term.
    digits : int
        Significant digits kept.
    device : optional
        Default: the model's device.

    Returns
    -------
    dict
        The keys of :data:`HELDOUT_KEYS`: ``split``, ``n``, ``batch_size``, ``batches``; ``intra``, ``inter``,
        ``intra_rel``, ``inter_rel``, ``energy`` (means over batches, weighted by batch size) and the same
        with ``_std`` (standard deviation over batches, ddof 1; None with one batch); ``accuracy`` (percent).

    Raises
    ------
    TffdVizError
        For an empty split or a batch size below 2.
    """
    n = len(dataset)
    if n < 2 or batch_size < 2:
        raise TffdVizError(
            f"heldout_terms needs a split of at least 2 images and batch_size >= 2, got "
            f"{n} images ({split}) and batch_size {batch_size}"
        )
    size = max(2, min(batch_size, math.ceil(n / max(1, min_batches))))
    slices = batch_slices(n, size)
    if (
        len(slices) > 1 and slices[-1].stop - slices[-1].start < 2
    ):  # a 1-image batch has no channel statistics
        slices = [*slices[:-2], slice(slices[-2].start, n)]
    device = torch.device(device) if device is not None else model_device(model)
    names = list(taps) if taps is not None else list(default_taps(model))
    per_batch: list[dict[str, dict[str, float]]] = []
    weights: list[int] = []
    correct = 0
    with eval_mode(model), torch.no_grad():
        for sl in slices:
            x = dataset.normalized(sl).to(device)
            logits, feats = extract_taps(model, x, names, return_logits=True)
            correct += int((logits.argmax(1).cpu() == dataset.labels[sl]).sum())
            per_batch.append(scale_free_terms({k: feats[k] for k in names}))
            weights.append(sl.stop - sl.start)

    def rounded(v: float | None) -> float | None:
        return None if v is None else float(f"{v:.{digits}g}")

    out: dict[str, Any] = {"split": split, "n": n, "batch_size": size, "batches": len(slices)}
    for family in ("intra", "inter", "intra_rel", "inter_rel", "energy"):
        means, stds = {}, {}
        for key in per_batch[0][family]:
            mean, std = _mean_std([b[family][key] for b in per_batch], weights)
            means[key], stds[key] = rounded(mean), rounded(std)
        out[family], out[f"{family}_std"] = means, stds
    out["accuracy"] = rounded(100.0 * correct / n)
    return {k: out[k] for k in HELDOUT_KEYS}


def card_normalised_split(dataset: ImageDataset, card: Mapping[str, Any]) -> ImageDataset:
    """``dataset`` normalised with the card's ``mean``/``std`` when it names them (else as it is).

    A model trained elsewhere may expect other input statistics than the dataset's own (an akamaster ResNet
    ImageNet's); the images are shared, only the normalisation differs.
    """
    mean, std = card.get("mean"), card.get("std")
    if not mean or not std or (list(mean) == list(dataset.mean) and list(std) == list(dataset.std)):
        return dataset
    return ImageDataset(dataset.images, dataset.labels, mean, std)


def write_heldout_terms(
    path: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None, batch_size: int = 500
) -> dict[str, Any]:
    """Recompute a checkpoint's ``heldout_terms`` on its dataset's test split and rewrite its card.

    Both the ``.json`` beside the file and the card inside the ``.safetensors`` metadata (which the loader
    reads first) are rewritten; the weights are written back unchanged.

    Parameters
    ----------
    path : path
        A tffd-viz ``.safetensors`` checkpoint with a card naming its ``dataset``.
    data_root : path, optional
        Where CIFAR / image folders are (:func:`tffd_viz.data.load_dataset`).
    batch_size : int

    Returns
    -------
    dict
        The ``heldout_terms`` entry written.

    Raises
    ------
    CheckpointError
        For a file that is not a tffd-viz safetensors checkpoint or whose card names no dataset.
    """
    from tffd_viz.checkpoints import load_checkpoint, save_checkpoint
    from tffd_viz.data import card_image_size, load_dataset

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{str(path)!r}: heldout terms are written into tffd-viz .safetensors checkpoints"
        )
    model, card = load_checkpoint(path)
    if not card.get("dataset"):
        raise CheckpointError(f"the card of {str(path)!r} names no dataset; cannot pick the held-out split")
    image_size = card_image_size(
        card, card["dataset"]
    )  # 224: the lazily decoded image folder (ImageNet's mean/std)
    split = load_dataset(card["dataset"], data_root, image_size=image_size).test
    test = split if image_size else card_normalised_split(split, card)
    terms = heldout_terms(model, test, batch_size=batch_size, taps=card.get("taps") or None)
    card["heldout_terms"] = terms
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(model, card, path)
    after, _ = load_checkpoint(path)
    if any(not torch.equal(weights_before[k], v) for k, v in after.state_dict().items()):
        raise CheckpointError(
            f"rewriting {str(path)!r} changed its weights"
        )  # pragma: no cover - a safety net
    return terms
