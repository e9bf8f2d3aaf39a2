"""All of the app's caching, in one place.

Pages never cache anything themselves. They describe what they want with small hashable
references (:class:`ModelRef`, :class:`BatchRef` and its fields) and pass the library function itself
to :func:`run` (results pickled by ``st.cache_data``: small tables, arrays), :func:`run_resource` (large
tensors shared by reference through ``st.cache_resource``: features) or :func:`figure` (every figure, shared
by reference), e.g. ``cache.run(tap_rankings, ref, "tffd", images=sel.batch.images)``. The cache key names
the function by its module and qualified name (:func:`function_key`), so every call is one a linter, an IDE
or a rename can follow. Inside, the references are resolved to the cached model and batch tensors.

Models are cached once per (checkpoint sha256, device) with ``st.cache_resource`` and shared by
every browser session. They are in eval mode and never mutated: every call that runs a model
holds the lock cached beside it (hooks and gradient passes cannot interleave), gradients come from
``torch.autograd.grad`` inside the library, and hooks are always removed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from tffd_viz import checkpoints as ckpt
from tffd_viz import data as tdata
from tffd_viz import normalisation as tnorm

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


@dataclass(frozen=True)
class ModelRef:
    """A checkpoint on a device: shipped (``path``) or uploaded (bytes kept in the upload store by sha)."""

    sha: str
    device: str
    path: str | None = None
    label: str = ""
    arch: str | None = None
    num_classes: int | None = None
    #: ``(data_mean, data_std, mean, std)``: the model gets the batch re-normalised from the data's statistics
    #: to its own (an input adapter, :func:`tffd_viz.normalisation.attach_input_normalisation`); None: as is.
    input_norm: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None = (
        None
    )


@dataclass(frozen=True)
class BatchRef:
    """A deterministic sample batch ``(dataset, split, n, seed, root, image_size)``.

    ``image_size`` None is the in-memory 32x32 dataset; 224 (model A's card ``input_size``) the lazily
    decoded image folder at ImageNet resolution.
    """

    dataset: str
    split: str
    n: int
    seed: int
    root: str | None = None
    image_size: int | None = None

    @property
    def images(self) -> BatchField:
        return BatchField(self, "images")

    @property
    def labels(self) -> BatchField:
        return BatchField(self, "labels")

    @property
    def indices(self) -> BatchField:
        return BatchField(self, "indices")


@dataclass(frozen=True)
class BatchField:
    """One tensor of a :class:`BatchRef` (``images``, ``labels`` or ``indices``)."""

    batch: BatchRef
    field: str


@dataclass(frozen=True)
class CardField:
    """One entry of a model's card (e.g. ``"history"``), resolved inside the cache.

    Passing this instead of the entry itself keeps the cache key small: only the reference is hashed,
    not a long per-epoch history.
    """

    model: ModelRef
    key: str


@dataclass
class ModelEntry:
    """A cached model with its card and the lock every pass over it holds."""

    model: torch.nn.Module
    card: dict
    lock: threading.Lock


UPLOAD_STORE_MAX_BYTES = 1 << 30  # the uploads kept in memory, all sessions together


@dataclass
class UploadStore:
    """Uploaded checkpoint bytes by sha256, least recently used dropped past ``UPLOAD_STORE_MAX_BYTES``.

    Shared by every session; content-addressed, so sessions cannot clash. A dropped upload makes
    :func:`model_entry` ask for the file again (a model already loaded stays cached).
    """

    items: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, sha: str, data: bytes) -> None:
        with self.lock:
            self.items[sha] = data
            self.items.move_to_end(sha)
            while sum(len(v) for v in self.items.values()) > UPLOAD_STORE_MAX_BYTES and len(self.items) > 1:
                self.items.popitem(last=False)

    def get(self, sha: str) -> bytes | None:
        with self.lock:
            data = self.items.get(sha)
            if data is not None:
                self.items.move_to_end(sha)
            return data


@st.cache_resource(max_entries=1, show_spinner=False)
def upload_store() -> UploadStore:
    """The one shared :class:`UploadStore`."""
    return UploadStore()


def remember_upload(data: bytes) -> str:
    """Store uploaded bytes under their sha256 and return it."""
    sha = ckpt.checkpoint_sha256(data)
    upload_store().put(sha, data)
    return sha


@st.cache_data(max_entries=64, show_spinner=False)
def shipped_checkpoints(folder: str = str(CHECKPOINT_DIR)) -> list[tuple[str, dict, str]]:
    """``(path, card, sha256)`` of every checkpoint shipped in ``folder``, sorted by name.

    The cards leave out ``history`` (about 99 % of a card's bytes, unpickled on every run of every page
    otherwise); a model's full card comes with the model (:func:`model_card`).
    """
    return [
        (
            str(p),
            {k: v for k, v in card.items() if k != "history"},
            card.get("sha256") or ckpt.checkpoint_sha256(p),
        )
        for p, card in ckpt.list_checkpoints(folder)
    ]


@st.cache_resource(max_entries=16, show_spinner="Loading checkpoint ...")
def model_entry(ref: ModelRef) -> ModelEntry:
    """Load a checkpoint once per (sha, device, arch override, input adapter) and keep it in eval mode."""
    source: str | bytes | None = ref.path if ref.path else upload_store().get(ref.sha)
    if source is None:
        raise ckpt.CheckpointError("the uploaded checkpoint is no longer in memory; upload it again")
    model, card = ckpt.load_checkpoint(source, arch=ref.arch, num_classes=ref.num_classes, device=ref.device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if (card.get("input_size") or 32) > 32 and next(model.parameters()).device.type == "cpu":
        model.to(memory_format=torch.channels_last)  # 224-pixel convolutions run ~1.3x faster on the CPU
    if ref.input_norm is not None:
        tnorm.attach_input_normalisation(model, *ref.input_norm)
    return ModelEntry(model=model, card=card, lock=threading.Lock())


def model_card(ref: ModelRef) -> dict:
    """The card of a cached model."""
    return model_entry(ref).card


@st.cache_resource(max_entries=4, show_spinner="Loading dataset ...")
def dataset(name: str, root: str | None, image_size: int | None = None) -> tdata.DatasetBundle:
    """A dataset bundle (train/test tensors in memory; at ``image_size`` > 32 a lazily read image folder)."""
    return tdata.load_dataset(name, root, image_size=image_size)


def batch_split(ref: BatchRef) -> tdata.ImageDataset:
    """The dataset split a sample batch is drawn from (for thumbnails: ``float01(indices)``)."""
    return dataset(ref.dataset, ref.root, ref.image_size).split(ref.split)


@st.cache_resource(max_entries=16, show_spinner=False)
def batch(ref: BatchRef) -> dict[str, torch.Tensor]:
    """The tensors of a sample batch: ``images (n, C, S, S)``, ``labels (n,)``, ``indices (n,)``."""
    ds = batch_split(ref)
    idx = tdata.sample_indices(len(ds), ref.n, ref.seed)
    return {"images": ds.normalized(idx), "labels": ds.labels[idx].clone(), "indices": idx}


def _resolve(value: Any, locks: list[threading.Lock]) -> Any:
    if isinstance(value, ModelRef):
        entry = model_entry(value)
        if entry.lock not in locks:
            locks.append(entry.lock)
        return entry.model
    if isinstance(value, BatchField):
        return batch(value.batch)[value.field]
    if isinstance(value, CardField):
        return model_entry(value.model).card.get(value.key)
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, locks) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, locks) for k, v in value.items()}
    return value


def function_key(fn: Callable[..., Any]) -> str:
    """The name of a library function in the cache key: ``"<module>.<qualname>"`` (e.g.
    ``"tffd_viz.importance.tap_rankings"``).

    Raises
    ------
    ValueError
        For anything but a function or class of :mod:`tffd_viz` (the app caches library calls only).
    """
    module, name = getattr(fn, "__module__", None) or "", getattr(fn, "__qualname__", None) or ""
    if not module.startswith("tffd_viz.") or not name or "<" in name:
        raise ValueError(f"only tffd_viz functions run through the cache, got {fn!r}")
    return f"{module}.{name}"


def _tensor_key(t: torch.Tensor) -> np.ndarray:
    """What the caches hash for a tensor: its values as a CPU array (Streamlit cannot hash tensors)."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


HASH_FUNCS = {torch.Tensor: _tensor_key}


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict, progress: Any = None) -> Any:
    locks: list[threading.Lock] = []
    if progress is not None:
        kwargs = {**kwargs, "progress": progress}
    args = _resolve(args, locks)
    kwargs = _resolve(kwargs, locks)
    # Always take locks in one global order (by id) so two calls over models A and B cannot deadlock.
    ordered = sorted(locks, key=id)
    for lock in ordered:
        lock.acquire()
    try:
        return fn(*args, **kwargs)
    finally:
        for lock in reversed(ordered):
            lock.release()


