"""The report's ``ranking`` section: the Tf-FD channel saliency per layer and how well other channel
importance criteria agree with it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from tffd_viz.errors import TffdVizError
from tffd_viz.importance import channel_scores, get_criterion, rank_agreement
from tffd_viz.report._base import extras, position_name
from tffd_viz.report.inputs import ReportInputs
from tffd_viz.report.render import ReportSection, ReportTable

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["REPORT_CRITERIA", "identical_criteria", "ranking_section"]

REPORT_CRITERIA: tuple[str, ...] = ("tffd", "l1", "l2", "mean", "bn_gamma", "taylor")
"""Channel-importance criteria compared with the Tf-FD saliency (keys of ``importance.CRITERIA``)."""


def _criteria_scores(ctx: ReportInputs, key: str, tap: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Scores of every :data:`REPORT_CRITERIA` entry that runs on this model and tap, and why others fail."""
    scores: dict[str, Tensor] = {}
    skipped: dict[str, str] = {}
    for name in REPORT_CRITERIA:
        crit = get_criterion(name)
        try:
            if crit.needs == "features":
                scores[name] = channel_scores(crit, features=ctx.feats[key][tap])
            else:
                scores[name] = channel_scores(
                    crit, model=ctx.models[key], images=ctx.images, labels=ctx.targets, tap=tap
                )
        except TffdVizError as exc:
            skipped[name] = str(exc)
    return scores, skipped


def _salient_share(scores: Tensor) -> float:
    """Percentage of the total saliency held by the top ``C // 2`` channels."""
    ordered = torch.sort(scores.double(), descending=True).values
    total = float(ordered.sum())
    return 100.0 * float(ordered[: ordered.numel() // 2].sum()) / total if total > 0 else math.nan


def identical_criteria(names: Sequence[str], spearman: np.ndarray, tol: float = 1e-9) -> dict[str, list[str]]:
    """Group criteria that rank the channels identically (Spearman ρ = 1 with an earlier one).

    After a ReLU, for instance, ``l1`` (mean |F|) and ``mean`` (mean F) are the same numbers, so their ρ with
    any third criterion is the same too: the report shows one column for both.

    Returns
    -------
    dict
        First name of each group -> the names of the group, in ``names`` order.
    """
    groups: dict[str, list[str]] = {}
    for j, name in enumerate(names):
        head = next((h for h in groups if spearman[names.index(h), j] >= 1.0 - tol), None)
        groups.setdefault(head or name, []).append(name)
    return groups


def ranking_section(ctx: ReportInputs) -> ReportSection:
    """The ``ranking`` section: sorted Tf-FD saliency per layer, rank agreement of the other criteria."""
    pd, plots, _ = extras()
    figures: list[go.Figure] = []
    for ta, tb in ctx.tap_positions():
        scores = {
            ctx.labels[k]: channel_scores("tffd", features=ctx.feats[k][t])
            for k, t in (("A", ta), ("B", tb))
            if t is not None
        }
        figures.append(plots.saliency_gap_figure(scores, tap=position_name(ta, tb)))
    agreement_rows: list[dict[str, Any]] = []
    skipped_all: dict[str, str] = {}
    merged: set[str] = set()
    heatmap = None
    for key in ("A", "B"):
        for tap in ctx.taps[key]:
            scores, skipped = _criteria_scores(ctx, key, tap)
            skipped_all.update(skipped)
            if len(scores) < 2:
                continue
            agree = rank_agreement(scores)
            names = list(agree["names"])
            groups = identical_criteria(names, agree["spearman"])
            merged.update(" = ".join(g) for g in groups.values() if len(g) > 1)
            heatmap = (agree, key, tap)  # the last one: B's deepest layer
            row: dict[str, Any] = {
                "model": ctx.labels[key],
                "layer": tap,
                "channels": int(scores["tffd"].numel()),
            }
            row.update(
                {
                    f"ρ(tffd, {' = '.join(group)})": float(agree["spearman"][0, names.index(head)])
                    for head, group in groups.items()
                    if head != "tffd"
                }
            )
            agreement_rows.append(row)
    if heatmap is not None:
        agree, key, tap = heatmap
        fig = plots.rank_agreement_figure(
            agree["spearman"],
            agree["names"],
            title=f"Rank agreement between criteria — {ctx.labels[key]} · {tap}",
        )
        figures.append(fig.update_layout(height=340, width=420))
    share = {
        k: _salient_share(channel_scores("tffd", features=ctx.feats[k][ctx.taps[k][-1]])) for k in ("A", "B")
    }
    intro = (
        "Intra-layer Tf-FD sorts the channels of a layer by their saliency (the mean of each channel's "
        "spatially L2-normalised map) and pulls the redundant bottom half towards the salient top half, "
        f"pair by pair. In the deepest layer the salient half holds {share['A']:.1f} % of the total saliency "
        f"for A ({ctx.taps['A'][-1]}) and {share['B']:.1f} % for B ({ctx.taps['B'][-1]}).\n\n"
        "The bars show the sorted saliency on this batch, on an axis that does not start at 0 (the "
        "annotation gives the mean saliency of the salient half over that of the redundant half); the table "
        "and the heatmap (B's deepest layer) show how well other channel importance criteria rank the "
        "channels the same way (Spearman ρ)."
        + (
            f" Criteria that rank every layer identically share a column: {'; '.join(sorted(merged))}."
            if merged
            else ""
        )
    )
    if skipped_all:
        intro += "\n\nCriteria that did not run here: " + "; ".join(
            f"{k} ({v})" for k, v in skipped_all.items()
        )
    tables = [
        ReportTable(
            "Spearman ρ between the Tf-FD saliency and each other criterion", pd.DataFrame(agreement_rows)
        )
    ]
    return ReportSection("ranking", "Channel ranking", intro, figures, tables)
