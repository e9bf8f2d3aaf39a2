"""One call for a pair: measure A, B and their seeds on a split and compare them (and the noise table).

Part of :mod:`tffd_viz.verdicts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from tffd_viz.data import ImageDataset
from tffd_viz.errors import TffdVizError
from tffd_viz.verdicts.cka import cka_diagonal, seed_cka
from tffd_viz.verdicts.measures import model_measures
from tffd_viz.verdicts.table import QUANTITIES, seed_mean_measures, what_changed, what_changed_text


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
        ``n_measured`` (the images the cosines and the CKA ran on), ``measures``
        (``{"A": model_measures, "B": ...}``), ``seed_measures`` (per key, the model itself first), ``cka_ab``
        (:func:`cka_diagonal` over the whole split), ``cka_seeds`` (seed-to-seed CKAs of both configurations
        together, per layer), ``rows`` (:func:`what_changed`) and ``text`` (:func:`what_changed_text`),
        ``seeds`` (number of seeds per key) and ``split``, ``n``; ``batch_rows`` (the same rows against the
        batch noise only) and ``mean_rows`` (the means over the seeds of each configuration against the noise
        of a mean; empty unless both configurations ship two or more seeds).
    """
    if set(models) != {"A", "B"}:
        raise TffdVizError(f"pair_comparison needs models {{'A': ..., 'B': ...}}, got keys {sorted(models)}")
    heldouts = heldouts or {}
    seeds = seeds or {}
    seed_heldouts = seed_heldouts or {}
    sub = dataset
    if max_images is not None and len(dataset) > max_images:
        sub = ImageDataset(
            dataset.images[:max_images], dataset.labels[:max_images], dataset.mean, dataset.std
        )

    def measured(model: nn.Module, held: Mapping[str, Any] | None) -> dict[str, Any]:
        card = {"heldout_terms": held} if held else None
        return model_measures(
            model, dataset, card, split=split, batch_size=batch_size, min_batches=min_batches, subset=sub
        )

    measures = {k: measured(models[k], heldouts.get(k)) for k in ("A", "B")}
    seed_measures: dict[str, list[dict[str, Any]]] = {}
    for k in ("A", "B"):
        others = list(seeds.get(k, ()))
        helds = list(seed_heldouts.get(k, ())) + [None] * len(others)
        seed_measures[k] = [measures[k]] + [measured(m, h) for m, h in zip(others, helds)]
    images = sub.normalized()
    taps = {k: list(measures[k]["heldout"]["intra"]) for k in ("A", "B")}
    cka_ab = cka_diagonal(models["A"], models["B"], images, taps["A"], taps["B"], batch_size=cka_batch)
    cka_seeds: dict[str, list[float]] = {}
    for k in ("A", "B"):
        if seeds.get(k):
            for layer, values in seed_cka(
                [models[k], *seeds[k]], images, taps[k], batch_size=cka_batch
            ).items():
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
    models: Mapping[str, nn.Module],
    dataset: str,
    root: str | None = None,
    *,
    split: str = "test",
    image_size: int | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """:func:`pair_comparison` on a split named by dataset
    (``load_dataset(dataset, root, image_size=image_size).split(split)``; ``image_size`` 224 is the lazily
    decoded image folder of the torchvision architectures)."""
    from tffd_viz.data import load_dataset

    return pair_comparison(
        models, load_dataset(dataset, root, image_size=image_size).split(split), split=split, **kw
    )


def noise_table(
    comparison: Mapping[str, Any],
    keys: Sequence[str] = ("intra", "intra_rel", "inter", "inter_rel", "energy"),
) -> list[dict[str, Any]]:
    """Rows of :func:`pair_comparison` for some quantities, with the batch-noise and the seed-noise verdict
    side by side (the same difference against the batch-to-batch spread and against the seed-to-seed spread).

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