def call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call the library function ``fn`` without caching, arguments resolved as in :func:`run` (a
    :class:`ModelRef`'s lock held during the call): for stateful results a session keeps itself, such as a
    what-if run (:class:`tffd_viz.whatif.WhatIf` deep-copies the model while the lock is held)."""
    function_key(fn)
    return _call(fn, args, kwargs)


# The cached functions take the function twice: by name (``key``, hashed) and as an object (``_fn``: a
# leading underscore keeps it out of Streamlit's hash), so a renamed or moved function gets new entries.
@st.cache_data(max_entries=512, show_spinner=False, hash_funcs=HASH_FUNCS)
def _run_data(key: str, _fn: Callable[..., Any], /, *args: Any, _progress: Any = None, **kwargs: Any) -> Any:
    return _call(_fn, args, kwargs, _progress)


@st.cache_resource(max_entries=64, show_spinner=False, hash_funcs=HASH_FUNCS)
def _run_resource(
    key: str, _fn: Callable[..., Any], /, *args: Any, _progress: Any = None, **kwargs: Any
) -> Any:
    return _call(_fn, args, kwargs, _progress)


def run(fn: Callable[..., Any], /, *args: Any, _progress: Any = None, **kwargs: Any) -> Any:
    """Call the library function ``fn`` and cache its (picklable) result.

    Arguments may be :class:`ModelRef` (-> the cached model, its lock held during the call),
    :class:`BatchField` (-> the cached batch tensor), :class:`CardField` (-> an entry of the model's
    card, e.g. its history), tensors (hashed by value) or plain hashable values. ``_progress`` (not
    part of the cache key) is passed on as ``progress=`` to functions that report progress, e.g. a
    callback ``(done, total) -> None`` that moves an ``st.progress`` bar.
    """
    return _run_data(function_key(fn), fn, *args, _progress=_progress, **kwargs)


def run_resource(fn: Callable[..., Any], /, *args: Any, _progress: Any = None, **kwargs: Any) -> Any:
    """Like :func:`run` for large results (feature tensors, figures): cached by reference, never copied.

    Callers must treat the result as read-only.
    """
    return _run_resource(function_key(fn), fn, *args, _progress=_progress, **kwargs)


@st.cache_resource(max_entries=256, show_spinner=False, hash_funcs=HASH_FUNCS)
def _figure(key: str, _fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return _call(_fn, args, kwargs)


def figure(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """A figure of :mod:`tffd_viz.plots`, built once per input and shared by reference (drawing it never
    mutates it): the one path of every figure a page shows, but the live chart of a running what-if (redrawn
    every step). Arguments as in :func:`run`."""
    return _figure(function_key(fn), fn, *args, **kwargs)
