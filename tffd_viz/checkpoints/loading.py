"""Loading: a checkpoint's bytes -> a zoo model in eval mode and its card (:func:`load_checkpoint`).

Reading is done by :mod:`~tffd_viz.checkpoints.readers` (safely), fitting by
:mod:`~tffd_viz.checkpoints.fitting` (strictly); this module puts the card together: the stored card, the
facts of the model that was built, what a pickle's metadata and a published zoo imply, and where the bytes
came from (:data:`~tffd_viz.checkpoints.cards.SOURCE_KEYS`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tffd_viz.checkpoints.cards import card_from_json, normalised_card
from tffd_viz.checkpoints.fitting import nonfinite_summary, plan
from tffd_viz.checkpoints.inference import inferred_with_layout
from tffd_viz.checkpoints.layouts import recognised_as, with_layout_card
from tffd_viz.checkpoints.readers import Blob, RawCheckpoint, Source, checkpoint_sha256, read_blob, read_raw
from tffd_viz.devices import resolved_device
from tffd_viz.errors import CheckpointError
from tffd_viz.models import MODELS
from tffd_viz.models.imagenet import imagenet_card_defaults

__all__ = ["list_checkpoints", "load_checkpoint", "read_card"]


def _check_finite(state: Mapping[str, torch.Tensor], label: str, allow: bool) -> None:
    """Raise (or warn, when ``allow``) naming the floating-point tensors that hold NaN or Inf."""
    summary = nonfinite_summary(state)
    if summary is None:
        return
    message = f"checkpoint {label} has {summary}"
    if allow:
        warnings.warn(message + "; loaded anyway because allow_nonfinite=True", UserWarning, stacklevel=3)
        return
    raise CheckpointError(message + "; pass allow_nonfinite=True to load it anyway")


def _with_source(card: dict[str, Any], raw: RawCheckpoint, blob: Blob, layout: str | None) -> dict[str, Any]:
    """Return ``card`` with the source keys of ``blob`` set (after the card keys)."""
    card.update(
        source_format=raw.fmt,
        source_name=blob.name,
        source_layout=layout,
        recognised_as=recognised_as({**card, "source_layout": layout}),
        sha256=checkpoint_sha256(blob.data),
    )
    return card


def _with_meta(card: dict[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``card`` with its unknown (``None``) fields filled from a pickle's metadata."""
    for key, value in meta.items():
        if key == "arch" and value not in MODELS:
            continue
        if card.get(key) is None:
            card[key] = value
    return card


def _with_arch_defaults(card: dict[str, Any]) -> dict[str, Any]:
    """Return ``card`` with the entries an ImageNet architecture implies (``input_size`` 224, ImageNet
    mean/std, the evaluation transform, ``dataset: imagefolder``) filled where it leaves them empty; other
    cards as they are (their input size is 32 when the card names none). A card naming another ``input_size``
    (e.g. a ResNet-18 trained on 32-pixel CIFAR) is left as it is."""
    defaults = imagenet_card_defaults(str(card.get("arch")))
    if card.get("input_size") not in (None, defaults.get("input_size")):
        return card
    for key, value in defaults.items():
        if card.get(key) is None:
            card[key] = value
    return card


