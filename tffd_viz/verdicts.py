"""A-vs-B statements that hold: every difference next to a noise reference, a conclusion only beyond it.

Two models differ in every number one measures on them; most of those differences are what another seed,
or another batch of images, would give as well. This module measures a model on a whole held-out split
(:func:`model_measures`: the held-out Tf-FD terms of :mod:`tffd_viz.heldout`, raw and scale-free, the activation
energy per stage, and channel cosines with their reference), and writes the "A vs B: what changed" table
(:func:`what_changed`): per quantity the two values, their difference, the size of the noise and a verdict.

Noise references (each the size a difference must exceed, :data:`NOISE_SIGMAS` standard deviations of the
difference of two single measurements):

* **seeds** where the shipped checkpoints hold several seeds of a configuration (digits s0-s2):
  ``2 * sqrt(var_A + var_B)``, each variance over the seeds of one configuration (ddof 1; a configuration
  with a single seed borrows the other's variance);
* else **batches**: ``2 * sqrt(s_A ** 2 + s_B ** 2)`` with ``s`` the batch-to-batch standard deviation of the
  quantity over the split's batches (what one training batch sees, the loss being per batch);
* the accuracy without seeds: the test split's sampling noise, ``s = 100 * sqrt(p (1 - p) / n)`` per model.

The CKA of a layer of A with the same layer of B is read as a dissimilarity ``1 - CKA`` against the largest
dissimilarity between two seeds of one configuration (:func:`cka_rows`).

A raw Tf-FD term can fall because the maps shrink as a whole (BatchNorm and weight decay make that cheap);
:func:`term_verdict` says so whenever the term divided by the energy of the maps it compares
(:func:`tffd_viz.heldout.scale_free_terms`, the one definition) is unchanged within noise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tffd_viz.data import ImageDataset
from tffd_viz.errors import TffdVizError
from tffd_viz.features import eval_mode, model_device
from tffd_viz.heldout import heldout_terms
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA, salient_order
from tffd_viz.models import default_taps, extract_taps
from tffd_viz.similarity import (
    channel_cosine_matrix,
    inter_layer_alignment,
    layer_cka_matrices,
    paired_channel_cosine,
)

__all__ = [
    "NOISE_SIGMAS",
    "QUANTITIES",
    "WHAT_CHANGED_COLUMNS",
    "Noise",
    "batch_noise",
    "channel_cosine_stats",
    "cka_diagonal",
    "cka_rows",
    "difference_verdict",
    "effect_summary",
    "heldout_slices",
    "lambda_text",
    "model_measures",
    "noise_table",
    "pair_comparison",
    "pair_comparison_on",
    "random_pair_cosine",
    "sampling_noise",
    "seed_cka",
    "seed_mean_measures",
    "seed_noise",
    "seed_siblings",
    "term_verdict",
    "what_changed",
    "what_changed_text",
]

NOISE_SIGMAS: float = 2.0
"""A difference is written up only when it exceeds this many standard deviations of the noise."""

WHAT_CHANGED_COLUMNS: tuple[str, ...] = (
    "quantity",
    "item",
    "A",
    "B",
    "B − A",
    "noise ±",
    "noise source",
    "verdict",
)
"""Columns of :func:`what_changed` rows."""

QUANTITIES: dict[str, tuple[str, str, str]] = {
    "accuracy": ("held-out top-1 (%)", "heldout", "accuracy"),
    "energy": ("activation energy mean(F²)", "heldout", "energy"),
    "intra": ("intra term (raw)", "heldout", "intra"),
    "intra_rel": ("intra term / energy", "heldout", "intra_rel"),
    "inter": ("inter term (raw)", "heldout", "inter"),
    "inter_rel": ("inter term / energy", "heldout", "inter_rel"),
    "paired": ("paired cosine (salient vs redundant)", "cosine", "paired"),
    "random": ("random-pair cosine (same layer)", "cosine", "random"),
    "excess": ("paired − random-pair cosine", "cosine", "excess"),
    "alignment": ("inter-layer alignment (cosine)", "cosine", "alignment"),
}
"""Row key -> (label, part of :func:`model_measures`, field), in table order."""


# --------------------------------------------------------------------------------------------------
# noise references and verdicts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Noise:
    """The size a difference must exceed to be written up, where it comes from, and how it was formed.

    Attributes
    ----------
    size : float or None
        ``NOISE_SIGMAS`` standard deviations of the difference; None where no reference exists.
    source : str
        ``"seeds"``, ``"batches"``, ``"test-split sampling"`` or ``"none"``.
    detail : str
        One line on how ``size`` was formed (for tables and hovers).
    """

    size: float | None
    source: str
    detail: str


NO_NOISE = Noise(None, "none", "no seeds and no batch spread to compare with")


def _var(values: Sequence[float]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.variance(finite) if len(finite) >= 2 else None


def seed_noise(values_a: Sequence[float], values_b: Sequence[float], of_means: bool = False) -> Noise:
    """Noise of a difference between one run of A's and one run of B's configuration, from the seeds.

    ``size = NOISE_SIGMAS * sqrt(var_A + var_B)``, each variance over the seeds of one configuration (ddof 1);
    a configuration with fewer than two seeds takes the other's variance. With ``of_means`` the difference is
    one of the means over the seeds: ``NOISE_SIGMAS * sqrt(var_A / n_A + var_B / n_B)`` (source ``"seed-mean"``).

    Parameters
    ----------
    values_a, values_b : sequence of float
        The quantity measured on every shipped seed of A's and of B's configuration.
    of_means : bool

    Returns
    -------
    Noise
        ``NO_NOISE`` when neither configuration has two seeds.
    """
    va, vb = _var(values_a), _var(values_b)
    if va is None and vb is None:
        return NO_NOISE
    va = vb if va is None else va
    vb = va if vb is None else vb
    if of_means:
        na, nb = max(1, len(values_a)), max(1, len(values_b))
        return Noise(
            NOISE_SIGMAS * math.sqrt(va / na + vb / nb),
            "seed-mean",
            f"{NOISE_SIGMAS:g}·√(var_A/{na} + var_B/{nb}) over the seeds",
        )
    size = NOISE_SIGMAS * math.sqrt(va + vb)
    return Noise(
        size, "seeds", f"{NOISE_SIGMAS:g}·√(var_A + var_B) over {len(values_a)} + {len(values_b)} seeds"
    )


def batch_noise(std_a: float | None, std_b: float | None, batches: int | None = None) -> Noise:
    """Noise of a difference from the batch-to-batch standard deviations of the two models.

    ``size = NOISE_SIGMAS * sqrt(std_a ** 2 + std_b ** 2)``; a missing side takes the other's.
    """
    sa = None if std_a is None or not math.isfinite(std_a) else float(std_a)
    sb = None if std_b is None or not math.isfinite(std_b) else float(std_b)
    if sa is None and sb is None:
        return NO_NOISE
    sa = sb if sa is None else sa
    sb = sa if sb is None else sb
    over = f" over {batches} batches" if batches else ""
    return Noise(
        NOISE_SIGMAS * math.hypot(sa, sb), "batches", f"{NOISE_SIGMAS:g}·√(s_A² + s_B²), s the std{over}"
    )


def sampling_noise(acc_a: float, acc_b: float, n: int) -> Noise:
    """Noise of an accuracy difference (percent) from sampling ``n`` test images: binomial, per model."""
    if n < 1:
        raise TffdVizError(f"sampling_noise needs n >= 1 test images, got {n}")
    sa, sb = (100.0 * math.sqrt(p / 100 * (1 - p / 100) / n) for p in (acc_a, acc_b))
    return Noise(
        NOISE_SIGMAS * math.hypot(sa, sb),
        "test-split sampling",
        f"{NOISE_SIGMAS:g}·√(s_A² + s_B²), s = 100·√(p(1−p)/{n})",
    )


def _pct(a: float, b: float) -> str:
    return f"{100 * abs(b - a) / abs(a):.0f} %" if a else f"{abs(b - a):.3g}"


def difference_verdict(a: float | None, b: float | None, noise: Noise) -> str:
    """The verdict on ``b - a``: a conclusion beyond ``noise.size``, else "within <source> noise".

    Returns
    -------
    str
        ``"no difference"`` for equal values, ``"no noise reference"`` without a reference,
        ``"within seeds noise (...)"`` at or under it, else ``"B higher by 12 % (3.1× the seeds noise)"``.
    """
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return "not measured on both"
    d = b - a
    if d == 0:
        return "no difference"
    if noise.size is None:
        return "no noise reference"
    if abs(d) <= noise.size:
        return f"within {noise.source} noise (|Δ| {abs(d):.3g} ≤ {noise.size:.3g})"
    times = f"{abs(d) / noise.size:.1f}×" if noise.size > 0 else "any"
    return f"B {'higher' if d > 0 else 'lower'} by {_pct(a, b)} ({times} the {noise.source} noise)"


def _beyond(a: float | None, b: float | None, noise: Noise) -> bool:
    return (
        a is not None
        and b is not None
        and noise.size is not None
        and math.isfinite(a)
        and math.isfinite(b)
        and abs(b - a) > noise.size
    )


def term_verdict(
    raw: tuple[float, float, Noise], rel: tuple[float, float, Noise], energy_ratio: float | None
) -> str:
    """The verdict on a raw Tf-FD term that says whether its change is a change of scale.

    Parameters
    ----------
    raw : (a, b, Noise)
        The raw term of A and B and its noise.
    rel : (a, b, Noise)
        The term divided by the energy of the maps it compares, and its noise.
    energy_ratio : float or None
        Energy of B's compared maps over A's (``raw / rel`` of B over that of A).

    Returns
    -------
    str
        Beyond noise with the relative term within noise: "... a drop of activation energy (×0.1), not closer
        mimicry"; both beyond in the same direction: "... the compared maps also grew more alike relative to
        their size"; raw within noise: the :func:`difference_verdict` (plus the relative term's change when
        that one is beyond noise).
    """
    (ra, rb, rn), (la, lb, ln) = raw, rel
    energy = (
        f" (energy B/A ×{energy_ratio:.2g})"
        if energy_ratio is not None and math.isfinite(energy_ratio)
        else ""
    )
    if not _beyond(ra, rb, rn):
        text = difference_verdict(ra, rb, rn)
        if _beyond(la, lb, ln):
            text += f"; scale-free term {'higher' if lb > la else 'lower'} beyond noise ({la:.3g} → {lb:.3g})"
        return text
    head = difference_verdict(ra, rb, rn)
    word = "drop" if rb < ra else "rise"
    if not _beyond(la, lb, ln):
        return (
            f"{head}, but the term / energy is unchanged within {ln.source} noise ({la:.3g} → {lb:.3g}): "
            f"a {word} of activation energy{energy}, not {'closer' if rb < ra else 'looser'} mimicry"
        )
    if (lb < la) == (rb < ra):
        closer = "more" if lb < la else "less"
        return (
            f"{head}, and the term / energy too ({la:.3g} → {lb:.3g}): the compared maps became {closer} "
            f"alike relative to their size{energy}"
        )
    return (
        f"{head}, but the term / energy moved the other way ({la:.3g} → {lb:.3g}): a change of scale{energy} "
        "that hides the opposite change of likeness"
    )


def lambda_text(card: Mapping[str, Any]) -> str:
    """A model's lambdas with their ratio to the paper's, e.g. ``"λ_intra 0.1 (125× the paper's 0.0008),
    λ_inter 0.1 (200× the paper's 0.0005)"``; ``"no Tf-FD term (baseline)"`` for a model not trained on them."""
    if card.get("method") == "baseline":
        return "no Tf-FD term (baseline)"
    parts = []
    for key, name, paper in (
        ("lambda_intra", "λ_intra", PAPER_LAMBDA_INTRA),
        ("lambda_inter", "λ_inter", PAPER_LAMBDA_INTER),
    ):
        v = card.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(f"{name} {v:g} ({v / paper:.3g}× the paper's {paper:g})")
        else:
            parts.append(f"{name} unknown")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# measures of one model on a held-out split
# --------------------------------------------------------------------------------------------------


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
    (:func:`tffd_viz.similarity.paired_channel_cosine`), ``random`` = :func:`random_pair_cosine` (the mean over
    every pair of distinct channels), ``excess = paired - random``; per pair of stages ``alignment`` = the mean
    :func:`tffd_viz.similarity.inter_layer_alignment`.

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
        ``{"heldout": heldout_terms entry, "cosine": channel_cosine_stats, "heldout_from": "card" | "computed"}``.
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


# --------------------------------------------------------------------------------------------------
# CKA against the seed-to-seed CKA
# --------------------------------------------------------------------------------------------------


def cka_diagonal(
    model_a: nn.Module,
    model_b: nn.Module,
    images: torch.Tensor,
    taps_a: Sequence[str] | None = None,
    taps_b: Sequence[str] | None = None,
    **cka: Any,
) -> dict[str, float]:
    """CKA of each layer of A with the same-position layer of B (the diagonal of ``layer_cka_matrices``).

    ``cka`` is passed on to :func:`tffd_viz.similarity.layer_cka_matrices` (kind, estimator, batch_size, ...).

    Returns
    -------
    dict
        Layer name (``"a / b"`` where the names differ) -> CKA.
    """
    matrix, ta, tb = layer_cka_matrices(model_a, model_b, images, taps_a, taps_b, **cka)["AvB"]
    return {(a if a == b else f"{a} / {b}"): float(matrix[i, i]) for i, (a, b) in enumerate(zip(ta, tb))}


def seed_cka(
    models: Sequence[nn.Module], images: torch.Tensor, taps: Sequence[str] | None = None, **cka: Any
) -> dict[str, list[float]]:
    """Seed-to-seed CKA: :func:`cka_diagonal` between every two of ``models`` (the seeds of one configuration).

    Returns
    -------
    dict
        Layer -> one CKA per pair ``i < j`` (empty lists with fewer than two models).
    """
    out: dict[str, list[float]] = {}
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            for layer, value in cka_diagonal(a, b, images, taps, taps, **cka).items():
                out.setdefault(layer, []).append(value)
    return out


def cka_rows(cka_ab: Mapping[str, float], seed_values: Mapping[str, Sequence[float]]) -> list[dict[str, Any]]:
    """What-changed rows for the A-vs-B CKA of each layer, read as a dissimilarity ``1 - CKA``.

    The noise is the largest seed-to-seed dissimilarity of the layer, ``1 - min(seed CKA)``: two seeds of one
    configuration differ that much without any change of method. B's layer departs from A's beyond seed noise
    only when ``1 - CKA(A, B)`` exceeds it.

    Parameters
    ----------
    cka_ab : dict
        Layer -> CKA(A, B).
    seed_values : dict
        Layer -> seed-to-seed CKAs (both configurations' pairs together); a layer without any has no reference.
    """
    rows = []
    for layer, value in cka_ab.items():
        seeds = [float(v) for v in seed_values.get(layer, ())]
        d = 1.0 - float(value)
        if seeds:
            noise = Noise(
                1.0 - min(seeds),
                "seeds",
                f"1 − min seed-to-seed CKA over {len(seeds)} pairs ({min(seeds):.3f}–{max(seeds):.3f})",
            )
            verdict = (
                f"B's layer departs from A's more than two seeds do (1 − CKA {d:.3g} > {noise.size:.3g})"
                if d > noise.size
                else f"within seeds noise: two seeds differ as much (CKA {value:.3f}; seed-to-seed "
                f"{min(seeds):.3f}–{max(seeds):.3f})"
            )
        else:
            noise = Noise(None, "none", "no second seed shipped")
            verdict = "no seed reference: cannot tell a change of method from a change of seed"
        rows.append(
            {
                "quantity": "1 − linear CKA(A, B), same layer",
                "item": layer,
                "A": None,
                "B": None,
                "B − A": d,
                "noise ±": noise.size,
                "noise source": noise.source,
                "verdict": verdict,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------
# the what-changed table
# --------------------------------------------------------------------------------------------------


def _value(measures: Mapping[str, Any], part: str, fieldname: str, item: str) -> float | None:
    entry = measures[part].get(fieldname)
    v = entry if item == "" else (entry or {}).get(item)
    return None if v is None else float(v)


def _std(measures: Mapping[str, Any], part: str, fieldname: str, item: str) -> float | None:
    v = (measures[part].get(f"{fieldname}_std") or {}).get(item)
    return None if v is None else float(v)


def _noise(
    key: str,
    item: str,
    a: Mapping,
    b: Mapping,
    seeds_a: Sequence[Mapping],
    seeds_b: Sequence[Mapping],
    of_means: bool = False,
) -> Noise:
    _, part, fieldname = QUANTITIES[key]
    sa = [v for m in seeds_a if (v := _value(m, part, fieldname, item)) is not None]
    sb = [v for m in seeds_b if (v := _value(m, part, fieldname, item)) is not None]
    if len(sa) >= 2 or len(sb) >= 2:
        return seed_noise(sa, sb, of_means)
    if key == "accuracy":
        va, vb = _value(a, part, fieldname, ""), _value(b, part, fieldname, "")
        n = int(a["heldout"].get("n") or 0)
        return sampling_noise(va, vb, n) if va is not None and vb is not None and n else NO_NOISE
    return batch_noise(_std(a, part, fieldname, item), _std(b, part, fieldname, item), a[part].get("batches"))


def _row(
    key: str, item: str, va: float | None, vb: float | None, noise: Noise, verdict: str
) -> dict[str, Any]:
    return {
        "quantity": QUANTITIES[key][0],
        "item": item,
        "A": va,
        "B": vb,
        "B − A": None if va is None or vb is None else vb - va,
        "noise ±": noise.size,
        "noise source": noise.source,
        "verdict": verdict,
    }


def what_changed(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    seeds_a: Sequence[Mapping[str, Any]] = (),
    seeds_b: Sequence[Mapping[str, Any]] = (),
    cka_ab: Mapping[str, float] | None = None,
    cka_seeds: Mapping[str, Sequence[float]] | None = None,
    of_means: bool = False,
) -> list[dict[str, Any]]:
    """The "A vs B: what changed" table: per quantity, both values, the difference, its noise and a verdict.

    Parameters
    ----------
    a, b : dict
        :func:`model_measures` of A and of B.
    seeds_a, seeds_b : list of dict
        :func:`model_measures` of every shipped seed of A's and of B's configuration (A and B included).
        Where either holds two or more, the noise is the seed noise (:func:`seed_noise`), else the batch noise
        (:func:`batch_noise`, the accuracy: :func:`sampling_noise`).
    cka_ab, cka_seeds : dict, optional
        :func:`cka_diagonal` of A vs B and the seed-to-seed CKAs (:func:`seed_cka`) for :func:`cka_rows`.
    of_means : bool
        ``a`` and ``b`` are the means over ``seeds_a`` / ``seeds_b`` (:func:`seed_mean_measures`): the seed noise
        is that of a difference of means (:func:`seed_noise` with ``of_means``).

    Returns
    -------
    list of dict
        Keys :data:`WHAT_CHANGED_COLUMNS`, quantities in :data:`QUANTITIES` order, then the CKA rows. A raw
        term's verdict is :func:`term_verdict` (it says when the change is one of activation energy).
    """
    rows: list[dict[str, Any]] = []
    for key, (_, part, fieldname) in QUANTITIES.items():
        if key == "accuracy":
            items = [""]
        else:
            items = list(dict.fromkeys([*(a[part].get(fieldname) or {}), *(b[part].get(fieldname) or {})]))
        for item in items:
            va, vb = _value(a, part, fieldname, item), _value(b, part, fieldname, item)
            noise = _noise(key, item, a, b, seeds_a, seeds_b, of_means)
            if key in ("intra", "inter"):
                la, lb = _value(a, part, f"{key}_rel", item), _value(b, part, f"{key}_rel", item)
                rel_noise = _noise(f"{key}_rel", item, a, b, seeds_a, seeds_b, of_means)
                ratio = (vb / lb) / (va / la) if None not in (va, vb, la, lb) and la and lb and va else None
                verdict = (
                    term_verdict((va, vb, noise), (la, lb, rel_noise), ratio)
                    if None not in (va, vb, la, lb)
                    else difference_verdict(va, vb, noise)
                )
            else:
                verdict = difference_verdict(va, vb, noise)
            rows.append(_row(key, item, va, vb, noise, verdict))
    if cka_ab:
        rows += cka_rows(cka_ab, cka_seeds or {})
    return rows


def seed_mean_measures(seeds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The mean over seeds of every quantity :func:`what_changed` reads (``heldout`` and ``cosine`` parts).

    Parameters
    ----------
    seeds : list of dict
        :func:`model_measures` of the seeds of one configuration.
    """
    if not seeds:
        raise TffdVizError("seed_mean_measures needs the measures of at least one seed")
    out: dict[str, Any] = {}
    for part in ("heldout", "cosine"):
        first = seeds[0][part]
        merged: dict[str, Any] = {k: v for k, v in first.items() if not isinstance(v, Mapping)}
        for _, p, fieldname in QUANTITIES.values():
            if p != part:
                continue
            if not isinstance(first.get(fieldname), Mapping):
                values = [m[part].get(fieldname) for m in seeds]
                merged[fieldname] = statistics.fmean(values) if None not in values else None
                continue
            merged[fieldname] = {
                item: statistics.fmean(m[part][fieldname][item] for m in seeds) for item in first[fieldname]
            }
        out[part] = merged
    return out


def _beyond_row(row: Mapping[str, Any]) -> bool:
    v = row["verdict"]
    return v.startswith("B higher") or v.startswith("B lower") or v.startswith("B's layer departs")


def what_changed_text(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown bullets written from :func:`what_changed` rows: each conclusion beyond noise, then a count of the
    rest (never a conclusion that a row's verdict does not carry).

    Returns
    -------
    list of str
        One bullet per row beyond noise (``"**quantity, item**: A a, B b: verdict"``), then one bullet counting
        the rows within noise by source, and one naming rows without a reference.
    """
    lines = []
    within: dict[str, int] = {}
    unmeasured = []
    for row in rows:
        label = f"{row['quantity']}{', ' + row['item'] if row['item'] else ''}"
        if _beyond_row(row):
            values = (
                f"A {row['A']:.4g}, B {row['B']:.4g}: "
                if row["A"] is not None and row["B"] is not None
                else f"{row['B − A']:.3g}: "
            )
            lines.append(f"* **{label}**: {values}{row['verdict']}.")
        elif row["verdict"].startswith("within") or row["verdict"] == "no difference":
            within[row["noise source"]] = within.get(row["noise source"], 0) + 1
        else:
            unmeasured.append(label)
    if within:
        lines.append(
            "* Within noise (no conclusion): "
            + ", ".join(f"{n} row(s) within {source} noise" for source, n in within.items())
            + "."
        )
    if unmeasured:
        lines.append("* Without a noise reference: " + "; ".join(unmeasured) + ".")
    if not lines:
        lines.append("* Nothing to compare.")
    return lines


def effect_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """One paragraph on what B's Tf-FD did, written from :func:`what_changed` rows (the finding of a pair).

    It sorts the raw Tf-FD terms that B lowered beyond noise into those whose scale-free version is unchanged
    within noise (a drop of activation energy) and those whose scale-free version fell too (a change of likeness
    relative to scale), then names the scale-free measures that moved beyond noise (term / energy, paired −
    random-pair cosine, inter-layer alignment, CKA) and the accuracy verdict.
    """
    by = {(r["quantity"], r["item"]): r for r in rows}

    def items(key: str, test: Any) -> list[str]:
        label = QUANTITIES[key][0]
        return [r["item"] for r in rows if r["quantity"] == label and test(r)]

    def lower_beyond(r: Mapping[str, Any]) -> bool:
        return _beyond_row(r) and (r["B − A"] or 0) < 0

    parts = []
    for key in ("intra", "inter"):
        dropped = items(key, lower_beyond)
        energy = [i for i in dropped if "activation energy" in by[QUANTITIES[key][0], i]["verdict"]]
        alike = [i for i in dropped if "more alike" in by[QUANTITIES[key][0], i]["verdict"]]
        if not dropped:
            parts.append(f"no {key} term is lower in B beyond noise")
            continue
        text = f"B's {key} term is lower beyond noise in {len(dropped)} of {len(items(key, lambda r: True))}"
        if energy:
            text += f"; in {', '.join(energy)} only with the activation energy (term / energy within noise)"
        if alike:
            text += f"; in {', '.join(alike)} also scale-free (term / energy lower beyond noise)"
        parts.append(text)
    scale_free = []
    for key in ("excess", "alignment"):
        moved = items(key, _beyond_row)
        scale_free.append(
            f"{QUANTITIES[key][0]}: "
            + (
                ", ".join(
                    f"{i} {'higher' if by[QUANTITIES[key][0], i]['B − A'] > 0 else 'lower'}" for i in moved
                )
                if moved
                else "within noise everywhere"
            )
        )
    cka = [r for r in rows if r["quantity"].startswith("1 − linear CKA")]
    if cka:
        departs = [r["item"] for r in cka if _beyond_row(r)]
        scale_free.append(
            "CKA with A: "
            + (
                f"departs beyond seed noise in {', '.join(departs)}"
                if departs
                else "within the seed-to-seed CKA everywhere"
                if all(r["noise ±"] is not None for r in cka)
                else "no seed reference"
            )
        )
    acc = by.get((QUANTITIES["accuracy"][0], ""))
    head = "; ".join(parts)
    tail = "; ".join(scale_free)
    accuracy = f" Accuracy: {acc['verdict']}." if acc else ""
    return f"{head[0].upper()}{head[1:]}. Scale-free measures — {tail}.{accuracy}"


# --------------------------------------------------------------------------------------------------
# one call for a pair
# --------------------------------------------------------------------------------------------------


def pair_comparison(
    models: Mapping[str, nn.Module],
    dataset: ImageDataset,
    *,
    heldouts: Mapping[str, Mapping[str, Any] | None] | None = None,
    seeds: Mapping[str, Sequence[nn.Module]] | None = None,
    seed_heldouts: Mapping[str, Sequence[Mapping[str, Any] | None]] | None = None,
    split: str = "test",
    cka_batch: int = 256,
    batch_size: int = 500,
    min_batches: int = 4,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Measure A and B (and the other seeds of their configurations) on a split and compare them.

    Parameters
    ----------
    models : dict
        ``{"A": model_a, "B": model_b}``.
    dataset : ImageDataset
        The held-out split (``split`` names it).
    heldouts : dict, optional
        ``{"A": card["heldout_terms"], ...}``: used where they describe this split, else computed.
    seeds : dict, optional
        ``{"A": [other seeds of A's configuration], "B": [...]}`` (A and B themselves left out).
    seed_heldouts : dict, optional
        Their ``heldout_terms`` entries, in the same order (None where absent).
    cka_batch : int
        Minibatch of the CKA estimator (:func:`tffd_viz.similarity.layer_cka_matrices`, linear, minibatch).
    max_images : int, optional
        Run what is computed here (cosines, CKA, held-out terms a card lacks) on the split's first
        ``max_images`` images only; cards' held-out terms of the whole split are still used.

    Returns
    -------
    dict
        ``n_measured`` (the images the cosines and the CKA ran on), ``measures`` (``{"A": model_measures, "B": ...}``), ``seed_measures`` (per key, the model itself first),
        ``cka_ab`` (:func:`cka_diagonal` over the whole split), ``cka_seeds`` (seed-to-seed CKAs of both
        configurations together, per layer), ``rows`` (:func:`what_changed`) and ``text``
        (:func:`what_changed_text`), ``seeds`` (number of seeds per key) and ``split``, ``n``; ``batch_rows``
        (the same rows against the batch noise only) and ``mean_rows`` (the means over the seeds of each
        configuration against the noise of a mean; empty unless both configurations ship two or more seeds).
    """
    if set(models) != {"A", "B"}:
        raise TffdVizError(f"pair_comparison needs models {{'A': ..., 'B': ...}}, got keys {sorted(models)}")
    heldouts = heldouts or {}
    seeds = seeds or {}
    seed_heldouts = seed_heldouts or {}
    kw = {"split": split, "batch_size": batch_size, "min_batches": min_batches}

    sub = dataset
    if max_images is not None and len(dataset) > max_images:
        sub = ImageDataset(dataset.images[:max_images], dataset.labels[:max_images], dataset.mean, dataset.std)

    def measured(model: nn.Module, held: Mapping[str, Any] | None) -> dict[str, Any]:
        return model_measures(model, dataset, {"heldout_terms": held} if held else None, subset=sub, **kw)

    measures = {k: measured(models[k], heldouts.get(k)) for k in ("A", "B")}
    seed_measures: dict[str, list[dict[str, Any]]] = {}
    for k in ("A", "B"):
        others = list(seeds.get(k, ()))
        helds = list(seed_heldouts.get(k, ())) + [None] * len(others)
        seed_measures[k] = [measures[k]] + [measured(m, h) for m, h in zip(others, helds)]
    images = sub.normalized()
    taps = {k: list(measures[k]["heldout"]["intra"]) for k in ("A", "B")}
    cka_kw = {"batch_size": cka_batch}
    cka_ab = cka_diagonal(models["A"], models["B"], images, taps["A"], taps["B"], **cka_kw)
    cka_seeds: dict[str, list[float]] = {}
    for k in ("A", "B"):
        if seeds.get(k):
            for layer, values in seed_cka([models[k], *seeds[k]], images, taps[k], **cka_kw).items():
                cka_seeds.setdefault(layer, []).extend(values)
    rows = what_changed(
        measures["A"], measures["B"], seed_measures["A"], seed_measures["B"], cka_ab, cka_seeds
    )
    mean_rows: list[dict[str, Any]] = []
    if min(len(v) for v in seed_measures.values()) >= 2:
        means = {k: seed_mean_measures(v) for k, v in seed_measures.items()}
        mean_rows = what_changed(
            means["A"], means["B"], seed_measures["A"], seed_measures["B"], of_means=True
        )
    return {
        "measures": measures,
        "seed_measures": seed_measures,
        "cka_ab": cka_ab,
        "cka_seeds": cka_seeds,
        "rows": rows,
        "text": what_changed_text(rows),
        "split": split,
        "n": len(dataset),
        "n_measured": len(sub),
        "seeds": {k: len(v) for k, v in seed_measures.items()},
        "batch_rows": what_changed(measures["A"], measures["B"]),
        "mean_rows": mean_rows,
    }


def pair_comparison_on(
    models: Mapping[str, nn.Module], dataset: str, root: str | None = None, *, split: str = "test",
    image_size: int | None = None, **kw: Any
) -> dict[str, Any]:
    """:func:`pair_comparison` on a split named by dataset (``load_dataset(dataset, root, image_size=image_size)
    .split(split)``; ``image_size`` 224 is the lazily decoded image folder of the torchvision architectures)."""
    from tffd_viz.data import load_dataset

    return pair_comparison(models, load_dataset(dataset, root, image_size=image_size).split(split), split=split, **kw)


def noise_table(
    comparison: Mapping[str, Any],
    keys: Sequence[str] = ("intra", "intra_rel", "inter", "inter_rel", "energy"),
) -> list[dict[str, Any]]:
    """Rows of :func:`pair_comparison` for some quantities, with the batch-noise and the seed-noise verdict side
    by side (the same difference against the batch-to-batch spread and against the seed-to-seed spread).

    Returns
    -------
    list of dict
        ``quantity, item, A, B, B − A, batch noise ±, verdict (batches)`` and, where seeds exist,
        ``seed noise ±, verdict (seeds)``.
    """
    labels = {QUANTITIES[k][0] for k in keys}
    batch = {(r["quantity"], r["item"]): r for r in comparison["batch_rows"]}
    seeded = max(comparison["seeds"].values()) >= 2
    out = []
    for r in comparison["rows"]:
        if r["quantity"] not in labels:
            continue
        b = batch[r["quantity"], r["item"]]
        row = {k: r[k] for k in ("quantity", "item", "A", "B", "B − A")}
        row.update({"batch noise ±": b["noise ±"], "verdict (batches)": b["verdict"]})
        if seeded:
            row.update({"seed noise ±": r["noise ±"], "verdict (seeds)": r["verdict"]})
        out.append(row)
    return out
