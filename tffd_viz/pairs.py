"""The shipped baseline / Tf-FD pairs, and which one the app and the notebooks compare by default.

A *pair* is two checkpoints trained with the same recipe and seed, one without and one with the Tf-FD terms.
:data:`SHIPPED_PAIRS` names them by file stem; :data:`DEFAULT_PAIRS` says, per dataset, which pairs to try in
order. A pair counts only when both files are present and both cards say the run finished
(``completed`` true or absent), so a run still in training (only its ``.resume.pt`` state, or a
``completed: false`` checkpoint written at a time limit) is passed over for the next pair of its dataset.

The functions take the cards by file stem (``{path.stem: card}`` from
:func:`tffd_viz.checkpoints.list_checkpoints`) and read nothing themselves.

>>> cards = {"cifar100_resnet20_baseline_s0": {}, "cifar100_resnet20_tffd_s0": {}}
>>> default_pair("cifar100", cards)
('cifar100-cpu30', 'cifar100_resnet20_baseline_s0', 'cifar100_resnet20_tffd_s0')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tffd_viz.errors import CheckpointError

__all__ = ["DEFAULT_PAIRS", "SHIPPED_PAIRS", "ShippedPair", "available_pairs", "default_pair", "pair_title"]


@dataclass(frozen=True)
class ShippedPair:
    """Two shipped checkpoints to compare, by file stem (no ``.safetensors``).

    Attributes
    ----------
    dataset : str
        The :mod:`tffd_viz.data` name both were trained on.
    baseline : str
        Model A, trained without the Tf-FD terms.
    tffd : tuple of str
        Candidates for model B, the first one shipped is used.
    """

    dataset: str
    baseline: str
    tffd: tuple[str, ...]


#: Pair key -> its checkpoints. Keys are ``<dataset>-<recipe>``.
SHIPPED_PAIRS: dict[str, ShippedPair] = {
    "digits": ShippedPair(
        "digits", "digits_resnet8_baseline_s0", ("digits_resnet8_tffd_s0", "digits_resnet8_tffd-paper_s0")
    ),
    "cifar10-cpu30": ShippedPair("cifar10", "cifar10_resnet20_baseline_s0", ("cifar10_resnet20_tffd_s0",)),
    "cifar100-paper240": ShippedPair(
        "cifar100", "cifar100_resnet20_baseline_paper240_s0", ("cifar100_resnet20_tffd_paper240_s0",)
    ),
    "cifar100-cpu30": ShippedPair(
        "cifar100", "cifar100_resnet20_baseline_s0", ("cifar100_resnet20_tffd_s0",)
    ),
}

#: Dataset -> pair keys to try, in order (the paper's 240-epoch CIFAR-100 pair first, where it ships).
DEFAULT_PAIRS: dict[str, tuple[str, ...]] = {
    "digits": ("digits",),
    "cifar10": ("cifar10-cpu30",),
    "cifar100": ("cifar100-paper240", "cifar100-cpu30"),
}


def _finished(stem: str, cards: Mapping[str, Mapping[str, Any]]) -> bool:
    return stem in cards and cards[stem].get("completed", True) is not False


def available_pairs(cards: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """The pairs of :data:`SHIPPED_PAIRS` whose two checkpoints are present and finished.

    Parameters
    ----------
    cards : mapping
        File stem -> card of every checkpoint at hand.

    Returns
    -------
    dict
        Pair key -> ``(stem of model A, stem of model B)``, in :data:`SHIPPED_PAIRS` order; model B is the
        first finished candidate.
    """
    out = {}
    for key, pair in SHIPPED_PAIRS.items():
        b = next((stem for stem in pair.tffd if _finished(stem, cards)), None)
        if b is not None and _finished(pair.baseline, cards):
            out[key] = (pair.baseline, b)
    return out


def default_pair(dataset: str, cards: Mapping[str, Mapping[str, Any]]) -> tuple[str, str, str]:
    """The pair to compare on ``dataset``: the first of ``DEFAULT_PAIRS[dataset]`` that is available.

    Parameters
    ----------
    dataset : str
        A key of :data:`DEFAULT_PAIRS`.
    cards : mapping
        File stem -> card of every checkpoint at hand.

    Returns
    -------
    tuple of str
        ``(pair key, stem of model A, stem of model B)``.

    Raises
    ------
    CheckpointError
        For a dataset without shipped pairs, or when none of its pairs is complete (naming the files
        missing or unfinished).
    """
    if dataset not in DEFAULT_PAIRS:
        raise CheckpointError(
            f"no shipped pair for dataset {dataset!r}; datasets with one: {list(DEFAULT_PAIRS)}"
        )
    found = available_pairs(cards)
    for key in DEFAULT_PAIRS[dataset]:
        if key in found:
            return (key, *found[key])
    pairs = [SHIPPED_PAIRS[key] for key in DEFAULT_PAIRS[dataset]]
    wanted = [stem for pair in pairs for stem in (pair.baseline, *pair.tffd)]
    missing = [s for s in wanted if s not in cards]
    unfinished = [s for s in wanted if s in cards and not _finished(s, cards)]
    raise CheckpointError(
        f"no complete {dataset} pair among {list(DEFAULT_PAIRS[dataset])}: missing {missing or 'none'}, "
        f"unfinished (completed: false) {unfinished or 'none'}; see checkpoints/README.md"
    )


def pair_title(key: str, card: Mapping[str, Any]) -> str:
    """How the app names pair ``key``, from its baseline's ``card``: ``"cifar100 · resnet20 · paper recipe,
    240 epochs"``."""
    parts = [SHIPPED_PAIRS[key].dataset, str(card.get("arch", "?"))]
    how = [f"{card['recipe']} recipe"] if card.get("recipe") else []
    how += [f"{card['epochs']} epochs"] if card.get("epochs") else []
    if how:
        parts.append(", ".join(how))
    return " · ".join(parts)
