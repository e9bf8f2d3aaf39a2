"""How the figures of :mod:`tffd_viz.plots` read their inputs: arrays, numbers, model dicts and names.

Private to the package. Every reader follows the non-finite policy of :mod:`tffd_viz.plots`: infinities
become NaN (not drawn) and are counted, ``None`` is missing (not drawn, not counted), and an input of the
wrong type or shape raises :class:`~tffd_viz.errors.TffdVizError` naming the figure, the input and the shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import model_color
from tffd_viz.types import ArrayLike


def _np(x: ArrayLike | Sequence[Any]) -> np.ndarray:
    """Return ``x`` as a numpy array (torch tensors are detached and moved to the CPU; half floats
    widened)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _array(
    x: ArrayLike | Sequence[Any], figure: str, name: str, ndim: int | tuple[int, ...] | None = None
) -> np.ndarray:
    """``x`` as a float64 array with infinities turned into NaN; checks the number of dimensions."""
    try:
        a = np.asarray(_np(x), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TffdVizError(f"{figure}: {name} must be numeric, got {type(x).__name__} ({exc})") from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if a.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise TffdVizError(f"{figure}: {name} must be {want}, got shape {a.shape}")
    a = a.copy()
    a[np.isinf(a)] = np.nan
    return a


def _bad(a: np.ndarray) -> int:
    """Number of non-finite entries of a float array."""
    return int(np.count_nonzero(~np.isfinite(a)))


def _ascending(values: np.ndarray) -> np.ndarray:
    """Indices that sort ``values`` (1-D) ascending, NaN last, ties by index (``_ascending(-s)``:
    descending)."""
    return np.argsort(np.where(np.isfinite(values), values, np.inf), kind="stable")


def _number(v: Any) -> tuple[float, bool]:
    """A scalar as float: ``(value, is_fault)``; ``None`` or a non-number is missing (NaN, not a fault)."""
    if v is None:
        return math.nan, False
    try:
        f = float(_np(v)) if isinstance(v, torch.Tensor | np.ndarray) else float(v)
    except (TypeError, ValueError):
        return math.nan, False
    return (f, False) if math.isfinite(f) else (math.nan, True)


def _float(v: Any) -> float:
    """A scalar as float; NaN where it is missing or not finite."""
    return _number(v)[0]


def _drawn(v: Any) -> float | None:
    """A scalar as drawn: its float value, or ``None`` (a gap) when it is missing or not finite."""
    f, _ = _number(v)
    return f if math.isfinite(f) else None


def _series(items: Sequence[Any], *path: Any) -> tuple[list[float | None], int]:
    """``item[path[0]][path[1]]...`` of each item as drawn (``None`` where missing or not finite), and the
    count of non-finite ones.

    Without ``path`` the items themselves; a key or index an item lacks means missing (e.g.
    ``_series(history, "intra", "layer1")`` over epochs without intra terms).
    """
    out: list[float | None] = []
    faults = 0
    for item in items:
        raw = item
        try:
            for key in path:
                raw = raw[key]
        except (KeyError, IndexError, TypeError):
            raw = None
        v, bad = _number(raw)
        faults += bad
        out.append(None if not math.isfinite(v) else v)
    return out, faults


def _permutation(order: ArrayLike | Sequence[int], c: int, figure: str, context: str = "") -> np.ndarray:
    """``order`` as an int64 array, checked to be a permutation of ``0..c-1`` (``context`` follows ``C`` in
    errors)."""
    o = _np(order)
    if o.ndim != 1 or o.shape[0] != c:
        raise TffdVizError(f"{figure}: order must be 1-D of length C = {c}{context}, got shape {o.shape}")
    if not np.issubdtype(o.dtype, np.integer) or not np.array_equal(np.sort(o), np.arange(c)):
        raise TffdVizError(f"{figure}: order must be a permutation of the channel indices 0..{c - 1}")
    return o.astype(np.int64)


def _percent(part: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``100 * part / total`` (broadcast), NaN where ``total`` is not positive."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 100.0 * part / total, np.nan)


def _models(by_model: Mapping[str, Any], figure: str, name: str) -> list[tuple[str, Any, str]]:
    """``(label, data, colour)`` per model; raises on an empty or non-dict input."""
    if not isinstance(by_model, Mapping):
        raise TffdVizError(
            f"{figure}: {name} must be a dict label -> data (e.g. {{'A': ..., 'B': ...}}), got "
            f"{type(by_model).__name__}"
        )
    if not by_model:
        raise TffdVizError(f"{figure}: {name} is empty; give at least one model, e.g. {{'A': ...}}")
    return [(str(k), v, model_color(str(k), i)) for i, (k, v) in enumerate(by_model.items())]


def _union_keys(dicts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys of several dicts in order of first appearance."""
    keys: list[str] = []
    for d in dicts:
        for k in d:
            if str(k) not in keys:
                keys.append(str(k))
    return keys


def _names(names: Sequence[Any] | None, n: int, figure: str, what: str) -> list[str]:
    """``names`` as ``n`` strings (default ``"0"``, ``"1"``, ...); raises on another count."""
    if names is None:
        return [str(i) for i in range(n)]
    out = [str(v) for v in names]
    if len(out) != n:
        raise TffdVizError(f"{figure}: {what} has {len(out)} names but the matrix has {n} along that axis")
    return out
