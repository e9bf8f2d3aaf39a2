"""Figures of the Ranking page: which channels Tf-FD calls salient, how sure that is, and other criteria."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import (
    LEFT_OUT_COLOR,
    REDUNDANT_COLOR,
    SALIENT_COLOR,
    _cell_text,
    _heatmap,
    _heatmap_figure,
    _layout,
    _legend_below,
    _nonfinite_note,
    _tap_suffix,
    model_color,
    model_key,
)
from tffd_viz.plots._inputs import _array, _ascending, _bad, _models, _names
from tffd_viz.types import ArrayLike

__all__ = ["rank_agreement_figure", "rank_band_figure", "saliency_bars_figure", "split_stability_figure"]


def _boundary(fig: go.Figure, c: int, width: float, **more: Any) -> None:
    """The dashed salient/redundant line (shape ``"boundary"``) before position ``C // 2``, when ``C >= 2``.

    ``more`` holds further ``add_vline`` arguments (``row``/``col``, an annotation).
    """
    if c >= 2:
        fig.add_vline(
            x=c // 2 - 0.5, line_dash="dash", line_color="#333333", line_width=width, name="boundary", **more
        )


def saliency_bars_figure(
    scores_by_model: Mapping[str, ArrayLike],
    tap: str = "",
    split_marked: bool = True,
    overlay: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Tf-FD saliency per channel, sorted descending, one panel (or bar group) per model.

    Bar ``r`` (x = rank ``r``, 0-based) is the channel of rank ``r`` (0 = most salient); hover shows
    its channel index. With ``k = C // 2`` the salient half (ranks ``0..k-1``) and the redundant half
    (ranks ``C-k..C-1``) are shaded and a dashed line (shape ``name="boundary"``) is drawn at
    ``x = k - 0.5``, just before rank ``floor(C / 2)``; for odd ``C`` the middle channel (rank ``k``),
    which intra-Tf-FD leaves out, is drawn in :data:`LEFT_OUT_COLOR` and named in an annotation.

    Parameters
    ----------
    scores_by_model : dict[str, array (C,)]
        Label -> per-channel saliency (e.g. :func:`tffd_viz.losses.channel_saliency`).
    tap : str
        Layer name, shown in the title.
    split_marked : bool
        Draw the salient/redundant boundary and shading.
    overlay : bool
        One axes with grouped bars instead of one panel per model.
    title : str, optional
        Figure title (default ``"Channel saliency, sorted — <tap>"``).

    Returns
    -------
    go.Figure
        One bar trace per model: ``x`` ranks, ``y`` sorted saliency, ``customdata`` channel indices.
    """
    figure = "saliency_bars_figure"
    models = _models(scores_by_model, figure, "scores_by_model")
    arrays = [(label, _array(s, figure, f"scores {label!r}", ndim=1), color) for label, s, color in models]
    n = len(arrays)
    subplots = n > 1 and not overlay
    if not subplots:
        fig = go.Figure()
        cells = [(1, 1)] * n
    else:
        fig = make_subplots(
            rows=1,
            cols=n,
            shared_yaxes=True,
            horizontal_spacing=0.04,
            subplot_titles=[label for label, _, _ in arrays],
        )
        cells = [(1, i + 1) for i in range(n)]
    marked: set[tuple[int, int, int]] = set()
    counts: dict[str, int] = {}
    for (label, s, color), (row, col) in zip(arrays, cells):
        c = s.shape[0]
        counts[f"scores {label}"] = _bad(s)
        order = _ascending(-s)
        k = c // 2
        ranks = np.arange(c)
        colors = [color] * c
        group = ["salient"] * k + (["left out (odd C)"] if c % 2 else []) + ["redundant"] * k
        if c % 2:
            colors[k] = LEFT_OUT_COLOR
        trace = go.Bar(
            x=ranks,
            y=s[order],
            customdata=np.stack([order, np.array(group, dtype=object)], axis=1),
            name=label,
            marker_color=colors,
            legendgroup=label,
            hovertemplate=f"<b>{label}</b><br>channel %{{customdata[0]}}<br>rank %{{x}} of {c}"
            "<br>saliency %{y:.4g}<br>%{customdata[1]}<extra></extra>",
        )
        if subplots:
            fig.add_trace(trace, row=row, col=col)
        else:
            fig.add_trace(trace)
        if not split_marked or c < 2 or (row, col, c) in marked:
            continue
        marked.add((row, col, c))
        where: dict[str, int] = {"row": row, "col": col} if subplots else {}
        halves = (
            ("salient", -0.5, k - 0.5, SALIENT_COLOR, 0.13),
            ("redundant", c - k - 0.5, c - 0.5, REDUNDANT_COLOR, 0.10),
        )
        for half, x0, x1, fill, opacity in halves:
            fig.add_vrect(
                x0=x0, x1=x1, fillcolor=fill, opacity=opacity, line_width=0, layer="below", name=half, **where
            )
        _boundary(
            fig,
            c,
            1.5,
            annotation_text=f"salient | redundant (k = {k})",
            annotation_position="top right",
            annotation_font_size=10,
            **where,
        )
        if c % 2:
            fig.add_annotation(
                name="left_out",
                text=f"ch {int(order[k])} left out (odd C)",
                x=k,
                y=float(np.nan_to_num(s[order[k]])),
                showarrow=True,
                arrowhead=2,
                ax=30,
                ay=-30,
                font={"size": 10, "color": LEFT_OUT_COLOR},
                **({"xref": fig.data[-1].xaxis, "yref": fig.data[-1].yaxis} if where else {}),
            )
    if overlay:
        fig.update_layout(barmode="group")
    _layout(
        fig,
        title or f"Channel saliency, sorted{_tap_suffix(tap)}",
        y_title="saliency (mean of L2-normalised map)",
        legend_title="model",
        height=380,
    )
    fig.update_xaxes(title_text="rank (0 = most salient)")
    return _nonfinite_note(fig, counts)