def load_checkpoint(
    source: Source,
    arch: str | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = "cpu",
    allow_nonfinite: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint safely and strictly into a zoo model.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A file path, or the bytes of an upload (format detected from the magic bytes: safetensors,
        zip-format or legacy PyTorch pickle).
    arch : str, optional
        Zoo architecture; overrides the card's and the inferred one.
    num_classes : int, optional
        Overrides the card's and the inferred class count.
    device : str, torch.device or None
        ``"cpu"`` (also None), ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"`` (CUDA when available), resolved
        by :func:`tffd_viz.devices.resolved_device`. A request for an accelerator this machine lacks warns
        (``UserWarning``) and loads on the CPU.
    allow_nonfinite : bool
        Load weights holding NaN/Inf with a warning instead of refusing them.

    Returns
    -------
    model : ZooModel
        In eval mode on ``device``; maps ``(N, in_chans, S, S)`` to ``(N, num_classes)`` logits (``S`` the
        card's ``input_size``: 32 for the CIFAR zoo (no entry), 224 for torchvision's resnet18/34/50 and
        mobilenet_v2).
    card : dict
        Every key of :data:`~tffd_viz.checkpoints.cards.CARD_KEYS` (``None`` where unknown; ``arch``,
        ``num_classes`` and ``in_chans`` those of ``model``), then ``source_format``, ``source_name`` (file
        name or None), ``source_layout`` (key layout used, see :data:`~tffd_viz.checkpoints.layouts.LAYOUTS`),
        ``recognised_as`` (the published model of a known zoo it was recognised as, see
        :func:`~tffd_viz.checkpoints.layouts.recognised_as`, else None) and ``sha256`` of the bytes. A
        published zoo's preprocessing (``dataset``, ``mean``, ``std``) fills the card where empty. Entries the
        ImageNet architectures imply are filled where the card leaves them empty: ``input_size``, ``dataset``
        (``imagefolder``), ImageNet ``mean``/``std`` and ``transform``.

    Raises
    ------
    CheckpointError
        For an unreadable, truncated or unknown file, a pickle that would run code, a state_dict whose
        keys or shapes do not fit the model exactly (listing them), NaN/Inf weights, or an unknown device.
    """
    blob = read_blob(source)
    dev, note = resolved_device("cpu" if device is None else device, unavailable="cpu", error=CheckpointError)
    if note is not None:
        warnings.warn(note, UserWarning, stacklevel=2)
    raw = read_raw(blob, dev)
    stored = normalised_card(raw.card, f"the model card of {blob.label}")
    chosen = plan(raw, arch, num_classes, stored, blob.label)
    tensors = raw.state if raw.state is not None else {}
    state = {new: tensors[old] for new, old in chosen.mapping.items()}
    _check_finite(state, blob.label, allow_nonfinite)
    model = chosen.model
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {blob.label} does not load into {chosen.target.describe()}: {exc}"
        ) from None
    model.to(dev).eval()
    card = _with_meta(stored, raw.meta)
    card.update(
        arch=chosen.target.arch, num_classes=chosen.target.num_classes, in_chans=chosen.target.in_chans
    )
    card = with_layout_card(card, chosen.layout, blob.label)
    return model, _with_source(_with_arch_defaults(card), raw, blob, chosen.layout)


def read_card(source: Source) -> dict[str, Any]:
    """Return the model card of a checkpoint without building the model.

    For the project's safetensors files only the header is parsed (card from the metadata, else from
    the ``.json`` beside the file); a ``.json`` card path or JSON bytes are read directly. Cardless
    checkpoints get a card with ``arch``/``num_classes``/``in_chans`` inferred from the tensor shapes
    where possible (``None`` otherwise) and, for pickles, the known metadata (epochs, best_acc, ...).

    Returns
    -------
    dict
        :data:`~tffd_viz.checkpoints.cards.CARD_KEYS` then the source keys (see :func:`load_checkpoint`); JSON
        cards have no source keys.
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix == ".json":
        path = Path(source).expanduser()
        if not path.is_file():
            raise CheckpointError(f"model card {str(path)!r} does not exist")
        return normalised_card(card_from_json(path.read_bytes(), repr(str(path))), repr(str(path)))
    blob = read_blob(source)
    if blob.data[:1] == b"{":
        return normalised_card(card_from_json(blob.data, blob.label), blob.label)
    raw = read_raw(blob, None)
    card = _with_meta(normalised_card(raw.card, f"the model card of {blob.label}"), raw.meta)
    layout = None
    inferred: tuple[str | None, int | None, int | None]
    try:
        layout, inferred = inferred_with_layout(raw.shapes)
    except CheckpointError:
        inferred = (None, None, None)
    for key, value in zip(("arch", "num_classes", "in_chans"), inferred):
        if card.get(key) is None:
            card[key] = value
    card = with_layout_card(card, layout or "", blob.label)
    return _with_source(_with_arch_defaults(card), raw, blob, layout)


def list_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Return ``(path, card)`` for every ``*.safetensors`` file in ``folder`` (not recursive), sorted by
    name."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder {str(root)!r} does not exist or is not a folder")
    return [(p, read_card(p)) for p in sorted(root.glob("*.safetensors"), key=lambda p: p.name)]
