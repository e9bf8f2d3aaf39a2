"""Saving: a model's state_dict as safetensors with its card embedded, and the card as JSON beside it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file as safetensors_save_file
from torch import nn

from tffd_viz.checkpoints.cards import FORMAT_TAG, SOURCE_KEYS, finite_card, normalised_card
from tffd_viz.checkpoints.fitting import nonfinite_summary
from tffd_viz.errors import CheckpointError
from tffd_viz.models import model_arch

__all__ = ["save_checkpoint"]

_REPLACED_SUFFIXES = (".safetensors", ".pth.tar", ".pt", ".pth", ".bin", ".ckpt", ".json")


def _safetensors_path(path: Path) -> Path:
    """Return ``path`` ending in ``.safetensors`` (a checkpoint suffix like ``.pt`` is replaced, else
    appended)."""
    name = path.name
    for suffix in _REPLACED_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".safetensors")


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through ``write(tmp)`` and a rename, readable by everyone the umask allows."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600; checkpoints are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(model: nn.Module, card: Mapping[str, Any] | None, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s state_dict as safetensors with its card, and the card as JSON beside it.

    Parameters
    ----------
    model : nn.Module
        Usually a zoo model; its ``arch``, ``num_classes`` and ``in_chans`` fill those card fields.
    card : dict or None
        Model card (see :data:`~tffd_viz.checkpoints.cards.CARD_KEYS`); tuples, numpy and torch scalars are
        converted to JSON types. Source keys (``sha256``, ``source_*``) of a loaded card are dropped: they
        describe another file.
    path : str or os.PathLike
        Destination; the suffix is forced to ``.safetensors`` and ``<stem>.json`` is written beside it.

    Returns
    -------
    Path
        The ``.safetensors`` file written. Its metadata holds ``"card"`` (the JSON card) and
        ``"format"`` (:data:`~tffd_viz.checkpoints.cards.FORMAT_TAG`); tensors are stored contiguous, from the
        CPU. Both cards are strict JSON (``allow_nan=False``): a NaN / inf figure is stored as ``null`` with a
        note (:func:`~tffd_viz.checkpoints.cards.finite_card`).

    Raises
    ------
    CheckpointError
        When the card contradicts the model (``arch``, ``num_classes``, ``in_chans``) or holds a value
        with no JSON form, or the model's weights hold NaN / inf (nothing is written).
    """
    target = _safetensors_path(Path(path).expanduser())
    out = normalised_card(card)
    for key in SOURCE_KEYS:
        out.pop(key, None)
    facts = {
        "arch": getattr(model, "arch", None),
        "num_classes": getattr(model, "num_classes", None),
        "in_chans": getattr(model, "in_chans", None),
    }
    for key, value in facts.items():
        if value is None:
            continue
        if out[key] is None:
            out[key] = value
        elif out[key] != value:
            raise CheckpointError(
                f"the card says {key}={out[key]!r} but the model {model_arch(model)} has {key}={value!r}; "
                "refusing to write a card that misdescribes its weights"
            )
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    summary = nonfinite_summary(tensors)
    if summary is not None:
        raise CheckpointError(f"refusing to write {str(target)!r}: the model has {summary}")
    out = finite_card(out)
    text = json.dumps(out, allow_nan=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(
        target,
        lambda tmp: safetensors_save_file(tensors, str(tmp), metadata={"card": text, "format": FORMAT_TAG}),
    )
    _write_atomically(
        target.with_suffix(".json"),
        lambda tmp: tmp.write_text(json.dumps(out, indent=2, allow_nan=False) + "\n", encoding="utf-8"),
    )
    return target
