"""Figures of the Evolution page: training curves and how the saliency ranking moves over training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import (
    _axis_ref,
    _empty_figure,
    _heatmap,
    _heatmap_figure,
    _layout,
    _legend_below,
    _log_ticks,
    _nonfinite_note,
    _paper_note,
)
from tffd_viz.plots._inputs import _array, _ascending, _bad, _models, _series, _union_keys
from tffd_viz.types import ArrayLike

__all__ = ["crossings_figure", "rank_evolution_figure", "training_curves_figure"]

_TERM_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
"""Dash of the i-th intra term's line (the inter terms start at the fourth)."""

_Curve = tuple[int, str, list[float | None], str, str]
"""One line of :func:`training_curves_figure`: panel (1-3), quantity, values per epoch, dash, hover name."""


def _epochs(rows: Sequence[Mapping[str, Any]]) -> list[float | int]:
    """The ``epoch`` of each row, or its position from 1 where a row has none."""
    epochs, _ = _series(rows, "epoch")
    return [e if e is not None else i + 1 for i, e in enumerate(epochs)]


def _epoch_line(
    x: Sequence[Any], y: Sequence[float | None], name: str, hover: str, line: Mapping[str, Any], **more: Any
) -> go.Scatter:
    """A lines+markers trace over epochs; ``more`` holds its legend and marker keys."""
    return go.Scatter(x=x, y=y, mode="lines+markers", name=name, line=dict(line), hovertemplate=hover, **more)


def _curves(label: str, history: Sequence[Mapping[str, Any]], counts: dict[str, int]) -> list[_Curve]:
    """Every line of one model's history (CE, each intra and inter term, accuracies); counts its non-finite
    values."""
    curves: list[_Curve] = []
    ce, counts[f"{label} ce"] = _series(history, "ce")
    curves.append((1, "CE", ce, "solid", "CE"))
    for family in ("intra", "inter"):
        names = _union_keys([h.get(family) or {} for h in history if isinstance(h.get(family), Mapping)])
        for t, name in enumerate(names):
            vals, counts[f"{label} {family} {name}"] = _series(history, family, name)
            dash = _TERM_DASHES[t % len(_TERM_DASHES)] if family == "intra" else _TERM_DASHES[(t + 3) % 6]
            curves.append((2, f"{family} {name}", vals, dash, "term value"))
    for key, dash in (("train_acc", "dash"), ("test_acc", "solid")):
        vals, counts[f"{label} {key}"] = _series(history, key)
        curves.append((3, key.replace("_", " "), vals, dash, "accuracy (%)"))
    return curves


def training_curves_figure(
    history_by_model: Mapping[str, Sequence[Mapping[str, Any]] | None],
    title: str = "Training curves",
) -> go.Figure:
    """Per-epoch curves from checkpoint-card histories: CE, Tf-FD terms (log y), accuracy.

    Parameters
    ----------
    history_by_model : dict[str, list of dict]
        Label -> card ``history``: one dict per epoch with (any of) ``epoch``, ``ce``,
        ``intra: {tap: value}``, ``inter: {"a->b": value}``, ``train_acc``, ``test_acc`` (%).
        Missing keys, ``None`` values and ``None``/empty histories are skipped.
    title : str

    Returns
    -------
    go.Figure
        Three panels stacked over a shared epoch axis (cross-entropy, Tf-FD terms with log y,
        accuracy: axes ``x``/``x2``/``x3``), each with its own legend beside it (``legend``,
        ``legend2``, ``legend3``); traces are named ``"<label> · <quantity>"`` (``x`` = ``epoch``, or
        1, 2, ... when absent). A figure with the annotation "no training history in this checkpoint"
        when nothing can be drawn.
    """
    figure = "training_curves_figure"
    models = _models(history_by_model, figure, "history_by_model")
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        row_heights=[0.28, 0.42, 0.30],
        subplot_titles=["cross-entropy", "Tf-FD terms (unweighted, log scale)", "accuracy"],
    )
    legends = {1: "legend", 2: "legend2", 3: "legend3"}
    term_values: list[float | None] = []
    counts: dict[str, int] = {}
    empty: list[str] = []
    drawn = 0
    for label, history, color in models:
        history = list(history or [])
        if history and not all(isinstance(h, Mapping) for h in history):
            raise TffdVizError(f"{figure}: history of {label!r} must be a list of dicts (one per epoch)")
        x = _epochs(history)
        n_model = 0
        for panel, name, vals, dash, what in _curves(label, history, counts):
            if all(v is None for v in vals):
                continue
            n_model += 1
            if panel == 2:
                term_values += vals
            hover = f"<b>{label}</b> {name}<br>epoch %{{x}}<br>{what} %{{y:.4g}}<extra></extra>"
            line = {"color": color, "dash": dash, "width": 1.8}
            trace = _epoch_line(
                x,
                vals,
                f"{label} · {name}",
                hover,
                line,
                legend=legends[panel],
                legendgroup=f"{label} {panel}",
                marker={"size": 4},
            )
            fig.add_trace(trace, row=panel, col=1)
        drawn += n_model
        if n_model == 0:
            empty.append(label)
    if drawn == 0:
        return _empty_figure(title, "no training history in this checkpoint")
    fig.update_xaxes(title_text="epoch", row=3, col=1)
    fig.update_yaxes(title_text="CE (nats)", row=1, col=1)
    fig.update_yaxes(title_text="MSE (log)", type="log", row=2, col=1)
    fig.update_yaxes(title_text="top-1 (%)", row=3, col=1)
    _log_ticks(fig, term_values, row=2, col=1)
    _layout(fig, title, height=820)
    # one legend beside each panel, top-aligned with it (plotly stacks rows top-down: row 1 = yaxis)
    for panel, name in legends.items():
        top = fig.layout[_axis_ref("y" if panel == 1 else f"y{panel}", "y")].domain[1]
        fig.update_layout(
            {
                name: {
                    "x": 1.01,
                    "xanchor": "left",
                    "y": top,
                    "yanchor": "top",
                    "font": {"size": 11, "color": "#333333"},
                    "tracegroupgap": 6,
                    "groupclick": "toggleitem",
                }
            }
        )
    if empty:
        _paper_note(
            fig,
            "empty",
            f"no training history for: {', '.join(empty)}",
            x=0,
            y=1.0,
            font={"size": 11},
            xanchor="left",
            yanchor="bottom",
            yshift=22,
        )
    return _nonfinite_note(fig, counts)


