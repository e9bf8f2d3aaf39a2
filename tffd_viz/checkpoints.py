"""Checkpoints: safe, strict loading of the common formats, and self-describing model cards.

The project's own format is a safetensors file of the model's ``state_dict`` (BatchNorm buffers
included) plus a *model card*: a JSON dict written beside it (``x.safetensors`` -> ``x.json``) and
also embedded in the safetensors metadata under ``"card"``, so an uploaded file alone keeps its card.

Foreign checkpoints load too, from a path or from the bytes of an upload:

* PyTorch pickles (``.pt``, ``.pth``, ``.pth.tar``; zip or legacy format) holding a bare state_dict
  or a dict with the weights under ``model``, ``state_dict``, ``net``, ``snet``, ``student`` (...),
  as RepDistiller and the Tf-FD reference code save them; known metadata (``epoch``, ``best_acc``,
  ``opt.model``, ...) goes into the card;
* wrapper prefixes (``module.``, ``_orig_mod.``, ``module.student.``, ...) are stripped;
* key layouts of other code bases are mapped onto the zoo names by small rule sets
  (:data:`LAYOUTS`; ``tffd-reference`` maps the Tf-FD authors' ``res1..3`` / ``.ds.`` ResNets);
* without a card the architecture, class count and input channels are inferred from the key names
  and tensor shapes (:func:`infer_arch`).

Safety: pickles are only ever read by ``torch.load(..., weights_only=True)``, with a short explicit
allow-list of harmless types real checkpoints carry (``argparse.Namespace``, numpy scalars and
dtypes). A file whose unpickling would run code is refused with :class:`CheckpointError` before
anything runs. Loading is strict: missing, unexpected or mis-shaped keys give one readable error.

>>> model, card = load_checkpoint("checkpoints/digits_resnet8_tffd_s0.safetensors")
>>> path = save_checkpoint(model, card, "runs/copy")        # -> runs/copy.safetensors + runs/copy.json
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import math
import os
import pickle
import re
import threading
import warnings
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.dtypes
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file as safetensors_save_file
from torch import nn

from tffd_viz.errors import CheckpointError, TffdVizError
from tffd_viz.models import MODELS, create_model, model_arch
from tffd_viz.models.imagenet import imagenet_card_defaults, torchvision_arch
from tffd_viz.models.vgg import VGG_CONFIGS
from tffd_viz.normalisation import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CARD_KEYS",
    "FORMAT_TAG",
    "LAYOUTS",
    "WRAPPER_PREFIXES",
    "CheckpointError",
    "Layout",
    "checkpoint_sha256",
    "empty_card",
    "finite_card",
    "infer_arch",
    "list_checkpoints",
    "load_checkpoint",
    "read_card",
    "recognised_as",
    "save_checkpoint",
]

Source = str | os.PathLike[str] | bytes
Shapes = dict[str, tuple[int, ...]]

#: Keys of a model card, in the order they are written.
CARD_KEYS: tuple[str, ...] = (
    "arch", "num_classes", "in_chans", "dataset", "mean", "std", "method", "lambda_intra", "lambda_inter",
    "taps", "pairs", "epochs", "warmup", "seed", "recipe", "final_acc", "best_acc", "train_seconds", "device",
    "versions", "history",
)
#: Keys describing where a loaded checkpoint came from; set on load, never written by save.
SOURCE_KEYS: tuple[str, ...] = ("source_format", "source_name", "source_layout", "recognised_as", "sha256")
#: Value of the safetensors metadata key ``"format"`` written by :func:`save_checkpoint`.
FORMAT_TAG = "tffd-viz/1"

#: Prefixes that wrappers add to every key (DataParallel/DDP, torch.compile, distillation wrappers,
#: Lightning). One is stripped only when *every* key carries it; stripping repeats until none fits.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.student.", "module.", "_orig_mod.", "student.", "model.")

#: Keys under which training scripts store the weights in a checkpoint dict, tried in order.
STATE_DICT_KEYS: tuple[str, ...] = ("model", "state_dict", "net", "snet", "student", "model_state_dict")

_MAX_LISTED = 5
_MAX_HEADER_BYTES = 100_000_000


# --------------------------------------------------------------------------------------------- cards
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
    """Return a copy of a JSON-ready card with every NaN / inf number replaced by ``None`` and a note per place.

    Cards are written with ``json.dumps(..., allow_nan=False)`` (``NaN`` is not JSON). Each replaced value adds
    ``"<where> was NaN; stored as null"`` to ``card["notes"]`` (a list; an existing string note is kept first),
    ``<where>`` written as ``history[3].intra.layer1``.
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


def _normalised_card(card: Mapping[str, Any] | None, where: str = "card") -> dict[str, Any]:
    """Return ``card`` JSON-ready with every :data:`CARD_KEYS` entry first (``None`` when absent).

    Keys that are not card keys are kept, after the card keys, in their original order.
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


def _card_from_json(text: str | bytes, where: str) -> dict[str, Any]:
    try:
        card = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"the model card in {where} is not valid JSON: {exc}") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"the model card in {where} must be a JSON object, got {type(card).__name__}")
    return card


# --------------------------------------------------------------------------------------------- bytes
@dataclass(frozen=True)
class _Blob:
    """The bytes of a checkpoint and where they came from."""

    data: bytes
    name: str | None
    path: Path | None

    @property
    def label(self) -> str:
        return repr(str(self.path)) if self.path is not None else f"uploaded bytes ({len(self.data)} bytes)"


def _blob(source: Source) -> _Blob:
    """Read ``source`` (a path or the bytes of an upload) into a :class:`_Blob`."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _Blob(bytes(source), None, None)
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
    return _Blob(path.read_bytes(), path.name, path)


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


