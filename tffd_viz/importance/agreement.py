"""Agreement between criteria: rank correlations (Spearman, Kendall) of their scores of the same channels."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from tffd_viz.errors import TffdVizError
from tffd_viz.importance.ranking import checked_scores
from tffd_viz.types import ArrayLike

__all__ = ["CORRELATIONS", "ConstantScoresWarning", "rank_agreement", "rank_corr"]


class ConstantScoresWarning(UserWarning):
    """A rank correlation was undefined (constant scores) and was set to 0."""


def rank_corr(fn: Callable[..., Any], a: np.ndarray, b: np.ndarray) -> float:
    """Return ``fn(a, b)[0]`` (a scipy rank correlation) as a float, scipy's warnings about constant input
    silenced (the caller handles the NaN it returns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = fn(a, b)[0]
    return float(value)


#: Correlation name -> scipy function returning ``(statistic, p-value)``.
CORRELATIONS: dict[str, Callable[..., Any]] = {
    "spearman": stats.spearmanr,
    "kendall": stats.kendalltau,
}


def rank_agreement(scores_by_criterion: Mapping[str, ArrayLike]) -> dict:
    """Return the rank correlation between every pair of criteria's scores of the same channels.

    Spearman's rho (``scipy.stats.spearmanr``) and Kendall's tau-b (``scipy.stats.kendalltau``) on
    the scores (ties get average ranks). The diagonal is 1 by definition. A pair whose correlation
    is undefined (one side constant) gets 0 and a :class:`ConstantScoresWarning` naming it.

    Parameters
    ----------
    scores_by_criterion : Mapping[str, Tensor (C,)]
        At least one criterion, all with the same ``C >= 2``.

    Returns
    -------
    dict
        ``"names"``: list of k names; ``"spearman"``, ``"kendall"``: float64 ``(k, k)`` symmetric.
    """
    if not scores_by_criterion:
        raise TffdVizError("rank_agreement needs at least one criterion's scores")
    names = list(scores_by_criterion)
    arrays = [
        checked_scores(scores_by_criterion[n], f"scores of {n!r}").double().cpu().numpy() for n in names
    ]
    sizes = {n: a.shape[0] for n, a in zip(names, arrays)}
    if len(set(sizes.values())) != 1:
        raise TffdVizError(f"all criteria must score the same channels; got channel counts {sizes}")
    if arrays[0].shape[0] < 2:
        raise TffdVizError(f"rank correlation needs at least 2 channels, got {arrays[0].shape[0]}")
    k = len(names)
    out: dict = {"names": names}
    undefined: set[tuple[str, str]] = set()
    for key, fn in CORRELATIONS.items():
        mat = np.eye(k)
        for i, j in itertools.combinations(range(k), 2):
            value = rank_corr(fn, arrays[i], arrays[j])
            if not np.isfinite(value):
                undefined.add((names[i], names[j]))
                value = 0.0
            mat[i, j] = mat[j, i] = value
        out[key] = mat
    if undefined:
        warnings.warn(
            f"rank_agreement: rank correlation undefined (constant scores) for {sorted(undefined)}; set to 0",
            ConstantScoresWarning,
            stacklevel=2,
        )
    return out