def rank_evolution_figure(
    ranks: ArrayLike,
    title: str = "Saliency rank over training",
    epochs: Sequence[Any] | None = None,
) -> go.Figure:
    """Heatmap of each channel's saliency rank per epoch, channels sorted by their final rank.

    Parameters
    ----------
    ranks : array (E, C)
        ``ranks[e, c]`` = rank of channel ``c`` at the ``e``-th recorded epoch (any convention,
        low = salient).
    title : str
    epochs : sequence of E values, optional
        Epoch numbers (default 1..E).

    Returns
    -------
    go.Figure
        One heatmap with ``z[i, e] = ranks[e, channel_i]`` where ``channel_i`` is the channel with the
        ``i``-th lowest final rank (``customdata`` holds the channel index).
    """
    figure = "rank_evolution_figure"
    r = _array(ranks, figure, "ranks", ndim=2)
    e, c = r.shape
    ep = list(range(1, e + 1)) if epochs is None else list(epochs)
    if len(ep) != e:
        raise TffdVizError(f"{figure}: epochs has {len(ep)} entries for ranks of shape {r.shape}")
    final = r[-1] if e else np.zeros(c)
    order = _ascending(final)
    trace = _heatmap(
        r[:, order].T,
        ep,
        np.arange(c),
        "channel %{customdata}<br>epoch %{x}<br>rank %{z}<extra></extra>",
        customdata=np.repeat(order[:, None], e, axis=1),
        colorscale="Viridis_r",
        colorbar={"title": "rank (0 = most salient)"},
    )
    height = max(320, min(900, 120 + 6 * c))
    fig = _heatmap_figure(trace, title, "epoch", "channel (sorted by final rank)", height, {"ranks": _bad(r)})
    if c >= 2:
        fig.add_hline(y=c // 2 - 0.5, line_dash="dash", line_color="#FFFFFF", line_width=1, name="boundary")
    return fig


def crossings_figure(
    rows_by_model: Mapping[str, Sequence[Mapping[str, Any]]],
    title: str = "Ranking stability over training",
) -> go.Figure:
    """Boundary crossings and rank correlation per epoch, one line per model.

    Parameters
    ----------
    rows_by_model : dict[str, list of dict]
        Label -> one dict per epoch ``{"epoch", "crossings", "spearman"}``: number of channels that
        crossed the salient/redundant boundary, and the Spearman correlation of the ranking (with the
        previous or final epoch, as computed by the caller).
    title : str

    Returns
    -------
    go.Figure
        Two panels (crossings | Spearman); traces ``"<label> · crossings"``, ``"<label> · spearman"``;
        the legend is a band below the panels.
    """
    figure = "crossings_figure"
    models = _models(rows_by_model, figure, "rows_by_model")
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=["channels crossing the salient/redundant boundary", "rank correlation"],
    )
    counts: dict[str, int] = {}
    drawn = 0
    for label, rows, color in models:
        rows = list(rows or [])
        x = _epochs(rows)
        for col, key in ((1, "crossings"), (2, "spearman")):
            vals, counts[f"{label} {key}"] = _series(rows, key)
            if all(v is None for v in vals):
                continue
            drawn += 1
            hover = f"<b>{label}</b><br>epoch %{{x}}<br>{key} %{{y:.3g}}<extra></extra>"
            line = {"color": color, "dash": "solid" if col == 1 else "dot"}
            fig.add_trace(
                _epoch_line(x, vals, f"{label} · {key}", hover, line, legendgroup=label), row=1, col=col
            )
    if drawn == 0:
        return _empty_figure(title, "no per-epoch saliency in these checkpoints")
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="crossings (channels)", row=1, col=1)
    fig.update_yaxes(title_text="Spearman ρ", row=1, col=2)
    _layout(fig, title, height=360)
    _legend_below(fig, [tr.name for tr in fig.data], width=800)
    return _nonfinite_note(fig, counts)
