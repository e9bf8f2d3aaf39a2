"""Raw checkpoint readers: bytes in, tensors and metadata out, with pickles unpickled safely.

:func:`read_raw` reads a checkpoint's bytes (a :class:`Blob`, from :func:`read_blob`) in the format its magic
bytes name (:data:`READERS`): safetensors, or a ``torch.save`` pickle in the zip or the legacy format. It
returns a :class:`RawCheckpoint`: the tensors under their stored names, their shapes, a stored model card and
the metadata a training script kept beside the weights. Nothing here knows model architectures.

Safety: pickles are only ever read by ``torch.load(..., weights_only=True)``, with a short explicit allow-list
(:data:`SAFE_GLOBALS`) of harmless types real checkpoints carry (``argparse.Namespace``, numpy scalars and
dtypes). A file whose unpickling would run code is refused with :class:`~tffd_viz.errors.CheckpointError`
before anything runs; so are truncated and corrupt files, and safetensors headers that claim more bytes
than the file holds.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import re
import threading
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.dtypes
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load

from tffd_viz.checkpoints.cards import card_from_json
from tffd_viz.errors import CheckpointError

__all__ = [
    "MAX_LISTED",
    "READERS",
    "SAFE_GLOBALS",
    "STATE_DICT_KEYS",
    "Blob",
    "RawCheckpoint",
    "Shapes",
    "Source",
    "checkpoint_sha256",
    "read_blob",
    "read_raw",
    "shown",
]

#: A checkpoint given as a path or as the bytes of an upload.
Source: TypeAlias = str | os.PathLike[str] | bytes
#: Tensor name -> shape.
Shapes: TypeAlias = dict[str, tuple[int, ...]]

#: Keys under which training scripts store the weights in a checkpoint dict, tried in order.
STATE_DICT_KEYS: tuple[str, ...] = ("model", "state_dict", "net", "snet", "student", "model_state_dict")

#: How many names an error message lists before ``", ..."``.
MAX_LISTED = 5
_MAX_HEADER_BYTES = 100_000_000


def shown(items: Sequence[str]) -> str:
    """Return the first :data:`MAX_LISTED` of ``items`` joined by ``", "``, then ``", ..."`` when there are
    more."""
    return ", ".join(items[:MAX_LISTED]) + (", ..." if len(items) > MAX_LISTED else "")


# --------------------------------------------------------------------------------------------- bytes
@dataclass(frozen=True)
class Blob:
    """The bytes of a checkpoint and where they came from (``name``/``path`` None for uploaded bytes)."""

    data: bytes
    name: str | None
    path: Path | None

    @property
    def label(self) -> str:
        """How error messages name the checkpoint: its quoted path, or ``uploaded bytes (N bytes)``."""
        return repr(str(self.path)) if self.path is not None else f"uploaded bytes ({len(self.data)} bytes)"


def read_blob(source: Source) -> Blob:
    """Return the :class:`Blob` of ``source`` (a path, read whole, or the bytes of an upload)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Blob(bytes(source), None, None)
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(
            f"a checkpoint source must be a path or bytes, got {type(source).__name__} "
            "(for an uploaded file pass its bytes, e.g. upload.getvalue())"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {str(path)!r} is not a file")
    return Blob(path.read_bytes(), path.name, path)


def checkpoint_sha256(source: Source) -> str:
    """Return the SHA-256 (hex) of a checkpoint's bytes, read from a path or given as bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(source)).hexdigest()
    path = Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist or is not a file")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _looks_like_safetensors(data: bytes) -> bool:
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    return len(data) > 8 and data[8:9] == b"{" and 0 < size < _MAX_HEADER_BYTES


# Format name -> magic test, tried in order (safetensors first: its length field may start with 0x80).
_FORMAT_SNIFFERS: dict[str, Callable[[bytes], bool]] = {
    "safetensors": _looks_like_safetensors,
    "torch-zip": lambda data: data[:4] == b"PK\x03\x04",
    "torch-legacy": lambda data: data[:1] == b"\x80",
}


def _detected_format(blob: Blob) -> str:
    """Return the key of :data:`_FORMAT_SNIFFERS` that matches the magic bytes of ``blob``."""
    if not blob.data:
        raise CheckpointError(f"checkpoint {blob.label} is empty (0 bytes)")
    for name, sniff in _FORMAT_SNIFFERS.items():
        if sniff(blob.data):
            return name
    raise CheckpointError(
        f"checkpoint {blob.label} is in no known format: expected safetensors (8-byte little-endian header "
        "length, then '{'), a zip-format PyTorch file (PK\\x03\\x04) or a legacy PyTorch pickle (\\x80); "
        f"the file starts with {blob.data[:12]!r}"
    )


# ---------------------------------------------------------------------------------------- safetensors
@dataclass
class RawCheckpoint:
    """What a reader got out of a file: tensors (or only their shapes), a stored card and other metadata.

    Attributes
    ----------
    fmt : str
        ``"safetensors"``, the project's ``"tffd-viz/<n>"`` tag, ``"torch-zip"`` or ``"torch-legacy"``.
    state : dict str -> Tensor, optional
        The tensors under their stored names; None when only the header was read.
    shapes : dict str -> tuple of int
        The shape of every tensor.
    card : dict, optional
        The model card stored in (or, for safetensors, beside) the file.
    meta : dict
        Card fields known from a pickle's container dict (``epochs``, ``best_acc``, ``arch``, ...).
    """

    fmt: str
    state: dict[str, torch.Tensor] | None = None
    shapes: Shapes = field(default_factory=dict)
    card: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _safetensors_header(blob: Blob) -> dict[str, Any]:
    """Return the parsed JSON header of a safetensors file, checking sizes and tensor entries."""
    data = blob.data
    size = int.from_bytes(data[:8], "little")
    if 8 + size > len(data):
        raise CheckpointError(
            f"safetensors checkpoint {blob.label} is truncated: its header length field says {size} bytes, "
            f"but only {len(data) - 8} bytes follow"
        )
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"safetensors checkpoint {blob.label} has a corrupted header: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(
            f"safetensors checkpoint {blob.label} has a corrupted header (not a JSON object)"
        )
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise CheckpointError(
                    f"safetensors checkpoint {blob.label}: '__metadata__' is not a JSON object"
                )
            continue
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(s, int) and s >= 0 for s in entry["shape"])
            and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2
            and isinstance(entry.get("dtype"), str)
        )
        if not ok:
            raise CheckpointError(
                f"safetensors checkpoint {blob.label} has a corrupted header entry for {name!r}: "
                f"{entry!r:.120}"
            )
        end = max(end, int(entry["data_offsets"][1]))
    if 8 + size + end > len(data):
        raise CheckpointError(
            f"safetensors checkpoint {blob.label} is truncated: the header describes {end} bytes of tensor "
            f"data, but only {len(data) - 8 - size} bytes follow it"
        )
    return header


def _card_beside(path: Path | None) -> dict[str, Any] | None:
    """Return the card in the ``.json`` file beside ``path`` (``x.safetensors`` -> ``x.json``), if any."""
    if path is None:
        return None
    beside = path.with_suffix(".json")
    if not beside.is_file():
        return None
    return card_from_json(beside.read_bytes(), repr(str(beside)))


def _read_safetensors(blob: Blob, device: torch.device | None) -> RawCheckpoint:
    """Read a safetensors file: card from its metadata (else the ``.json`` beside), tensors if asked.

    ``device=None`` reads the header only (shapes and card).
    """
    header = _safetensors_header(blob)
    metadata = header.get("__metadata__", {})
    fmt_tag = metadata.get("format")
    fmt = fmt_tag if isinstance(fmt_tag, str) and fmt_tag.startswith("tffd-viz/") else "safetensors"
    card = None
    if isinstance(metadata.get("card"), str):
        card = card_from_json(metadata["card"], f"the metadata of {blob.label}")
    if card is None:
        card = _card_beside(blob.path)
    shapes = {k: tuple(int(s) for s in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    raw = RawCheckpoint(fmt=fmt, shapes=shapes, card=card)
    if device is not None:
        try:
            raw.state = dict(safetensors_load(blob.data))
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"safetensors checkpoint {blob.label} is corrupt: {exc}") from None
    return raw


# -------------------------------------------------------------------------------------------- pickles
def _numpy_safe_globals() -> list[Any]:
    """Return numpy's scalar constructor (under its numpy 1 and 2 names), ``numpy.dtype`` and DType
    classes."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtype_classes = [getattr(numpy.dtypes, n) for n in dir(numpy.dtypes) if n.endswith("DType")]
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *[(cls, f"numpy.dtypes.{cls.__name__}") for cls in dtype_classes],
    ]