def _detected_format(blob: _Blob) -> str:
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


# ---------------------------------------------------------------------------------------- raw reading
@dataclass
class _Raw:
    """What a reader got out of a file: tensors (or their shapes), a stored card and other metadata."""

    fmt: str
    state: dict[str, torch.Tensor] | None = None
    shapes: Shapes = field(default_factory=dict)
    card: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _safetensors_header(blob: _Blob) -> dict[str, Any]:
    """Return the parsed JSON header of a safetensors file, checking sizes and tensor entries."""
    data = blob.data
    size = int.from_bytes(data[:8], "little")
    if 8 + size > len(data):
        raise CheckpointError(
            f"safetensors checkpoint {blob.label} is truncated: its header length field says {size} bytes, "
            f"but only {len(data) - 8} bytes follow"
        )
    try:
        header = json.loads(data[8:8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"safetensors checkpoint {blob.label} has a corrupted header: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"safetensors checkpoint {blob.label} has a corrupted header (not a JSON object)")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise CheckpointError(f"safetensors checkpoint {blob.label}: '__metadata__' is not a JSON object")
            continue
        ok = (isinstance(entry, dict) and isinstance(entry.get("shape"), list)
              and all(isinstance(s, int) and s >= 0 for s in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and isinstance(entry.get("dtype"), str))
        if not ok:
            raise CheckpointError(
                f"safetensors checkpoint {blob.label} has a corrupted header entry for {name!r}: {entry!r:.120}"
            )
        end = max(end, int(entry["data_offsets"][1]))
    if 8 + size + end > len(data):
        raise CheckpointError(
            f"safetensors checkpoint {blob.label} is truncated: the header describes {end} bytes of tensor data, "
            f"but only {len(data) - 8 - size} bytes follow it"
        )
    return header


def _card_beside(path: Path | None) -> dict[str, Any] | None:
    """Return the card in the ``.json`` file beside ``path`` (``x.safetensors`` -> ``x.json``), if any."""
    if path is None:
        return None
    beside = path.with_suffix(".json")
    if not beside.is_file():
        return None
    return _card_from_json(beside.read_bytes(), repr(str(beside)))


def _read_safetensors(blob: _Blob, device: torch.device | None) -> _Raw:
    """Read a safetensors file: card from its metadata (else the ``.json`` beside), tensors if asked.

    ``device=None`` reads the header only (shapes and card).
    """
    header = _safetensors_header(blob)
    metadata = header.get("__metadata__", {})
    fmt_tag = metadata.get("format")
    fmt = fmt_tag if isinstance(fmt_tag, str) and fmt_tag.startswith("tffd-viz/") else "safetensors"
    card = None
    if isinstance(metadata.get("card"), str):
        card = _card_from_json(metadata["card"], f"the metadata of {blob.label}")
    if card is None:
        card = _card_beside(blob.path)
    shapes = {k: tuple(int(s) for s in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    raw = _Raw(fmt=fmt, shapes=shapes, card=card)
    if device is not None:
        try:
            raw.state = dict(safetensors_load(blob.data))
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"safetensors checkpoint {blob.label} is corrupt: {exc}") from None
    return raw


def _numpy_safe_globals() -> list[Any]:
    """Return numpy's scalar constructor (under its numpy 1 and 2 names), ``numpy.dtype`` and DType classes."""
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


def _check_torch_zip(blob: _Blob) -> None:
    """Raise unless ``blob`` is a readable zip archive with a ``<dir>/data.pkl`` entry (torch.save)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob.data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"zip checkpoint {blob.label} is truncated or corrupt: {exc}") from None
    if not any(n.endswith("/data.pkl") for n in names):
        shown = ", ".join(names[:_MAX_LISTED]) + (f", ... ({len(names)} entries)" if len(names) > _MAX_LISTED else "")
        raise CheckpointError(
            f"{blob.label} is a zip archive but not a PyTorch checkpoint (no '<name>/data.pkl' entry); "
            f"it holds: {shown or 'nothing'}"
        )


def _refusal_message(blob: _Blob, exc: Exception) -> str:
    """Say which global a refused pickle asked for (torch's advice to allow-list it is left out)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f"would call {found.group(1)!r}" if found else "needs objects that are not plain data"
    return (
        f"refused to load {blob.label}: unpickling it {what}, which is not an allowed plain-data type; "
        "checkpoints that could run code when opened are never loaded. Re-save the weights as a plain "
        "state_dict (or as safetensors) in a trusted environment."
    )


def _unpickled(blob: _Blob, fmt: str, device: torch.device) -> Any:
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
        raise CheckpointError(f"PyTorch checkpoint {blob.label} is truncated (the pickle ends early)") from None
    except Exception as exc:  # torch raises RuntimeError/ValueError/... for damaged archives
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{blob.label} is not a readable PyTorch checkpoint ({fmt}; truncated, corrupt, or a pickle "
            f"not written by torch.save): {first}"
        ) from None


def _is_tensor_mapping(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _plain_scalar(value: Any) -> Any:
    """Return a Python number/str for tensors of one element, numpy scalars and plain values, else None."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    return None


# Card field -> (keys of the checkpoint dict, cast), first present key wins.
_CONTAINER_META: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "epochs": (("epoch", "epochs"), int),
    "best_acc": (("best_acc", "best_acc1", "best_prec1", "best_top1", "accuracy", "prec@1", "acc"), float),
    "arch": (("arch", "model_name"), str),
    "dataset": (("dataset",), str),
}
# Card field -> (attributes of a saved argparse namespace ``opt``/``args``, cast).
_OPT_META: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "arch": (("model_s", "model", "arch", "s_name"), str),
    "dataset": (("dataset", "data_name"), str),
    "epochs": (("epochs",), int),
    "seed": (("seed",), int),
}


def _first_known(source: Mapping[str, Any], rules: Mapping[str, tuple[tuple[str, ...], Callable[[Any], Any]]],
                 meta: dict[str, Any]) -> None:
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


def _read_pickle(blob: _Blob, device: torch.device, fmt: str) -> _Raw:
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
            f"{blob.label} holds a {type(obj).__name__}, not a state_dict (a dict of tensors) or a dict holding one"
        )
    return _Raw(fmt=fmt, state=state, shapes={k: tuple(v.shape) for k, v in state.items()}, meta=meta)


# Format -> reader(blob, device or None for "header only where possible").
_READERS: dict[str, Callable[[_Blob, torch.device | None], _Raw]] = {
    "safetensors": _read_safetensors,
    "torch-zip": lambda blob, dev: _read_pickle(blob, dev or torch.device("cpu"), "torch-zip"),
    "torch-legacy": lambda blob, dev: _read_pickle(blob, dev or torch.device("cpu"), "torch-legacy"),
}


# --------------------------------------------------------------------------------- prefixes & layouts
def _stripped(keys: list[str]) -> dict[str, str]:
    """Return ``original key -> key without wrapper prefixes`` (see :data:`WRAPPER_PREFIXES`)."""
    current = {k: k for k in keys}
    changed = True
    while changed and current:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(v.startswith(prefix) for v in current.values()):
                current = {k: v[len(prefix):] for k, v in current.items()}
                changed = True
                break
    return current


@dataclass(frozen=True)
class Layout:
    """A key layout of some code base: ``(regex, replacement)`` rules that map its names onto the zoo's.

    Every rule is applied (``re.sub``) to every key, in order. A layout of a published model zoo also
    says where it comes from (``source``), which keys mark it (``signature``, on the keys with wrapper
    prefixes stripped: the layout is tried only when it returns true), which models the zoo publishes
    (``published``: zoo arch -> name) and what their cards imply (``cards``: class count -> card
    entries such as ``dataset``, ``mean``, ``std``, filled where a file's card leaves them empty).
    """

    name: str
    rules: tuple[tuple[str, str], ...] = ()
    source: str = ""
    signature: Callable[[Collection[str]], bool] | None = None
    published: Mapping[str, str] = field(default_factory=dict)
    cards: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    def renamed(self, key: str) -> str:
        """Return ``key`` in zoo names."""
        for pattern, replacement in self.rules:
            key = re.sub(pattern, replacement, key)
        return key


def _akamaster_signature(keys: Collection[str]) -> bool:
    """A three-stage CIFAR ResNet with a ``linear`` head and no shortcut weights (option A)."""
    return (("linear.weight" in keys or "compressible_linear.weight" in keys)
            and any(k.startswith("layer3.") for k in keys) and not any(k.startswith("layer4.") for k in keys)
            and not any(".shortcut." in k or ".downsample." in k for k in keys))


def _chenyaofo_vgg_signature(keys: Collection[str]) -> bool:
    """``features.<i>`` convolutions and a ``classifier.0/3/6`` three-layer head."""
    return all(k in keys for k in ("features.0.weight", "classifier.0.weight", "classifier.3.weight",
                                   "classifier.6.weight"))


#: Key layouts tried in order; the first whose renamed keys fit the target model exactly is used.
#: Layouts of published zoos come first: their signatures make them apply only to files they mark.
LAYOUTS: dict[str, Layout] = {
    # akamaster/pytorch_resnet_cifar10: option-A ResNets, `linear` head (`compressible_*` in later revisions).
    "akamaster": Layout(
        "akamaster", ((r"(^|\.)compressible_", r"\1"), (r"^linear\.", "fc.")),
        source="akamaster/pytorch_resnet_cifar10", signature=_akamaster_signature,
        published={f"resnet{d}_a": f"option-A ResNet-{d}" for d in (20, 32, 44, 56, 110, 1202)},
        cards={10: {"dataset": "cifar10", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}),
    # chenyaofo/pytorch-cifar-models BN-VGGs (its ResNets have the zoo's own names: "zoo" loads them).
    "chenyaofo-vgg": Layout(
        "chenyaofo-vgg", source="chenyaofo/pytorch-cifar-models", signature=_chenyaofo_vgg_signature,
        published={f"cifar_vgg{d}_bn": f"BN-VGG-{d}" for d in (11, 13, 16, 19)},
        cards={10: {"dataset": "cifar10"}, 100: {"dataset": "cifar100"}}),
    "zoo": Layout("zoo"),
    # Tf-FD authors' code (network.py): res1..3 stages of `resblock`s with a `ds` shortcut.
    "tffd-reference": Layout("tffd-reference", ((r"^res([1-3])\.", r"layer\1."), (r"\.ds\.", ".downsample."))),
}


def _layout_keys(layout: Layout, keys: list[str], signed: bool = True) -> dict[str, str] | None:
    """Return ``zoo key -> checkpoint key`` under ``layout``, or None when two keys collide or (``signed``)
    the keys lack the layout's signature."""
    if signed and layout.signature is not None and not layout.signature(set(keys)):
        return None
    mapping = {layout.renamed(k): k for k in keys}
    return mapping if len(mapping) == len(keys) else None


# ------------------------------------------------------------------------------ published model zoos
@functools.lru_cache(maxsize=64)
def _expected_shapes(arch: str, num_classes: int, in_chans: int) -> Shapes:
    """Return the state_dict shapes of a zoo model, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = create_model(arch, num_classes=num_classes, in_chans=in_chans)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _published_title(layout: Layout, arch: str) -> str:
    return f"{layout.published[arch]} ({arch}) of {layout.source}"


def _class_note(layout: Layout, arch: str, num_classes: int) -> str:
    """``"looks like <model> but has N classes (its models have ...)"``."""
    published = " or ".join(str(c) for c in sorted(layout.cards))
    return f"looks like {_published_title(layout, arch)} but has {num_classes} classes (its models have {published})"


def _closest_known(shapes: Shapes, within: int | None = None) -> str:
    """Say which published model of a known zoo (:data:`LAYOUTS` with ``published``) the raw ``shapes``
    are closest to, and what differs; ``""`` when none is as close as ``within`` missing/unexpected/mis-shaped
    keys or shares no key with them.

    Every published model of every class count is compared (signatures ignored: an extra shortcut weight
    should still find its zoo). Differences only in the classifier's rows say "but has N classes".
    """
    stripped = _stripped(list(shapes))
    base = {stripped[k]: s for k, s in shapes.items()}
    best: tuple[int, Layout, str, int, _Fit] | None = None
    for layout in LAYOUTS.values():
        mapping = _layout_keys(layout, list(base), signed=False) if layout.published else None
        if mapping is None:
            continue
        renamed = {new: base[old] for new, old in mapping.items()}
        in_chans = _inferred_in_chans(renamed) or 3
        for arch in layout.published:
            for classes in sorted(layout.cards):
                fit = _fit(renamed, _expected_shapes(arch, classes, in_chans))
                shared = len(renamed) - len(fit.unexpected)
                if shared and (best is None or fit.problems < best[0]):
                    best = (fit.problems, layout, arch, classes, fit)
    if best is None or (within is not None and best[0] > within):
        return ""
    _, layout, arch, _, fit = best
    renamed_classes = _inferred_num_classes({layout.renamed(k): v for k, v in base.items()})
    heads = {k.rsplit(".", 1)[0] for k in _CLASSIFIER_KEYS}
    only_head = (not fit.missing and not fit.unexpected
                 and all(k.rsplit(".", 1)[0] in heads and tuple(a)[1:] == tuple(b)[1:]
                         for k, a, b in fit.mismatched))
    if only_head and renamed_classes is not None:
        return f"; closest known layout: {_class_note(layout, arch, renamed_classes)}"
    return f"; closest known layout: {_published_title(layout, arch)}, which differs by {fit.describe()}"


def recognised_as(card: Mapping[str, Any]) -> str | None:
    """Return what a loaded checkpoint was recognised as, e.g. ``"option-A ResNet-20 (resnet20_a) of
    akamaster/pytorch_resnet_cifar10"``, or None for files of no published zoo (the project's own included)."""
    layout = LAYOUTS.get(str(card.get("source_layout")))
    if layout is None or card.get("arch") not in layout.published or card.get("num_classes") not in layout.cards:
        return None
    return _published_title(layout, str(card["arch"]))


def _with_layout_card(card: dict[str, Any], layout_name: str, label: str) -> dict[str, Any]:
    """Return ``card`` with the entries a published zoo implies (``dataset``, ``mean``, ``std``) filled where it
    leaves them empty; a file in such a zoo's key layout that is none of its published models gets nothing
    filled (its preprocessing is not known) and a warning saying so."""
    layout = LAYOUTS.get(layout_name)
    if layout is None or not layout.published:
        return card
    arch, classes = card.get("arch"), card.get("num_classes")
    if arch not in layout.published or classes not in layout.cards:
        what = (_class_note(layout, arch, classes) if arch in layout.published
                else f"has the key layout of {layout.source} but is {arch}, none of its published models")
        warnings.warn(f"{label} {what}; its preprocessing is not known, so the card says none", UserWarning,
                      stacklevel=3)
        return card
    for key, value in layout.cards[classes].items():
        if card.get(key) is None:
            card[key] = value
    return card


# ------------------------------------------------------------------------------------ arch inference
def _indices(shapes: Shapes, prefix: str) -> set[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return {int(m.group(1)) for k in shapes if (m := pattern.match(k))}


def _zoo_name(name: str, description: str) -> str:
    if name not in MODELS:
        raise CheckpointError(f"the weights look like {description} ({name}), which is not in the zoo {sorted(MODELS)}")
    return name


def _resnet_arch(shapes: Shapes) -> str | None:
    if "layer1.0.conv1.weight" not in shapes or "conv1.weight" not in shapes:
        return None
    blocks = len(_indices(shapes, "layer1."))
    stem = shapes["conv1.weight"][0]
    name = f"resnet{6 * blocks + 2}" + ("x4" if stem == 32 else "")
    return _zoo_name(name, f"a CIFAR ResNet with {blocks} blocks per stage and a stem of width {stem}")


def _wrn_arch(shapes: Shapes) -> str | None:
    if "block1.layer.0.conv1.weight" not in shapes:
        return None
    blocks = len(_indices(shapes, "block1.layer."))
    widen = shapes["block1.layer.0.conv1.weight"][0] // 16
    return _zoo_name(f"wrn_{6 * blocks + 4}_{widen}", f"a wide ResNet with {blocks} blocks per stage, width x{widen}")


def _vgg_arch(shapes: Shapes) -> str | None:
    if "block0.0.weight" not in shapes or "classifier.weight" not in shapes:
        return None
    counts = []
    for k in range(5):
        pattern = re.compile(rf"block{k}\.\d+\.weight")
        counts.append(sum(1 for name, s in shapes.items() if pattern.fullmatch(name) and len(s) == 4))
    for name, cfg in VGG_CONFIGS.items():
        if [len(block) for block in cfg] == counts:
            return name
    raise CheckpointError(f"the weights look like a VGG with {counts} convolutions per block, which no zoo VGG has")


def _resnet_a_arch(shapes: Shapes) -> str | None:
    """A three-stage CIFAR ResNet whose widening blocks have no shortcut weights: option A (``resnetN_a``)."""
    widening = shapes.get("layer2.0.conv1.weight", ())
    if ("conv1.weight" not in shapes or len(widening) != 4 or widening[0] == widening[1]
            or _indices(shapes, "layer4.") or any(".downsample." in k for k in shapes)):
        return None
    blocks, stem = len(_indices(shapes, "layer1.")), shapes["conv1.weight"][0]
    name = f"resnet{6 * blocks + 2}" + ("" if stem == 16 else f"w{stem}") + "_a"
    return _zoo_name(name, f"an option-A CIFAR ResNet with {blocks} blocks per stage and a stem of width {stem}")


def _vgg_bn_arch(shapes: Shapes) -> str | None:
    """A CIFAR BN-VGG with a 512-512-classes head (``cifar_vggN_bn``, N = convolutions + 3)."""
    if "features.0.weight" not in shapes or tuple(shapes.get("classifier.0.weight", ())) != (512, 512):
        return None
    convs = sum(1 for k, s in shapes.items() if re.fullmatch(r"features\.\d+\.weight", k) and len(s) == 4)
    return _zoo_name(f"cifar_vgg{convs + 3}_bn", f"a CIFAR BN-VGG with {convs} convolutions and a 3-layer head")


# Family -> rule returning the zoo name (None when the keys are not of that family), tried in order.
_ARCH_RULES: dict[str, Callable[[Shapes], str | None]] = {
    "torchvision": torchvision_arch,  # before "resnet": torchvision ResNets have conv1 and layer1 too
    "resnet_a": _resnet_a_arch,  # before "resnet": the same keys, less the shortcut weights
    "resnet": _resnet_arch,
    "wrn": _wrn_arch,
    "vgg": _vgg_arch,
    "vgg_bn": _vgg_bn_arch,
}
_CLASSIFIER_KEYS = ("fc.weight", "classifier.weight", "linear.weight", "classifier.1.weight", "classifier.6.weight")
_STEM_KEYS = ("conv1.weight", "block0.0.weight", "features.0.0.weight", "features.0.weight")


def _inferred_num_classes(shapes: Shapes) -> int | None:
    return next((shapes[k][0] for k in _CLASSIFIER_KEYS if len(shapes.get(k, ())) == 2), None)


def _inferred_in_chans(shapes: Shapes) -> int | None:
    return next((shapes[k][1] for k in _STEM_KEYS if len(shapes.get(k, ())) == 4), None)


def _inferred_zoo_arch(shapes: Shapes) -> str:
    for rule in _ARCH_RULES.values():
        name = rule(shapes)
        if name is not None:
            return name
    shown = ", ".join(list(shapes)[:_MAX_LISTED])
    raise CheckpointError(
        f"cannot tell the architecture from the weights: no zoo family ({', '.join(_ARCH_RULES)}) matches keys "
        f"like {shown} ({len(shapes)} keys); pass arch=... (one of {sorted(MODELS)})"
    )


def _zoo_shapes(shapes: Shapes) -> list[tuple[str, Shapes]]:
    """Return ``(layout name, shapes in zoo names)`` for every layout, after stripping wrapper prefixes."""
    stripped = _stripped(list(shapes))
    base = {stripped[k]: s for k, s in shapes.items()}
    out = []
    for name, layout in LAYOUTS.items():
        mapping = _layout_keys(layout, list(base))
        if mapping is not None:
            out.append((name, {new: base[old] for new, old in mapping.items()}))
    return out


def _inferred(shapes: Shapes) -> tuple[str, int, int]:
    """Return ``(arch, num_classes, in_chans)`` of zoo-named ``shapes``."""
    arch = _inferred_zoo_arch(shapes)
    num_classes, in_chans = _inferred_num_classes(shapes), _inferred_in_chans(shapes)
    if num_classes is None or in_chans is None:
        raise CheckpointError(f"the weights look like {arch} but have no classifier or stem weight to size it")
    return arch, num_classes, in_chans


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int, int]:
    """Return the zoo architecture, class count and input channels that a state_dict's keys and shapes fit.

    Wrapper prefixes are stripped and every layout of :data:`LAYOUTS` is tried.
    ResNets are told apart by the number of ``layer1.{i}`` blocks (depth ``6 n + 2``) and the stem width
    (32 -> ``x4``); WRNs by the number of ``block1.layer.{i}`` blocks (depth ``6 n + 4``) and the width
    of the first stage (``16 k``); VGGs by their convolutions per block. ``num_classes`` is the row
    count of ``fc.weight``/``classifier.weight``, ``in_chans`` the input channels of ``conv1.weight`` /
    ``block0.0.weight``.

    Parameters
    ----------
    state_dict : mapping str -> Tensor

    Returns
    -------
    (arch, num_classes, in_chans) : (str, int, int)

    Raises
    ------
    CheckpointError
        When no zoo architecture fits, naming the keys seen.
    """
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    if not shapes:
        raise CheckpointError("cannot infer the architecture of an empty state_dict")
    return _inferred_any_layout(shapes)


def _inferred_any_layout(shapes: Shapes) -> tuple[str, int, int]:
    """Return :func:`_inferred` for the first layout of :data:`LAYOUTS` under which the shapes fit a zoo family."""
    return _inferred_with_layout(shapes)[1]


def _inferred_with_layout(shapes: Shapes) -> tuple[str, tuple[str, int, int]]:
    """Return ``(layout name, (arch, num_classes, in_chans))`` for the first layout that fits a zoo family."""
    errors = []
    for name, zoo in _zoo_shapes(shapes):
        try:
            return name, _inferred(zoo)
        except CheckpointError as exc:
            errors.append(str(exc))
    raise CheckpointError(errors[0] if errors else "no layout maps the keys without collisions")


# ------------------------------------------------------------------------------------ strict fitting
@dataclass
class _Target:
    """The zoo model a checkpoint is loaded into, and where each of its settings came from."""

    arch: str
    num_classes: int
    in_chans: int
    origin: dict[str, str]

    def describe(self) -> str:
        return (f"{self.arch} (arch from {self.origin['arch']}; num_classes={self.num_classes} from "
                f"{self.origin['num_classes']}; in_chans={self.in_chans} from {self.origin['in_chans']})")


def _first_given(*options: tuple[Any, str]) -> tuple[Any, str]:
    return next(((v, origin) for v, origin in options if v is not None), (None, "nowhere"))


def _target(shapes: Shapes, arch: str | None, num_classes: int | None, card: Mapping[str, Any],
            meta: Mapping[str, Any]) -> _Target:
    """Return the model to build: caller's choice, else the card's, else the checkpoint's metadata, else inferred."""
    if arch is not None and arch not in MODELS:
        raise CheckpointError(f"arch={arch!r} is not in the zoo; choose one of {sorted(MODELS)}")
    if card.get("arch") is not None and card["arch"] not in MODELS:
        raise CheckpointError(f"the model card names architecture {card['arch']!r}, which is not in the zoo "
                              f"{sorted(MODELS)}; pass arch=... to override")
    meta_arch = meta.get("arch") if meta.get("arch") in MODELS else None
    chosen_arch, arch_origin = _first_given((arch, "the caller"), (card.get("arch"), "the card"),
                                            (meta_arch, "the checkpoint's metadata"))
    if chosen_arch is None:
        chosen_arch, arch_origin = _inferred_zoo_arch(shapes), "the weights"
    nc, nc_origin = _first_given((num_classes, "the caller"), (card.get("num_classes"), "the card"),
                                 (_inferred_num_classes(shapes), "the weights"))
    ic, ic_origin = _first_given((card.get("in_chans"), "the card"), (_inferred_in_chans(shapes), "the weights"),
                                 (3, "the default"))
    if nc is None:
        raise CheckpointError(f"cannot tell the number of classes of {chosen_arch}: the weights have no "
                              f"{' / '.join(_CLASSIFIER_KEYS)}; pass num_classes=...")
    try:
        nc, ic = int(nc), int(ic)
    except (TypeError, ValueError):
        raise CheckpointError(f"num_classes={nc!r} (from {nc_origin}) and in_chans={ic!r} (from {ic_origin}) "
                              "must be integers") from None
    return _Target(chosen_arch, nc, ic, {"arch": arch_origin, "num_classes": nc_origin, "in_chans": ic_origin})


@dataclass
class _Fit:
    """How a checkpoint's keys and shapes compare with a model's state_dict."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def problems(self) -> int:
        """Number of missing, unexpected and mis-shaped keys (the closest candidate has fewest)."""
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self) -> str:
        def listed(items: list[str], one: str, many: str) -> str:
            shown = ", ".join(items[:_MAX_LISTED]) + (", ..." if len(items) > _MAX_LISTED else "")
            return f"{len(items)} {one if len(items) == 1 else many}: {shown}"

        parts = []
        if self.missing:
            parts.append(listed(self.missing, "missing key", "missing keys"))
        if self.unexpected:
            parts.append(listed(self.unexpected, "unexpected key", "unexpected keys"))
        if self.mismatched:
            parts.append(listed([f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched],
                                "shape mismatch", "shape mismatches"))
        return "; ".join(parts)


def _fit(shapes: Shapes, expected: Shapes) -> _Fit:
    """Compare checkpoint ``shapes`` with a model's; an absent BatchNorm ``num_batches_tracked`` is tolerated."""
    missing = [k for k in expected if k not in shapes and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in shapes if k not in expected]
    mismatched = [(k, shapes[k], expected[k]) for k in expected if k in shapes and tuple(shapes[k]) != expected[k]]
    return _Fit(missing, unexpected, mismatched)


@dataclass
class _Plan:
    layout: str
    mapping: dict[str, str]  # zoo key -> checkpoint key
    target: _Target
    model: nn.Module
    fit: _Fit


def _plan(raw: _Raw, arch: str | None, num_classes: int | None, card: Mapping[str, Any], label: str) -> _Plan:
    """Pick the layout whose renamed keys fit the target model; raise the strict error when none does.

    An architecture named only by a pickle's metadata (``opt.model``) is a hint: when the weights do
    not fit it but fit the inferred architecture, the inferred one is used, with a warning.
    """
    stripped = _stripped(list(raw.shapes))
    back = {v: k for k, v in stripped.items()}
    plans: list[_Plan] = []
    errors: list[str] = []
    for name, layout in LAYOUTS.items():
        renamed = _layout_keys(layout, list(back))
        if renamed is None:
            continue
        mapping = {new: back[old] for new, old in renamed.items()}
        shapes = {new: raw.shapes[old] for new, old in mapping.items()}
        for meta in (raw.meta, {}):
            try:
                target = _target(shapes, arch, num_classes, card, meta)
                model = create_model(target.arch, num_classes=target.num_classes, in_chans=target.in_chans)
            except CheckpointError as exc:
                errors.append(str(exc))
                break
            except TffdVizError as exc:
                raise CheckpointError(f"cannot build the model for {label}: {exc}") from None
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            plan = _Plan(name, mapping, target, model, _fit(shapes, expected))
            if plan.fit.ok:
                if meta is not raw.meta:
                    warnings.warn(f"the metadata of {label} names architecture {raw.meta['arch']!r}, but the "
                                  f"weights are {target.arch}; loaded as {target.arch}", UserWarning, stacklevel=3)
                return plan
            plans.append(plan)
            if target.origin["arch"] != "the checkpoint's metadata":
                break
    if not plans:
        raise CheckpointError(f"cannot load {label}: {errors[0] if errors else 'no layout fits its keys'}"
                              + _closest_known(raw.shapes))
    best = min(plans, key=lambda p: p.fit.problems)
    hint = ""
    try:
        looks = _inferred_any_layout(raw.shapes)
        if looks != (best.target.arch, best.target.num_classes, best.target.in_chans):
            hint = (f"; the weights look like {looks[0]} with {looks[1]} classes and {looks[2]} input "
                    f"channel(s)")
    except CheckpointError:
        pass
    raise CheckpointError(
        f"checkpoint {label} does not fit {best.target.describe()}: {best.fit.describe()}{hint}"
        + _closest_known(raw.shapes, within=best.fit.problems)
    )


# ------------------------------------------------------------------------------------ device & values
# Device type -> availability test.
_DEVICE_AVAILABLE: dict[str, Callable[[], bool]] = {
    "cpu": lambda: True,
    "cuda": torch.cuda.is_available,
    "mps": lambda: hasattr(torch.backends, "mps") and torch.backends.mps.is_available(),
}


def _resolved_device(device: str | torch.device | None) -> torch.device:
    """Return the device to load onto: ``"auto"`` -> CUDA when available; unavailable devices -> CPU + warning."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"unknown device {device!r}: {exc}") from None
    available = _DEVICE_AVAILABLE.get(dev.type)
    if available is None:
        raise CheckpointError(f"device {device!r} is not supported; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
    if not available():
        warnings.warn(f"device {str(device)!r} was requested but {dev.type.upper()} is not available; "
                      "loading on the CPU instead", UserWarning, stacklevel=3)
        return torch.device("cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CheckpointError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """``"name (k of n values)"`` for each floating-point tensor of ``state`` holding NaN or Inf."""
    bad = []
    for name, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            bad.append(f"{name} ({count} of {tensor.numel()} values)")
    return bad


def _check_finite(state: Mapping[str, torch.Tensor], label: str, allow: bool) -> None:
    """Raise (or warn, when ``allow``) naming the floating-point tensors that hold NaN or Inf."""
    bad = _nonfinite_tensors(state)
    if not bad:
        return
    message = (f"checkpoint {label} has NaN/Inf values in {len(bad)} tensor(s): "
               + ", ".join(bad[:_MAX_LISTED]) + (", ..." if len(bad) > _MAX_LISTED else ""))
    if allow:
        warnings.warn(message + "; loaded anyway because allow_nonfinite=True", UserWarning, stacklevel=3)
        return
    raise CheckpointError(message + "; pass allow_nonfinite=True to load it anyway")


def _with_source(card: dict[str, Any], raw: _Raw, blob: _Blob, layout: str | None) -> dict[str, Any]:
    """Return ``card`` with the :data:`SOURCE_KEYS` of ``blob`` set (after the card keys)."""
    card.update(source_format=raw.fmt, source_name=blob.name, source_layout=layout,
                recognised_as=recognised_as({**card, "source_layout": layout}),
                sha256=hashlib.sha256(blob.data).hexdigest())
    return card


def _with_meta(card: dict[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``card`` with its unknown (``None``) fields filled from a pickle's metadata."""
    for key, value in meta.items():
        if key == "arch" and value not in MODELS:
            continue
        if card.get(key) is None:
            card[key] = value
    return card


# ------------------------------------------------------------------------------------------ public API
def load_checkpoint(
    source: Source,
    arch: str | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
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
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` (CUDA when available). A CUDA request without
        CUDA warns and loads on the CPU.
    allow_nonfinite : bool
        Load weights holding NaN/Inf with a warning instead of refusing them.

    Returns
    -------
    model : ZooModel
        In eval mode on ``device``; maps ``(N, in_chans, S, S)`` to ``(N, num_classes)`` logits (``S`` the
        card's ``input_size``: 32 for the CIFAR zoo (no entry), 224 for torchvision's resnet18/34/50 and mobilenet_v2).
    card : dict
        Every key of :data:`CARD_KEYS` (``None`` where unknown; ``arch``, ``num_classes`` and
        ``in_chans`` those of ``model``), then ``source_format``, ``source_name`` (file name or None),
        ``source_layout`` (key layout used, see :data:`LAYOUTS`), ``recognised_as`` (the published model
        of a known zoo it was recognised as, see :func:`recognised_as`, else None) and ``sha256`` of the
        bytes. A published zoo's preprocessing (``dataset``, ``mean``, ``std``) fills the card where empty. Entries the
        ImageNet architectures imply are filled where the card leaves them empty: ``input_size``, ``dataset`` (``imagefolder``), ImageNet ``mean``/``std`` and ``transform``.

    Raises
    ------
    CheckpointError
        For an unreadable, truncated or unknown file, a pickle that would run code, a state_dict whose
        keys or shapes do not fit the model exactly (listing them), or NaN/Inf weights.
    """
    blob = _blob(source)
    fmt = _detected_format(blob)
    dev = _resolved_device(device)
    raw = _READERS[fmt](blob, dev)
    stored = _normalised_card(raw.card, f"the model card of {blob.label}")
    plan = _plan(raw, arch, num_classes, stored, blob.label)
    tensors = raw.state if raw.state is not None else {}
    state = {new: tensors[old] for new, old in plan.mapping.items()}
    _check_finite(state, blob.label, allow_nonfinite)
    model = plan.model
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {blob.label} does not load into {plan.target.describe()}: {exc}") from None
    model.to(dev).eval()
    card = _with_meta(stored, raw.meta)
    card.update(arch=plan.target.arch, num_classes=plan.target.num_classes, in_chans=plan.target.in_chans)
    card = _with_layout_card(card, plan.layout, blob.label)
    return model, _with_source(_with_arch_defaults(card), raw, blob, plan.layout)


def _with_arch_defaults(card: dict[str, Any]) -> dict[str, Any]:
    """Return ``card`` with the entries an ImageNet architecture implies (``input_size`` 224, ImageNet mean/std,
    the evaluation transform, ``dataset: imagefolder``) filled where it leaves them empty; other cards as they
    are (their input size is 32 when the card names none). A card naming another ``input_size`` (e.g. a ResNet-18
    trained on 32-pixel CIFAR) is left as it is."""
    defaults = imagenet_card_defaults(str(card.get("arch")))
    if card.get("input_size") not in (None, defaults.get("input_size")):
        return card
    for key, value in defaults.items():
        if card.get(key) is None:
            card[key] = value
    return card


def read_card(source: Source) -> dict[str, Any]:
    """Return the model card of a checkpoint without building the model.

    For the project's safetensors files only the header is parsed (card from the metadata, else from
    the ``.json`` beside the file); a ``.json`` card path or JSON bytes are read directly. Cardless
    checkpoints get a card with ``arch``/``num_classes``/``in_chans`` inferred from the tensor shapes
    where possible (``None`` otherwise) and, for pickles, the known metadata (epochs, best_acc, ...).

    Returns
    -------
    dict
        :data:`CARD_KEYS` then the source keys (see :func:`load_checkpoint`); JSON cards have no source keys.
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix == ".json":
        path = Path(source).expanduser()
        if not path.is_file():
            raise CheckpointError(f"model card {str(path)!r} does not exist")
        return _normalised_card(_card_from_json(path.read_bytes(), repr(str(path))), repr(str(path)))
    blob = _blob(source)
    if blob.data[:1] == b"{":
        return _normalised_card(_card_from_json(blob.data, blob.label), blob.label)
    fmt = _detected_format(blob)
    raw = _READERS[fmt](blob, None)
    card = _with_meta(_normalised_card(raw.card, f"the model card of {blob.label}"), raw.meta)
    layout = None
    try:
        layout, inferred = _inferred_with_layout(raw.shapes)
    except CheckpointError:
        inferred = (None, None, None)
    for key, value in zip(("arch", "num_classes", "in_chans"), inferred):
        if card.get(key) is None:
            card[key] = value
    card = _with_layout_card(card, layout or "", blob.label)
    return _with_source(_with_arch_defaults(card), raw, blob, layout)


def list_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Return ``(path, card)`` for every ``*.safetensors`` file in ``folder`` (not recursive), sorted by name."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder {str(root)!r} does not exist or is not a folder")
    return [(p, read_card(p)) for p in sorted(root.glob("*.safetensors"), key=lambda p: p.name)]


_REPLACED_SUFFIXES = (".safetensors", ".pth.tar", ".pt", ".pth", ".bin", ".ckpt", ".json")


def _safetensors_path(path: Path) -> Path:
    """Return ``path`` ending in ``.safetensors`` (a checkpoint suffix like ``.pt`` is replaced, else appended)."""
    name = path.name
    for suffix in _REPLACED_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".safetensors")


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
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
        Model card (see :data:`CARD_KEYS`); tuples, numpy and torch scalars are converted to JSON
        types. Source keys (``sha256``, ``source_*``) of a loaded card are dropped: they describe
        another file.
    path : str or os.PathLike
        Destination; the suffix is forced to ``.safetensors`` and ``<stem>.json`` is written beside it.

    Returns
    -------
    Path
        The ``.safetensors`` file written. Its metadata holds ``"card"`` (the JSON card) and
        ``"format"`` (:data:`FORMAT_TAG`); tensors are stored contiguous, from the CPU. Both cards are strict
        JSON (``allow_nan=False``): a NaN / inf figure is stored as ``null`` with a note (:func:`finite_card`).

    Raises
    ------
    CheckpointError
        When the card contradicts the model (``arch``, ``num_classes``, ``in_chans``) or holds a value
        with no JSON form, or the model's weights hold NaN / inf (nothing is written).
    """
    target = _safetensors_path(Path(path).expanduser())
    out = _normalised_card(card)
    for key in SOURCE_KEYS:
        out.pop(key, None)
    facts = {"arch": getattr(model, "arch", None), "num_classes": getattr(model, "num_classes", None),
             "in_chans": getattr(model, "in_chans", None)}
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
    bad = _nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(f"refusing to write {str(target)!r}: the model has NaN/Inf values in {len(bad)} "
                              "tensor(s): " + ", ".join(bad[:_MAX_LISTED]) + (", ..." if len(bad) > _MAX_LISTED else ""))
    out = finite_card(out)
    text = json.dumps(out, allow_nan=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(target, lambda tmp: safetensors_save_file(
        tensors, str(tmp), metadata={"card": text, "format": FORMAT_TAG}))
    _write_atomically(target.with_suffix(".json"),
                      lambda tmp: tmp.write_text(json.dumps(out, indent=2, allow_nan=False) + "\n", encoding="utf-8"))
    return target
