"""Ranking stability: how much each channel's rank, and Tf-FD's salient / redundant split, move between
batches and over bootstrap resamples of one batch."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.features import extract_features
from tffd_viz.importance.agreement import rank_corr
from tffd_viz.importance.criteria import Criterion, feature_criterion
from tffd_viz.importance.feature_criteria import check_feature
from tffd_viz.importance.ranking import channel_scores, rank_positions

__all__ = ["bootstrap_rank_band", "ranking_stability_across_batches", "split_stability", "tap_rank_stability"]


def _ranks_rows(scores: Tensor) -> Tensor:
    """Row-wise rank positions of ``(B, C)`` scores, descending and stable."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    return ranks


def _mean_pairwise_spearman(ranks: np.ndarray) -> tuple[np.ndarray, float]:
    b = ranks.shape[0]
    mat = np.eye(b)
    for i, j in itertools.combinations(range(b), 2):
        mat[i, j] = mat[j, i] = rank_corr(stats.spearmanr, ranks[i], ranks[j])
    off = mat[np.triu_indices(b, 1)]
    return mat, float(off.mean())


def ranking_stability_across_batches(
    feature_batches: Sequence[Tensor], criterion: str | Criterion = "tffd"
) -> dict:
    """How much each channel's rank moves between batches of the same tap.

    Parameters
    ----------
    feature_batches : list of Tensor (N_b, C, H, W)
        At least two batches of the same tap (sizes may differ, ``C >= 2`` the same).
    criterion : str or Criterion
        A feature criterion.

    Returns
    -------
    dict
        ``"scores"`` float64 ``(B, C)``; ``"ranks"`` int64 ``(B, C)`` (0 = most important);
        ``"mean_rank"``, ``"std_rank"`` (population std, ddof 0), ``"min_rank"``, ``"max_rank"``
        ``(C,)``; ``"pairwise_spearman"`` ``(B, B)`` between the batches' rankings and
        ``"mean_pairwise_spearman"`` (float, mean over pairs ``i < j``).
    """
    crit = feature_criterion(criterion)
    batches = list(feature_batches)
    if len(batches) < 2:
        raise TffdVizError(f"ranking stability needs at least 2 feature batches, got {len(batches)}")
    channels = {tuple(check_feature(f).shape[1:2]) for f in batches}
    if len(channels) != 1:
        raise TapError(
            f"all batches must have the same channel count, got shapes {[tuple(f.shape) for f in batches]}"
        )
    scores = torch.stack([channel_scores(crit, features=f).double() for f in batches])
    if scores.shape[1] < 2:
        raise TffdVizError(f"ranking stability needs at least 2 channels, got {scores.shape[1]}")
    ranks = _ranks_rows(scores).numpy()
    pairwise, mean_rho = _mean_pairwise_spearman(ranks)
    return {
        "scores": scores.numpy(),
        "ranks": ranks,
        "mean_rank": ranks.mean(axis=0),
        "std_rank": ranks.std(axis=0),
        "min_rank": ranks.min(axis=0),
        "max_rank": ranks.max(axis=0),
        "pairwise_spearman": pairwise,
        "mean_pairwise_spearman": mean_rho,
    }


