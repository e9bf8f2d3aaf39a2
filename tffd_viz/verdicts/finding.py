"""The generated finding of a pair: one paragraph on what B's Tf-FD did, from the what-changed rows.

Part of :mod:`tffd_viz.verdicts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tffd_viz.verdicts.table import QUANTITIES, _beyond_row


def effect_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """One paragraph on what B's Tf-FD did, written from :func:`what_changed` rows (the finding of a pair).

    It sorts the raw Tf-FD terms that B lowered beyond noise into those whose scale-free version is unchanged
    within noise (a drop of activation energy) and those whose scale-free version fell too (a change of
    likeness relative to scale), then names every scale-free measure that moved beyond noise, whether or not
    its raw term did (term / energy, paired − random-pair cosine, inter-layer alignment, CKA), and the
    accuracy verdict.
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
            parts.append(f"no raw {key} term is lower in B beyond noise")
            continue
        text = f"B's {key} term is lower beyond noise in {len(dropped)} of {len(items(key, lambda r: True))}"
        if energy:
            text += f"; in {', '.join(energy)} only with the activation energy (term / energy within noise)"
        if alike:
            text += f"; in {', '.join(alike)} also scale-free (term / energy lower beyond noise)"
        parts.append(text)
    scale_free = []
    # every scale-free measure that moved, the term / energy ones included: a scale-free term can fall beyond
    # noise while its raw term stays inside (the CIFAR-100 paper240 pair's inter layer1->layer2)
    for key in ("intra_rel", "inter_rel", "excess", "alignment"):
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
