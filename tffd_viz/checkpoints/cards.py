"""Model cards: the JSON dict that describes a checkpoint (what it is, how it was trained, where it came
from).

A card holds every key of :data:`CARD_KEYS` (``None`` where unknown), then any extra keys. It is written as
strict JSON (no ``NaN``): :func:`finite_card` replaces non-finite figures by ``null`` with a note.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from tffd_viz.errors import CheckpointError

__all__ = [
    "CARD_KEYS",
    "FORMAT_TAG",
    "SOURCE_KEYS",
    "card_from_json",
    "empty_card",
    "finite_card",
    "normalised_card",
]

#: Keys of a model card, in the order they are written.
CARD_KEYS: tuple[str, ...] = (
    "arch",
    "num_classes",
    "in_chans",
    "dataset",
    "mean",
    "std",
    "method",
    "lambda_intra",
    "lambda_inter",
    "taps",
    "pairs",
    "epochs",
    "warmup",
    "seed",
    "recipe",
    "final_acc",
    "best_acc",
    "train_seconds",
    "device",
    "versions",
    "history",
)
#: Keys describing where a loaded checkpoint came from; set on load, never written by save.
SOURCE_KEYS: tuple[str, ...] = ("source_format", "source_name", "source_layout", "recognised_as", "sha256")
#: Value of the safetensors metadata key ``"format"`` written by
#: :func:`~tffd_viz.checkpoints.save_checkpoint`.
FORMAT_TAG = "tffd-viz/1"


def empty_card() -> dict[str, Any]:
    """Return a model card with every key of :data:`CARD_KEYS` set to ``None``."""
    return dict.fromkeys(CARD_KEYS)


def _json_ready(value: Any, where: str = "card") -> Any:
    """Return ``value`` as plain JSON types (tuples -> lists, numpy/torch scalars -> Python numbers).

    Raises
    ------
    CheckpointError
        Naming the place (``card['history'][3]['lr']``) of a value with no JSON form.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return [_json_ready(v, f"{where}[...]") for v in sorted(value, key=repr)]
    if isinstance(value, (os.PathLike, torch.device, torch.dtype, np.dtype)):
        return str(value)
    raise CheckpointError(f"{where} holds a {type(value).__name__} ({value!r:.60}), which has no JSON form")


def _nonfinite_word(value: float) -> str:
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def finite_card(card: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a JSON-ready card with every NaN / inf number replaced by ``None`` and a note per
    place.

    Cards are written with ``json.dumps(..., allow_nan=False)`` (``NaN`` is not JSON). Each replaced value
    adds ``"<where> was NaN; stored as null"`` to ``card["notes"]`` (a list; an existing string note is kept
    first), ``<where>`` written as ``history[3].intra.layer1``.
    """
    notes: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"{where} was {_nonfinite_word(value)}; stored as null")
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    out = clean(dict(card), "")
    if notes:
        old = out.get("notes")
        out["notes"] = ([] if old is None else list(old) if isinstance(old, list) else [old]) + notes
    return out


def normalised_card(card: Mapping[str, Any] | None, where: str = "card") -> dict[str, Any]:
    """Return ``card`` JSON-ready with every :data:`CARD_KEYS` entry first (``None`` when absent).

    Keys that are not card keys are kept, after the card keys, in their original order.

    Raises
    ------
    CheckpointError
        ``card`` is not a dict, or holds a value with no JSON form (naming ``where``).
    """
    if card is None:
        return empty_card()
    if not isinstance(card, Mapping):
        raise CheckpointError(f"{where} must be a dict, got {type(card).__name__}")
    ready = _json_ready(dict(card), where)
    out = empty_card()
    out.update({k: ready.get(k) for k in CARD_KEYS})
    out.update({k: v for k, v in ready.items() if k not in out})
    return out


def card_from_json(text: str | bytes, where: str) -> dict[str, Any]:
    """Return the card in JSON ``text``; :class:`CheckpointError` naming ``where`` when it is no JSON
    object."""
    try:
        card = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"the model card in {where} is not valid JSON: {exc}") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"the model card in {where} must be a JSON object, got {type(card).__name__}")
    return card
