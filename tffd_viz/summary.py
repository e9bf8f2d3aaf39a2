"""Small tables that summarise models for the app and the report: cards, disagreements, seeds."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import torch

__all__ = [
    "CARD_ROWS",
    "Shipped",
    "card_table",
    "checkpoint_rows",
    "config_name",
    "disagreements",
    "heldout_rows",
    "markdown_table",
    "seed_groups",
]

#: ``(path, card, ...)`` tuples of checkpoints as listed from ``checkpoints/`` (only path and card are read).
Shipped: TypeAlias = Iterable[Sequence[Any]]

# Card entries shown side by side (key, label), in this order.
CARD_ROWS: tuple[tuple[str, str], ...] = (
    ("arch", "architecture"),
    ("dataset", "dataset"),
    ("num_classes", "classes"),
    ("in_chans", "input channels"),
    ("method", "method"),
    ("lambda_intra", "λ intra"),
    ("lambda_inter", "λ inter"),
    ("taps", "stages (intra)"),
    ("pairs", "pairs (inter)"),
    ("recipe", "recipe"),
    ("epochs", "epochs"),
    ("warmup", "warm-up epochs"),
    ("seed", "seed"),
    ("final_acc", "final test top-1 (%)"),
    ("best_acc", "best test top-1 (%)"),
    ("train_seconds", "training time (s)"),
    ("device", "trained on"),
    ("source_format", "file format"),
    ("sha256", "sha256"),
)


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join("->".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in value)
    text = str(value)
    return text[:16] + "…" if len(text) == 64 and re.fullmatch(r"[0-9a-f]+", text) else text


def card_table(cards: Mapping[str, Mapping], names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Return the model cards side by side: one row per card entry, one column per model.

    Parameters
    ----------
    cards : mapping model key -> card dict
    names : mapping model key -> display name (column header ``"A: name"``)
    """
    names = names or {}
    table = {"": [label for _, label in CARD_ROWS]}
    for key, card in cards.items():
        header = f"{key}: {names[key]}" if key in names and names[key] != key else key
        cells = [_cell(card.get(k)) for k, _ in CARD_ROWS]
        if card.get("method") == "baseline":  # a baseline logs the weighted terms but never trains on them
            cells = [
                c + " (logged only)" if k in _LAMBDA_KEYS and c != "—" else c
                for (k, _), c in zip(CARD_ROWS, cells)
            ]
        table[header] = cells
    return pd.DataFrame(table)


_LAMBDA_KEYS = ("lambda_intra", "lambda_inter")