def rank_agreement_figure(
    matrix: ArrayLike,
    names: Sequence[str],
    title: str = "Rank agreement between criteria",
    metric: str = "Spearman ρ",
) -> go.Figure:
    """Annotated heatmap of a rank correlation between channel-importance criteria.

    Parameters
    ----------
    matrix : array (k, k)
        Correlation (Spearman or Kendall) between the rankings of ``k`` criteria, in ``[-1, 1]``.
    names : sequence of k str
        Criterion names (rows and columns).
    title : str
    metric : str
        Name of the correlation, shown in the colourbar and hover.

    Returns
    -------
    go.Figure
        One heatmap, ``z`` = ``matrix``, diverging colour scale centred on 0, first criterion on top.
    """
    figure = "rank_agreement_figure"
    z = _array(matrix, figure, "matrix", ndim=2)
    if z.shape[0] != z.shape[1]:
        raise TffdVizError(f"{figure}: matrix must be square (k, k), got shape {z.shape}")
    labels = _names(names, z.shape[0], figure, "names")
    trace = _heatmap(
        z,
        labels,
        labels,
        f"%{{y}} vs %{{x}}<br>{metric} = %{{z:.3f}}<extra></extra>",
        _cell_text(z),
        zmin=-1,
        zmax=1,
        zmid=0,
        colorscale="RdBu",
        colorbar={"title": metric},
    )
    height = max(320, 140 + 45 * len(labels))
    return _heatmap_figure(trace, title, "criterion", "criterion", height, {"matrix": _bad(z)})