def _bootstrap(
    f: Tensor, criterion: str | Criterion, n_boot: int, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Full-batch scores ``(C,)``, bootstrap scores ``(n_boot, C)`` float64 and their ranks."""
    crit = feature_criterion(criterion)
    f = check_feature(f)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise TffdVizError(f"n_boot must be a positive integer, got {n_boot!r}")
    n = f.shape[0]
    full = channel_scores(crit, features=f)
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, n, (int(n_boot), n), generator=gen)
    with torch.no_grad():
        if crit.per_sample is not None:
            # resample = reweight: score_b = sum_n count_bn * s_n / N with s the per-sample scores
            per_sample = crit.per_sample(f).double().cpu()
            counts = torch.zeros((int(n_boot), n), dtype=torch.float64)
            counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
            boot = counts @ per_sample / n
        else:
            boot = torch.stack([crit.fn(f[row.to(f.device)]).double().cpu() for row in idx])
    return full, boot, _ranks_rows(boot)


def bootstrap_rank_band(
    f: Tensor, criterion: str | Criterion = "tffd", n_boot: int = 200, seed: int = 0, ci: float = 0.9
) -> dict:
    """Bootstrap band of each channel's rank: resample the ``N`` samples with replacement.

    Resamples are drawn with ``torch.Generator().manual_seed(seed)`` (same seed, same result); for
    criteria with ``per_sample`` scores (all built-in feature criteria) a resample is a reweighting
    of the per-sample scores (one matrix product for all resamples).

    Parameters
    ----------
    f : Tensor (N, C, H, W)
    criterion : str or Criterion
        A feature criterion.
    n_boot : int
    seed : int
    ci : float in (0, 1)
        Central coverage of the band.

    Returns
    -------
    dict
        ``"rank"`` int64 ``(C,)`` on the full batch (for ``tffd`` the rank in
        :func:`~tffd_viz.losses.salient_order`); ``"scores"`` ``(C,)``; ``"lower"``, ``"upper"`` int64
        ``(C,)``: the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` percentiles of the bootstrap ranks
        (numpy methods ``"lower"``/``"higher"``, so whole ranks and a band at least ``ci`` wide);
        ``"width"`` = upper - lower; ``"mean_rank"`` ``(C,)``; ``"boot_ranks"`` ``(n_boot, C)``;
        ``"boot_scores"`` ``(n_boot, C)``.
    """
    if not 0.0 < float(ci) < 1.0:
        raise TffdVizError(f"ci must lie in (0, 1), got {ci!r}")
    full, boot, ranks = _bootstrap(f, criterion, n_boot, seed)
    ranks_np = ranks.numpy()
    lower = np.quantile(ranks_np, (1.0 - ci) / 2.0, axis=0, method="lower").astype(np.int64)
    upper = np.quantile(ranks_np, (1.0 + ci) / 2.0, axis=0, method="higher").astype(np.int64)
    return {
        "rank": rank_positions(full).numpy(),
        "scores": full.double().numpy(),
        "lower": lower,
        "upper": upper,
        "width": upper - lower,
        "mean_rank": ranks_np.mean(axis=0),
        "boot_ranks": ranks_np,
        "boot_scores": boot.numpy(),
    }


def split_stability(f: Tensor, criterion: str | Criterion = "tffd", n_boot: int = 200, seed: int = 0) -> dict:
    """Probability that each channel lands in Tf-FD's salient (or redundant) half over bootstraps.

    Same resamples as :func:`bootstrap_rank_band` with the same ``seed`` and ``n_boot``.

    Returns
    -------
    dict
        ``"p_salient"``, ``"p_redundant"`` float64 ``(C,)``: fraction of resamples with the channel's
        rank ``< C // 2`` (salient) or ``>= C - C // 2`` (redundant); ``"in_salient"`` bool ``(C,)``:
        membership on the full batch; ``"n_boot"``.
    """
    full, _boot, ranks = _bootstrap(f, criterion, n_boot, seed)
    c = full.shape[0]
    k = c // 2
    ranks_np = ranks.numpy()
    return {
        "p_salient": (ranks_np < k).mean(axis=0),
        "p_redundant": (ranks_np >= c - k).mean(axis=0),
        "in_salient": rank_positions(full).numpy() < k,
        "n_boot": int(n_boot),
    }


def tap_rank_stability(
    model: nn.Module,
    images: Tensor,
    tap: str,
    criterion: str | Criterion = "tffd",
    n_boot: int = 100,
    seed: int = 0,
    ci: float = 0.9,
    batch_size: int = 256,
) -> dict:
    """Bootstrap rank band and salient/redundant split stability of one tap of a model.

    Extracts the tap's features on ``images`` (eval mode) once, then runs
    :func:`bootstrap_rank_band` and :func:`split_stability` on them with the same resamples
    (same ``n_boot`` and ``seed``).

    Parameters
    ----------
    model : nn.Module
    images : Tensor (N, C_in, H, W)
        Normalised images.
    tap : str
        Module name.
    criterion : str or Criterion
        A feature criterion.
    n_boot, seed, ci
        As in :func:`bootstrap_rank_band`.
    batch_size : int
        Extraction batch size.

    Returns
    -------
    dict
        Every key of :func:`bootstrap_rank_band` (``rank``, ``scores``, ``lower``, ``upper``, ``width``,
        ``mean_rank``, ``boot_ranks``, ``boot_scores``) and of :func:`split_stability` (``p_salient``,
        ``p_redundant``, ``in_salient``, ``n_boot``), plus ``"tap"``, ``"criterion"``, ``"ci"``,
        ``"p_same_half"`` float64 ``(C,)``: fraction of resamples that put each channel in the same part
        (salient half, redundant half or, for odd ``C``, the middle) as the full batch does, and
        ``"mean_width"``: the mean of ``width`` over channels; ``"share_stable_half"``: the fraction of
        channels whose ``p_same_half`` is at least 0.95.

    Raises
    ------
    TapError
        Unknown tap; TffdVizError for a model criterion or bad ``n_boot``/``ci``.
    """
    crit = feature_criterion(criterion)
    f = extract_features(model, images, [tap], batch_size=batch_size)[tap]
    band = bootstrap_rank_band(f, crit, n_boot=n_boot, seed=seed, ci=ci)
    split = split_stability(f, crit, n_boot=n_boot, seed=seed)
    c = band["rank"].shape[0]
    k = c // 2
    p_middle = 1.0 - split["p_salient"] - split["p_redundant"]
    same = np.where(
        band["rank"] < k, split["p_salient"], np.where(band["rank"] >= c - k, split["p_redundant"], p_middle)
    )
    return {
        **band,
        **split,
        "tap": tap,
        "criterion": crit.name,
        "ci": float(ci),
        "p_same_half": same,
        "mean_width": float(band["width"].mean()),
        "share_stable_half": float((same >= 0.95).mean()),
    }