def disagreements(pred_a: torch.Tensor, pred_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return the batch positions where A and B predict different classes, wrong-for-both last.

    Parameters
    ----------
    pred_a, pred_b, labels : Tensor (n,) int64

    Returns
    -------
    LongTensor (m,)
        Positions with ``pred_a != pred_b``: first those where exactly one model is right, then the rest.
    """
    differ = pred_a != pred_b
    one_right = differ & ((pred_a == labels) | (pred_b == labels))
    both_wrong = differ & ~one_right
    return torch.cat([one_right.nonzero().flatten(), both_wrong.nonzero().flatten()])


def _number(value: object) -> str:
    """``f"{value:g}"`` for a number, ``"?"`` for a missing or non-numeric one (cards of foreign
    checkpoints)."""
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def config_name(card: Mapping) -> str:
    """Name a training configuration by everything but its seed (arch, dataset, method, lambdas, recipe)."""
    parts = [str(card.get("dataset")), str(card.get("arch")), str(card.get("method"))]
    if card.get("method") == "tffd":
        parts.append(f"λ={_number(card.get('lambda_intra'))}/{_number(card.get('lambda_inter'))}")
    if card.get("recipe"):
        parts.append(str(card.get("recipe")))
    return " ".join(parts)


def seed_groups(shipped: Shipped) -> list[dict]:
    """Return one row per configuration that ships with several seeds: mean and spread of the test accuracy.

    Returns
    -------
    list of dict
        ``{config, seeds, n, mean_acc, std_acc, min_acc, max_acc, accs}`` for configurations with at least two
        seeds.
    """
    groups: dict[str, list[tuple[int, float]]] = {}
    for item in shipped:
        card = item[1]
        if card.get("final_acc") is None or card.get("seed") is None:
            continue
        groups.setdefault(config_name(card), []).append((int(card["seed"]), float(card["final_acc"])))
    rows = []
    for name, runs in sorted(groups.items()):
        if len(runs) < 2:
            continue
        runs.sort()
        accs = [a for _, a in runs]
        rows.append(
            {
                "config": name,
                "seeds": [s for s, _ in runs],
                "n": len(runs),
                "mean_acc": float(np.mean(accs)),
                "std_acc": float(statistics.stdev(accs)),
                "min_acc": min(accs),
                "max_acc": max(accs),
                "accs": accs,
            }
        )
    return rows


def seed_spread_note(groups: Sequence[Mapping[str, Any]], cards: Mapping[str, Mapping]) -> str:
    """Say how many shipped seeds stand behind each compared model's configuration.

    Parameters
    ----------
    groups : sequence of dict
        :func:`seed_groups` rows (configurations shipped with at least two seeds).
    cards : mapping
        Label (``"A"``, ``"B"``) -> model card of a compared model.

    Returns
    -------
    str
        ``"A: <config> (3 seeds shipped); B: <config> (no other seed shipped)."``, followed, when neither
        configuration has a second seed, by the warning that the spread shown belongs to other configurations.

    Examples
    --------
    >>> card = {"dataset": "cifar100", "arch": "resnet20", "method": "baseline", "recipe": "paper"}
    >>> print(seed_spread_note([], {"A": card}).split(". ")[0])
    A: cifar100 resnet20 baseline paper (no other seed shipped)
    """
    seeds = {str(g["config"]): int(g["n"]) for g in groups}
    counts = {label: seeds.get(config_name(card), 1) for label, card in cards.items()}
    text = "; ".join(
        f"{label}: {config_name(card)} "
        + (f"({counts[label]} seeds shipped)" if counts[label] >= 2 else "(no other seed shipped)")
        for label, card in cards.items()
    )
    if all(n < 2 for n in counts.values()):
        whose = "Its" if len(cards) == 1 else "Their"
        text += (
            f". {whose} seed-to-seed spread is not measured: the configurations shown are the ones shipped "
            "with several seeds, a scale of how far a seed alone moves accuracy for them, not for the models "
            "compared"
        )
    return text + "."


def _mean_of(per_key: Mapping | None) -> float | None:
    """The mean of a mapping's values that are not None (None when there are none)."""
    values = [v for v in (per_key or {}).values() if v is not None]
    return float(np.mean(values)) if values else None


def _final_mean(history: Sequence[Mapping] | None, family: str) -> float | None:
    return _mean_of(history[-1].get(family)) if history else None


def _heldout_mean(card: Mapping, family: str) -> float | None:
    return _mean_of((card.get("heldout_terms") or {}).get(family))


def _file_name(path: object) -> str:
    return str(path).rsplit("/", 1)[-1]


def _mean_sd(mean: float | None, sd: float | None) -> str | None:
    if mean is None:
        return None
    return f"{mean:.4g}" if sd is None else f"{mean:.4g} ± {sd:.2g}"


def heldout_rows(shipped: Shipped) -> list[dict]:
    """Return one row per (checkpoint, stage or pair) of the cards' ``heldout_terms``
    (mean ± sd over batches): ``file, term, raw, relative, energy`` as ``"mean ± sd"`` strings (the energy of
    a stage for intra rows, None for inter rows); checkpoints without ``heldout_terms`` give no rows."""
    rows = []
    for item in shipped:
        name, terms = _file_name(item[0]), item[1].get("heldout_terms")
        if not terms:
            continue
        for family in ("intra", "inter"):
            for key, value in terms[family].items():
                rows.append(
                    {
                        "file": name,
                        "term": f"{family} {key}",
                        "raw": _mean_sd(value, terms[f"{family}_std"].get(key)),
                        "relative": _mean_sd(
                            terms[f"{family}_rel"].get(key), terms[f"{family}_rel_std"].get(key)
                        ),
                        "energy": _mean_sd(terms["energy"].get(key), terms["energy_std"].get(key))
                        if family == "intra"
                        else None,
                    }
                )
    return rows


def checkpoint_rows(shipped: Shipped) -> list[dict]:
    """Return one row per checkpoint for the ``checkpoints/README.md`` table.

    Returns
    -------
    list of dict
        ``file, arch, dataset, method, lambda_intra, lambda_inter, recipe, epochs, seed, final_acc, best_acc,
        mean_intra, mean_inter, train_seconds`` where the means are over the terms of the last epoch's history
        (training means; a baseline logs them too) and a baseline's lambdas are ``None`` (not trained on);
        then ``heldout_acc, heldout_intra, heldout_intra_rel, heldout_inter, heldout_inter_rel``: the card's
        ``heldout_terms`` (eval mode, test split) averaged over the stages / pairs (None without them).
    """
    rows = []
    for item in shipped:
        card = item[1]
        history = card.get("history")
        rows.append(
            {
                "file": _file_name(item[0]),
                "arch": card.get("arch"),
                "dataset": card.get("dataset"),
                "method": card.get("method"),
                **{k: None if card.get("method") == "baseline" else card.get(k) for k in _LAMBDA_KEYS},
                "recipe": card.get("recipe"),
                "epochs": card.get("epochs"),
                "seed": card.get("seed"),
                "final_acc": card.get("final_acc"),
                "best_acc": card.get("best_acc"),
                "mean_intra": _final_mean(history, "intra"),
                "mean_inter": _final_mean(history, "inter"),
                "train_seconds": card.get("train_seconds"),
                "heldout_acc": (card.get("heldout_terms") or {}).get("accuracy"),
                **{
                    f"heldout_{family}": _heldout_mean(card, family)
                    for family in ("intra", "intra_rel", "inter", "inter_rel")
                },
            }
        )
    return rows


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """Return rows as a GitHub markdown table (floats with 4 significant digits, ``None`` as a dash)."""
    if not rows:
        return "(none)\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"