def rank_band_figure(
    rank: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    tap: str = "",
    label: str = "A",
    ci: float = 0.9,
) -> go.Figure:
    """Bootstrap confidence interval of each channel's saliency rank.

    Channels are sorted by ``rank`` (ascending; x = position 0..C-1, a dashed line before position
    ``C // 2`` marks the salient/redundant split); each has a marker at its rank and a vertical
    segment from ``lower`` to ``upper`` (drawn as segments rather than error bars so that a point
    outside its percentile interval is shown truthfully).

    Parameters
    ----------
    rank, lower, upper : array (C,)
        Point rank of each channel and the interval bounds (0 = most salient, e.g.
        :func:`tffd_viz.importance.bootstrap_rank_band`).
    tap, label : str
        Layer name and model label. The title and the legend entries use the label's short key
        (:func:`model_key`: ``"A · resnet8_s0"`` -> ``"A"``, so the title fits a half-width column);
        a longer label heads the legend, which sits below the plot.
    ci : float
        Central coverage of the interval, for the legend (default that of
        :func:`tffd_viz.importance.bootstrap_rank_band`).

    Returns
    -------
    go.Figure
        Trace 0: interval segments (``x`` positions, ``y`` ``[lower, upper, None, ...]``), named
        ``"<key> · <ci>% bootstrap interval"``; trace 1: point ranks (``x`` = 0..C-1, ``y`` = sorted
        ranks, ``customdata`` channel indices), named ``"<key> · rank"``.
    """
    figure = "rank_band_figure"
    level = f"{100 * float(ci):g}%"
    r = _array(rank, figure, "rank", ndim=1)
    lo = _array(lower, figure, "lower", ndim=1)
    hi = _array(upper, figure, "upper", ndim=1)
    if not (r.shape == lo.shape == hi.shape):
        raise TffdVizError(
            f"{figure}: rank {r.shape}, lower {lo.shape}, upper {hi.shape} must have the same shape"
        )
    order = _ascending(r)
    c = r.shape[0]
    pos = np.arange(c)
    color = model_color(label)
    key = model_key(label)
    seg_x: list[float | None] = []
    seg_y: list[float | None] = []
    for p, ch in zip(pos, order):
        seg_x += [float(p), float(p), None]
        seg_y += [float(lo[ch]), float(hi[ch]), None]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=seg_x,
            y=seg_y,
            mode="lines",
            line={"color": color, "width": 2},
            opacity=0.45,
            name=f"{key} · {level} bootstrap interval",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=pos,
            y=r[order],
            mode="markers",
            marker={"color": color, "size": 6},
            name=f"{key} · rank",
            customdata=np.stack([order, lo[order], hi[order]], axis=1),
            hovertemplate="channel %{customdata[0]}<br>rank %{y:.3g}"
            f"<br>{level} interval [%{{customdata[1]:.3g}}, %{{customdata[2]:.3g}}]<extra>{label}</extra>",
        )
    )
    _boundary(fig, c, 1)
    _layout(
        fig,
        f"Bootstrap rank bands{_tap_suffix(tap)} ({key})",
        x_title="channels sorted by rank",
        y_title="saliency rank (0 = most salient)",
        height=380,
    )
    _legend_below(fig, [tr.name for tr in fig.data], title=str(label) if key != str(label) else None)
    return _nonfinite_note(fig, {"rank": _bad(r), "lower": _bad(lo), "upper": _bad(hi)})


def split_stability_figure(
    stability_by_model: Mapping[str, Mapping[str, ArrayLike]],
    tap: str = "",
    title: str | None = None,
) -> go.Figure:
    """Probability that each channel lands in Tf-FD's salient half over bootstrap resamples.

    One bar per channel, channels sorted by their full-batch rank (x = position 0..C-1, so the bars
    left of the dashed line before position ``C // 2`` are the salient half); a stable split shows
    bars at 1 left of the line and at 0 right of it. A dotted line marks ``p = 0.5``.

    Parameters
    ----------
    stability_by_model : dict[str, dict]
        Label -> ``{"rank": (C,), "p_salient": (C,)}``: full-batch rank of each channel (0 = most
        salient) and the fraction of resamples that put it in the salient half (e.g.
        :func:`tffd_viz.importance.tap_rank_stability`).
    tap : str
        Layer name, shown in the title.
    title : str, optional

    Returns
    -------
    go.Figure
        One bar trace per model (grouped): ``x`` positions, ``y`` = ``p_salient`` in rank order,
        ``customdata`` = channel indices.
    """
    figure = "split_stability_figure"
    models = _models(stability_by_model, figure, "stability_by_model")
    fig = go.Figure()
    counts: dict[str, int] = {}
    channels: set[int] = set()
    for label, data, color in models:
        if not isinstance(data, Mapping) or "rank" not in data or "p_salient" not in data:
            raise TffdVizError(f"{figure}: {label!r} must map to a dict with 'rank' and 'p_salient'")
        r = _array(data["rank"], figure, f"rank {label!r}", ndim=1)
        p = _array(data["p_salient"], figure, f"p_salient {label!r}", ndim=1)
        if r.shape != p.shape:
            raise TffdVizError(
                f"{figure}: rank {r.shape} and p_salient {p.shape} of {label!r} differ in shape"
            )
        counts[f"p_salient {label}"] = _bad(p)
        order = _ascending(r)
        channels.add(r.shape[0])
        fig.add_trace(
            go.Bar(
                x=np.arange(r.shape[0]),
                y=[None if not math.isfinite(v) else float(v) for v in p[order]],
                customdata=order,
                name=label,
                marker_color=color,
                hovertemplate=f"<b>{label}</b><br>channel %{{customdata}}<br>rank %{{x}}"
                "<br>P(salient half) %{y:.2f}<extra></extra>",
            )
        )
    for c in sorted(channels):
        _boundary(fig, c, 1.5)
    fig.add_hline(y=0.5, line_dash="dot", line_color="#999999", line_width=1, name="half")
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.02])
    _layout(
        fig,
        title or f"Stability of the salient/redundant split{_tap_suffix(tap)}",
        x_title="channels sorted by full-batch rank",
        y_title="P(in salient half) over resamples",
        legend_title="model",
        height=360,
    )
    return _nonfinite_note(fig, counts)
