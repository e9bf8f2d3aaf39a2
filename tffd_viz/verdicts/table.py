"""The "A vs B: what changed" table: per quantity both values, the difference, its noise and a verdict.

Part of :mod:`tffd_viz.verdicts`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from tffd_viz.errors import TffdVizError
from tffd_viz.verdicts.cka import cka_rows
from tffd_viz.verdicts.noise import (
    NO_NOISE,
    Noise,
    batch_noise,
    difference_verdict,
    sampling_noise,
    seed_noise,
    term_verdict,
)

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
        ``a`` and ``b`` are the means over ``seeds_a`` / ``seeds_b`` (:func:`seed_mean_measures`): the seed
        noise is that of a difference of means (:func:`seed_noise` with ``of_means``).

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
                if va is not None and vb is not None and la is not None and lb is not None:
                    ratio = (vb / lb) / (va / la) if la and lb and va else None
                    verdict = term_verdict((va, vb, noise), (la, lb, rel_noise), ratio)
                else:
                    verdict = difference_verdict(va, vb, noise)
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
    """Markdown bullets written from :func:`what_changed` rows: each conclusion beyond noise, then a count of
    the rest (never a conclusion that a row's verdict does not carry).

    Returns
    -------
    list of str
        One bullet per row beyond noise (``"**quantity, item**: A a, B b: verdict"``), then one bullet
        counting the rows within noise by source, and one naming rows without a reference.
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