#: Non-tensor types allowed while unpickling (all plain data holders that run no user code).
SAFE_GLOBALS: list[Any] = [argparse.Namespace, *_numpy_safe_globals()]
_UNPICKLE_LOCK = threading.Lock()


def _check_torch_zip(blob: Blob) -> None:
    """Raise unless ``blob`` is a readable zip archive with a ``<dir>/data.pkl`` entry (torch.save)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob.data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"zip checkpoint {blob.label} is truncated or corrupt: {exc}") from None
    if not any(n.endswith("/data.pkl") for n in names):
        entries = shown(names) + (f" ({len(names)} entries)" if len(names) > MAX_LISTED else "")
        raise CheckpointError(
            f"{blob.label} is a zip archive but not a PyTorch checkpoint (no '<name>/data.pkl' entry); "
            f"it holds: {entries or 'nothing'}"
        )


def _refusal_message(blob: Blob, exc: Exception) -> str:
    """Say which global a refused pickle asked for (torch's advice to allow-list it is left out)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f"would call {found.group(1)!r}" if found else "needs objects that are not plain data"
    return (
        f"refused to load {blob.label}: unpickling it {what}, which is not an allowed plain-data type; "
        "checkpoints that could run code when opened are never loaded. Re-save the weights as a plain "
        "state_dict (or as safetensors) in a trusted environment."
    )


def _unpickled(blob: Blob, fmt: str, device: torch.device) -> Any:
    """Return the object in a torch.save file, unpickled with ``weights_only=True`` only."""
    if fmt == "torch-zip":
        _check_torch_zip(blob)
    try:
        # safe_globals edits process-wide state on enter/exit: one load at a time keeps threads from
        # clearing each other's allow-list (e.g. several app sessions loading at once).
        with _UNPICKLE_LOCK, torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(io.BytesIO(blob.data), weights_only=True, map_location=device)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "Unsupported" in str(exc):
            raise CheckpointError(_refusal_message(blob, exc)) from None
        raise CheckpointError(f"PyTorch checkpoint {blob.label} is corrupt or truncated: {exc}") from None
    except EOFError:
        raise CheckpointError(
            f"PyTorch checkpoint {blob.label} is truncated (the pickle ends early)"
        ) from None
    except Exception as exc:  # torch raises RuntimeError/ValueError/... for damaged archives
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{blob.label} is not a readable PyTorch checkpoint ({fmt}; truncated, corrupt, or a pickle "
            f"not written by torch.save): {first}"
        ) from None


def _is_tensor_mapping(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _plain_scalar(value: Any) -> Any:
    """Return a Python number/str for tensors of one element, numpy scalars and plain values, else None."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    return None


_MetaRules = Mapping[str, tuple[tuple[str, ...], Callable[[Any], Any]]]

# Card field -> (keys of the checkpoint dict, cast), first present key wins.
_CONTAINER_META: _MetaRules = {
    "epochs": (("epoch", "epochs"), int),
    "best_acc": (("best_acc", "best_acc1", "best_prec1", "best_top1", "accuracy", "prec@1", "acc"), float),
    "arch": (("arch", "model_name"), str),
    "dataset": (("dataset",), str),
}
# Card field -> (attributes of a saved argparse namespace ``opt``/``args``, cast).
_OPT_META: _MetaRules = {
    "arch": (("model_s", "model", "arch", "s_name"), str),
    "dataset": (("dataset", "data_name"), str),
    "epochs": (("epochs",), int),
    "seed": (("seed",), int),
}


def _first_known(source: Mapping[str, Any], rules: _MetaRules, meta: dict[str, Any]) -> None:
    """Fill ``meta[field]`` (unless already set) from the first key of ``source`` with a plain value."""
    for name, (keys, cast) in rules.items():
        if name in meta:
            continue
        for key in keys:
            value = _plain_scalar(source.get(key))
            if value is not None:
                try:
                    meta[name] = cast(value)
                except (TypeError, ValueError):
                    continue
                break


def _container_meta(container: Mapping[str, Any]) -> dict[str, Any]:
    """Return card fields known from a checkpoint dict (``epoch``, ``best_acc``, ``opt.model`` ...)."""
    meta: dict[str, Any] = {}
    _first_known(container, _CONTAINER_META, meta)
    for key in ("opt", "args"):
        opt = container.get(key)
        opt_dict = vars(opt) if isinstance(opt, argparse.Namespace) else opt
        if isinstance(opt_dict, Mapping):
            _first_known(opt_dict, _OPT_META, meta)
    return meta


def _read_pickle(blob: Blob, device: torch.device, fmt: str) -> RawCheckpoint:
    """Read a torch.save file: the state_dict (bare or under :data:`STATE_DICT_KEYS`) and metadata."""
    obj = _unpickled(blob, fmt, device)
    if _is_tensor_mapping(obj):
        state, meta = dict(obj), {}
    elif isinstance(obj, Mapping):
        key = next((k for k in STATE_DICT_KEYS if _is_tensor_mapping(obj.get(k))), None)
        if key is None:
            keys = [str(k) for k in list(obj)[:12]]
            raise CheckpointError(
                f"no state_dict found in {blob.label}: it is a dict with keys {keys}; expected a dict of "
                f"tensors, or one under any of {list(STATE_DICT_KEYS)}"
            )
        state, meta = dict(obj[key]), _container_meta(obj)
    else:
        raise CheckpointError(
            f"{blob.label} holds a {type(obj).__name__}, not a state_dict (a dict of tensors) or a dict "
            "holding one"
        )
    return RawCheckpoint(
        fmt=fmt, state=state, shapes={k: tuple(v.shape) for k, v in state.items()}, meta=meta
    )


#: Format -> reader(blob, device, or None for "the header only where the format allows").
READERS: dict[str, Callable[[Blob, torch.device | None], RawCheckpoint]] = {
    "safetensors": _read_safetensors,
    "torch-zip": lambda blob, dev: _read_pickle(blob, dev or torch.device("cpu"), "torch-zip"),
    "torch-legacy": lambda blob, dev: _read_pickle(blob, dev or torch.device("cpu"), "torch-legacy"),
}


def read_raw(blob: Blob, device: torch.device | None) -> RawCheckpoint:
    """Read ``blob`` with the reader of the format its magic bytes name (:data:`READERS`).

    Parameters
    ----------
    blob : Blob
    device : torch.device or None
        Where tensors are loaded; None reads a safetensors header only (pickles are always read whole, onto
        the CPU).

    Raises
    ------
    CheckpointError
        Empty, unknown, truncated or corrupt bytes, or a pickle that would run code (naming ``blob.label``).
    """
    return READERS[_detected_format(blob)](blob, device)
