"""Training dynamics: how Tf-FD's channel ranking and loss terms evolve over the epochs of a run.

The training loop stores one dict per epoch in the model card's ``history``::

    {"epoch": 3, "lr": 0.05, "ce": 1.2, "intra": {"layer1": ...}, "inter": {"layer1->layer2": ...},
     "train_acc": 61.0, "test_acc": 58.2, "seconds": 4.1,
     "saliency": {"layer1": [C floats], ...}}

``saliency[tap]`` is the Tf-FD channel saliency (:func:`tffd_viz.losses.channel_saliency`) on a
fixed probe batch. This module turns that into matrices and per-epoch statistics the app plots.

Conventions used throughout
---------------------------
* Rank: 0 = most salient; ties keep the lower channel index first (the stable order of
  :func:`tffd_viz.losses.salient_order`; saliencies are stored with 4 significant digits, so ties
  do happen).
* Salient half: the channels of rank ``< C // 2`` (the top ``floor(C / 2)``), as in intra-Tf-FD.
* Epochs are reported by each entry's ``"epoch"`` value (entry ``i`` without one is epoch ``i + 1``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

from tffd_viz.errors import TffdVizError
from tffd_viz.importance import rank_positions
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA, warmup_weight, weighted_total

__all__ = [
    "boundary_crossings",
    "history_taps",
    "rank_change_stats",
    "rank_matrix",
    "saliency_matrix",
    "salient_set_changes",
    "split_stable_epoch",
    "term_curves",
]

History = Sequence[Mapping]


def _epochs(history: History) -> list:
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise TffdVizError(f"history must be a list of per-epoch dicts, got {type(history).__name__}")
    if len(history) == 0:
        raise TffdVizError("history is empty: the run recorded no epochs")
    labels = []
    for i, entry in enumerate(history):
        if not isinstance(entry, Mapping):
            raise TffdVizError(f"history entry {i} must be a dict, got {type(entry).__name__}")
        labels.append(entry.get("epoch", i + 1))
    return labels


def history_taps(history: History) -> list[str]:
    """Return the taps with a recorded saliency, in first-seen order (empty if none recorded)."""
    _epochs(history)
    taps: list[str] = []
    for entry in history:
        for tap in entry.get("saliency") or {}:
            if tap not in taps:
                taps.append(tap)
    return taps


def saliency_matrix(history: History, tap: str) -> np.ndarray:
    """Return the recorded Tf-FD saliency of every channel of ``tap`` at every epoch.

    Parameters
    ----------
    history : list of dict
        ``card["history"]``.
    tap : str

    Returns
    -------
    ndarray float64 (epochs, C)
        Row ``i`` is ``history[i]["saliency"][tap]``.

    Raises
    ------
    TffdVizError
        Naming the tap and epoch when an epoch lacks the tap, the channel count changes, or a
        value is missing or not finite.
    """
    labels = _epochs(history)
    rows: list[np.ndarray] = []
    for entry, epoch in zip(history, labels):
        saliency = entry.get("saliency")
        if not isinstance(saliency, Mapping) or tap not in saliency or saliency[tap] is None:
            have = sorted(saliency) if isinstance(saliency, Mapping) else []
            raise TffdVizError(
                f"no saliency recorded for tap {tap!r} at epoch {epoch}; recorded taps: {have}"
            )
        values = saliency[tap]
        try:
            row = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise TffdVizError(f"saliency of tap {tap!r} at epoch {epoch} is not a list of numbers") from None
        if row.ndim != 1 or row.size == 0:
            raise TffdVizError(
                f"saliency of tap {tap!r} at epoch {epoch} must be a non-empty list of C floats, "
                f"got shape {row.shape}"
            )
        if rows and row.size != rows[0].size:
            raise TffdVizError(
                f"channel count of tap {tap!r} changes from {rows[0].size} at epoch {labels[0]} to "
                f"{row.size} at epoch {epoch}"
            )
        bad = np.flatnonzero(~np.isfinite(row))
        if bad.size:
            raise TffdVizError(
                f"saliency of tap {tap!r} at epoch {epoch} is not finite at channels {bad[:10].tolist()}"
            )
        rows.append(row)
    return np.stack(rows)


def _rank_rows(saliency: np.ndarray) -> np.ndarray:
    return np.stack([rank_positions(torch.from_numpy(row)).numpy() for row in saliency]).astype(np.int64)


def rank_matrix(history: History, tap: str) -> np.ndarray:
    """Return the rank of every channel at every epoch (0 = most salient, ties by lower index).

    Returns
    -------
    ndarray int64 (epochs, C)
        Each row is a permutation of ``0..C-1``.

    Raises
    ------
    TffdVizError
        As :func:`saliency_matrix`.
    """
    return _rank_rows(saliency_matrix(history, tap))


def _check_ranks(ranks: np.ndarray | Sequence[int] | torch.Tensor, c: int, what: str) -> np.ndarray:
    arr = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks)
    if arr.shape != (c,) or not np.array_equal(np.sort(arr), np.arange(c)):
        raise TffdVizError(
            f"{what} must be a permutation of 0..{c - 1} (shape ({c},)), got {arr.tolist()[:12]}"
        )
    return arr.astype(np.int64)


def boundary_crossings(
    ranks_prev: np.ndarray | Sequence[int], ranks_next: np.ndarray | Sequence[int], C: int
) -> int:
    """Return the number of channels whose membership in the salient half changed.

    A channel is in the salient half when its rank is ``< C // 2``. Every channel that leaves the
    half is replaced by one that enters it, so the count (leavers + entrants) is even: twice the
    number of channels swapped between the halves.

    Parameters
    ----------
    ranks_prev, ranks_next : array (C,)
        Rank of each channel (0 = most salient) at two epochs; permutations of ``0..C-1``.
    C : int
        Channel count.
    """
    if isinstance(C, bool) or int(C) != C or C < 1:
        raise TffdVizError(f"C must be a positive channel count, got {C!r}")
    c = int(C)
    before = _check_ranks(ranks_prev, c, "ranks_prev") < c // 2
    after = _check_ranks(ranks_next, c, "ranks_next") < c // 2
    return int(np.count_nonzero(before != after))


def rank_change_stats(history: History, tap: str) -> list[dict]:
    """Return how the ranking of ``tap`` changed between each pair of consecutive epochs.

    Returns
    -------
    list of dict, one per consecutive pair (``epochs - 1`` entries; empty for one epoch)
        ``epoch``: the later epoch; ``prev_epoch``; ``spearman``, ``kendall``: rank correlation of
        the two epochs' rankings (rankings are permutations, so always defined; 1 = unchanged,
        -1 = reversed); ``crossings``: :func:`boundary_crossings`; ``entered``, ``left``: channels
        that entered / left the salient half (``crossings == len(entered) + len(left)``).

    Raises
    ------
    TffdVizError
        As :func:`saliency_matrix`, or fewer than 2 channels.
    """
    labels = _epochs(history)
    ranks = rank_matrix(history, tap)
    c = ranks.shape[1]
    if c < 2:
        raise TffdVizError(f"tap {tap!r} has {c} channel(s); rank correlations need at least 2")
    k = c // 2
    out = []
    for t in range(1, ranks.shape[0]):
        prev, cur = ranks[t - 1], ranks[t]
        out.append(
            {
                "epoch": labels[t],
                "prev_epoch": labels[t - 1],
                "spearman": float(stats.spearmanr(prev, cur)[0]),
                "kendall": float(stats.kendalltau(prev, cur)[0]),
                "crossings": boundary_crossings(prev, cur, c),
                "entered": np.flatnonzero((cur < k) & (prev >= k)).tolist(),
                "left": np.flatnonzero((prev < k) & (cur >= k)).tolist(),
            }
        )
    return out


def salient_set_changes(history: History, tap: str) -> np.ndarray:
    """Return, per epoch ``t >= 1``, how many channels entered the salient half since epoch ``t - 1``.

    Returns
    -------
    ndarray int64 (epochs - 1,)
        ``|S_t minus S_{t-1}|`` with ``S_t`` the salient half at entry ``t`` (half of
        :func:`boundary_crossings`).
    """
    ranks = rank_matrix(history, tap)
    k = ranks.shape[1] // 2
    salient = ranks < k
    return np.count_nonzero(salient[1:] & ~salient[:-1], axis=1).astype(np.int64)


def split_stable_epoch(history: History, tap: str, tolerance: int = 0) -> int | None:
    """Return the epoch from which the salient half of ``tap`` stays fixed (within ``tolerance``).

    With ``S_t`` the set of channels of rank ``< C // 2`` at history entry ``t`` and
    ``d(A, B) = |A minus B|`` (channels swapped between the halves), the result is the epoch of the
    first entry ``s`` such that ``d(S_t, S_s) <= tolerance`` for every later entry ``t`` — the set
    reached at ``s`` is kept, up to ``tolerance`` swapped channels, to the end of the run. For
    ``tolerance = 0``: the epoch of the last change (changes at epochs 2 and 4, none after -> 4),
    or the first epoch if the set never changes.

    Returns ``None`` when the set still changes at the last epoch (``d(S_last, S_prev) >
    tolerance``) and when fewer than two epochs were recorded (nothing to judge stability on).

    Parameters
    ----------
    history : list of dict
    tap : str
    tolerance : int >= 0
        Number of channels that may still be swapped.
    """
    if isinstance(tolerance, bool) or int(tolerance) != tolerance or tolerance < 0:
        raise TffdVizError(f"tolerance must be a non-negative integer, got {tolerance!r}")
    labels = _epochs(history)
    ranks = rank_matrix(history, tap)
    e, c = ranks.shape
    if e < 2:
        return None
    if salient_set_changes(history, tap)[-1] > tolerance:
        return None
    salient = ranks < c // 2
    for s in range(e):
        swapped = np.count_nonzero(salient[s + 1 :] & ~salient[s], axis=1)
        if swapped.size == 0 or int(swapped.max()) <= tolerance:
            return labels[s]
    return None  # unreachable: s = e - 1 always qualifies


def _value(x: Any) -> float:  # a JSON value of the history, checked here
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        raise TffdVizError(f"expected a number in the history, got {x!r}") from None


def term_curves(
    history: History,
    lambda_intra: float = PAPER_LAMBDA_INTRA,
    lambda_inter: float = PAPER_LAMBDA_INTER,
    reduction: str = "mean",
    warmup: float | None = None,
) -> dict[str, np.ndarray]:
    """Return per-epoch curves of the loss terms and accuracies.

    Parameters
    ----------
    history : list of dict
    lambda_intra, lambda_inter, reduction
        Used for ``"tffd_total"`` (pass the card's values; defaults are the paper's), through
        :func:`tffd_viz.losses.weighted_total`.
    warmup : float, optional
        If given, ``"tffd_total"`` is multiplied by ``warmup_weight(epoch, warmup)`` (the weight the
        training objective used); otherwise it is the un-warmed weighted total.

    Returns
    -------
    dict[str, ndarray float64 (epochs,)]
        ``"epoch"``, ``"ce"``, ``"intra/<tap>"`` for each intra term, ``"inter/<a->b>"`` for each
        inter term, ``"intra_mean"``, ``"inter_mean"``, ``"tffd_total"`` (those present only when the
        run recorded intra/inter terms), ``"train_acc"``, ``"test_acc"``, ``"lr"``. A value the run
        did not record at some epoch (missing or ``None``) is NaN there, so plots show a gap.
    """
    labels = _epochs(history)
    intra_keys: list[str] = []
    inter_keys: list[str] = []
    for entry in history:
        intra_keys += [k for k in (entry.get("intra") or {}) if k not in intra_keys]
        inter_keys += [k for k in (entry.get("inter") or {}) if k not in inter_keys]
    curves: dict[str, np.ndarray] = {"epoch": np.array([_value(x) for x in labels])}
    curves["ce"] = np.array([_value(entry.get("ce")) for entry in history])
    for family, keys in (("intra", intra_keys), ("inter", inter_keys)):
        for key in keys:
            curves[f"{family}/{key}"] = np.array(
                [_value((entry.get(family) or {}).get(key)) for entry in history]
            )
    for family, keys in (("intra", intra_keys), ("inter", inter_keys)):
        if keys:
            stacked = np.stack([curves[f"{family}/{k}"] for k in keys])
            curves[f"{family}_mean"] = stacked.mean(axis=0)
    if intra_keys or inter_keys:
        totals = []
        for i, epoch in enumerate(labels):
            intra = {k: torch.tensor(curves[f"intra/{k}"][i], dtype=torch.float64) for k in intra_keys}
            inter = {k: torch.tensor(curves[f"inter/{k}"][i], dtype=torch.float64) for k in inter_keys}
            total = float(
                weighted_total(
                    intra,
                    inter,
                    lambda_intra,
                    lambda_inter,
                    reduction,
                    reference=torch.zeros((), dtype=torch.float64),
                )
            )
            if warmup is not None:
                total *= warmup_weight(_value(epoch), warmup)
            totals.append(total)
        curves["tffd_total"] = np.array(totals)
    for key in ("train_acc", "test_acc", "lr"):
        curves[key] = np.array([_value(entry.get(key)) for entry in history])
    return curves
