"""The look every figure of :mod:`tffd_viz.plots` shares: template, colours, margins, notes and heatmaps.

Private to the package: the figure modules build on these helpers; :mod:`tffd_viz.plots` re-exports the public
names (the colours, :data:`TEMPLATE`, :func:`model_color`, :func:`model_key`, :func:`format_lambda`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

__all__ = [
    "CLASS_COLORS",
    "COLOR_A",
    "COLOR_B",
    "LEFT_OUT_COLOR",
    "MODEL_COLORS",
    "REDUNDANT_COLOR",
    "SALIENT_COLOR",
    "TEMPLATE",
    "format_lambda",
    "model_color",
    "model_key",
]

COLOR_A: str = "#636EFA"
"""Colour of model A (the baseline)."""

COLOR_B: str = "#EF553B"
"""Colour of model B (the Tf-FD-trained model)."""

MODEL_COLORS: tuple[str, ...] = (COLOR_A, COLOR_B, "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692")
"""Colours of models by position (A, B, then others)."""

SALIENT_COLOR: str = "#2CA02C"
"""Colour of the salient (top) half of a layer's channels."""

REDUNDANT_COLOR: str = "#7F7F7F"
"""Colour of the redundant (bottom) half of a layer's channels."""

LEFT_OUT_COLOR: str = "#FFA15A"
"""Colour of the middle channel of an odd channel count, which intra-Tf-FD leaves out."""

TEMPLATE: str = "plotly_white"
"""Plotly template of every figure."""

CLASS_COLORS: tuple[str, ...] = (
    "#636EFA",
    "#EF553B",
    "#00CC96",
    "#AB63FA",
    "#FFA15A",
    "#19D3F3",
    "#FF6692",
    "#B6E880",
    "#FF97FF",
    "#FECB52",
    "#1F77B4",
    "#8C564B",
    "#E377C2",
    "#7F7F7F",
    "#BCBD22",
    "#17BECF",
    "#393B79",
    "#637939",
    "#8C6D31",
    "#843C39",
)
"""Discrete class colours (cycled beyond 20 classes)."""

_MARGIN = {"l": 60, "r": 20, "t": 60, "b": 50}
"""Margins (px) of every figure."""

_TALL_MARGIN = {**_MARGIN, "t": 70}
"""Margins (px) of the figures set by :func:`_grouped_layout` (room for a note over the plot)."""

_NICE_NAMES = {
    "lambda_intra": "λ_intra",
    "lambda_inter": "λ_inter",
    "final_acc": "final top-1 accuracy (%)",
    "best_acc": "best top-1 accuracy (%)",
    "acc": "top-1 accuracy (%)",
    "ce": "CE",
    "intra": "λ_intra · intra",
    "inter": "λ_inter · inter",
    "weighted_intra": "λ_intra · intra",
    "weighted_inter": "λ_inter · inter",
    "total": "total",
    "tffd": "λ-weighted Tf-FD",
    "ce+tffd": "CE + Tf-FD",
}
"""Readable axis and legend names of table columns and loss components."""

_LEGEND_CHAR_PX = 6.6
"""Approximate width of one legend character at plotly's default 12 px font."""
_LEGEND_WIDTH_PX = 430
"""Width a legend below the plot is assumed to have (a half-width app column) when it is laid out."""

_AB = re.compile(r"^\s*([AB])\b")


# ----------------------------------------------------------------------------------------------------------
# layout and notes
# ----------------------------------------------------------------------------------------------------------


def _layout(
    fig: go.Figure,
    title: str,
    x_title: str | None = None,
    y_title: str | None = None,
    height: int | None = None,
    width: int | None = None,
    showlegend: bool | None = None,
    legend_title: str | None = None,
) -> go.Figure:
    """Apply the common look: template, title, axis titles and a compact margin.

    ``x_title``/``y_title`` go on the first axes; figures with subplots title their other axes
    themselves.
    """
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.01, "xanchor": "left"},
        margin=_MARGIN,
        hoverlabel={"namelength": -1},
    )
    given = {
        "xaxis_title": x_title,
        "yaxis_title": y_title,
        "height": height,
        "width": width,
        "showlegend": showlegend,
        "legend_title_text": legend_title,
    }
    for key, value in given.items():
        if value is not None:
            fig.update_layout(**{key: value})
    return fig


def _grouped_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    """:func:`_layout` with :data:`_TALL_MARGIN` and grouped bars (the noise-reference and accuracy
    figures)."""
    _layout(fig, title, height=height)
    fig.update_layout(margin=_TALL_MARGIN, barmode="group")
    return fig


def _paper_note(
    fig: go.Figure, name: str, text: str, x: float, y: float, font: Mapping[str, Any], **place: Any
) -> None:
    """Add a text annotation (no arrow) named ``name`` at ``(x, y)`` in paper coordinates.

    ``place`` holds further annotation properties (``xanchor``, ``yanchor``, ``yshift``, ``bgcolor``, ...).
    """
    fig.add_annotation(
        name=name, text=text, xref="paper", yref="paper", x=x, y=y, showarrow=False, font=dict(font), **place
    )


def _nonfinite_note(fig: go.Figure, counts: Mapping[str, int]) -> go.Figure:
    """Add the annotation of the non-finite policy (see :mod:`tffd_viz.plots`) when a count is positive."""
    bad = {k: int(v) for k, v in counts.items() if v}
    if not bad:
        return fig
    n = sum(bad.values())
    where = ", ".join(f"{k}: {v}" for k, v in bad.items())
    verb = "value is" if n == 1 else "values are"
    _paper_note(
        fig,
        "nonfinite",
        f"⚠ {n} {verb} not finite ({where}); they are not drawn",
        x=1.0,
        y=1.0,
        font={"color": "#B22222", "size": 12},
        xanchor="right",
        yanchor="bottom",
        yshift=26,
        bgcolor="#FFF5E5",
        bordercolor="#B22222",
    )
    fig.update_layout(margin={"t": max(int(fig.layout.margin.t or 0), 95)})
    return fig


def _empty_figure(title: str, message: str, height: int = 300) -> go.Figure:
    """A figure holding only a centred message (e.g. no data)."""
    fig = go.Figure()
    _paper_note(fig, "empty", message, x=0.5, y=0.5, font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=height)


def _caption(fig: go.Figure, text: str, name: str = "caption", yshift: int = -8) -> None:
    """A one-line caption under the plot area (left-aligned; ``yshift`` px below its bottom edge)."""
    if not text:
        return
    _paper_note(
        fig,
        name,
        text,
        x=0,
        y=0,
        font={"size": 12, "color": "#444444"},
        xanchor="left",
        yanchor="top",
        yshift=yshift,
    )


def _legend_below(
    fig: go.Figure, names: Sequence[str], title: str | None = None, width: int = _LEGEND_WIDTH_PX
) -> go.Figure:
    """Move the legend into a horizontal band at the bottom of the figure and grow the figure to fit it.

    The band holds ``title`` (if any) on its own line, then the entries, wrapped as plotly wraps them
    in a figure ``width`` px wide (default: a half-width app column); the bottom margin and the height
    grow by the band's height, so neither the x axis title nor the plot area shrinks.
    """
    widths = [40 + _LEGEND_CHAR_PX * len(str(n)) for n in names]
    lines, used = (1, 0.0) if widths else (0, 0.0)
    for w in widths:
        if used and used + w > width:
            lines, used = lines + 1, 0.0
        used += w
    lines += 1 if title else 0
    band = 12 + 21 * lines
    legend: dict[str, Any] = {
        "orientation": "h",
        "xref": "container",
        "x": 0.01,
        "xanchor": "left",
        "yref": "container",
        "y": 0.005,
        "yanchor": "bottom",
        "title": {"text": title or "", "side": "top"},
    }
    fig.update_layout(
        legend=legend,
        margin={"b": int(fig.layout.margin.b or _MARGIN["b"]) + band},
        height=int(fig.layout.height or 450) + band,
    )
    return fig


def _axis_ref(name: str, kind: str) -> str:
    """``"x2"`` -> layout key ``"xaxis2"``."""
    return f"{kind}axis{name[1:]}"


def _tap_suffix(tap: str) -> str:
    """``" — <tap>"`` for a title, or ``""`` without a tap."""
    return f" — {tap}" if tap else ""


# ----------------------------------------------------------------------------------------------------------
# model labels and colours
# ----------------------------------------------------------------------------------------------------------


def model_color(label: str, position: int = 0) -> str:
    """Colour of a model: :data:`COLOR_A`/:data:`COLOR_B` for labels starting with the word A/B.

    Parameters
    ----------
    label : str
        Legend label, e.g. ``"A"``, ``"B · Tf-FD"``.
    position : int
        Position of the model among those drawn; picks the colour of any other label.
    """
    m = _AB.match(str(label))
    if m:
        return COLOR_A if m.group(1) == "A" else COLOR_B
    return MODEL_COLORS[position % len(MODEL_COLORS)]


def model_key(label: str) -> str:
    """Short key of a model label: ``"A"``/``"B"`` for labels starting with the word A/B, else the label.

    ``"A · digits_resnet8_baseline_s0"`` -> ``"A"``; ``"resnet18 · Tf-FD"`` -> ``"resnet18 · Tf-FD"``.
    """
    m = _AB.match(str(label))
    return m.group(1) if m else str(label)


def _models_caption(labels: Sequence[str]) -> str:
    """``"A: digits_resnet8_baseline_s0 · B: ..."`` for the labels longer than their key ("" if none)."""
    parts = []
    for label in labels:
        key = model_key(label)
        if key != label:
            rest = str(label)[len(key) :].lstrip(" ·:-—")
            parts.append(f"{key}: {rest}" if rest else key)
    return " · ".join(parts)


# ----------------------------------------------------------------------------------------------------------
# numbers as text and log axes
# ----------------------------------------------------------------------------------------------------------


def format_lambda(v: Any) -> str:
    """Category label of a lambda value: ``0 -> "0"``, ``8e-4 -> "8e-4"``, ``0.5 -> "0.5"``.

    Numeric strings (as read from a CSV) are formatted like numbers; other strings are returned
    unchanged.
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f == 0:
        return "0"
    if not math.isfinite(f):
        return str(f)
    if 1e-2 <= abs(f) < 1e4:
        return f"{f:g}"
    mant, exp = f"{f:.3e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def _category_sort_key(v: Any) -> tuple[int, float, str]:
    """Numbers first, in numeric order, then other values by their text."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _fmt(v: float, fmt: str = ".3g") -> str:
    """``v`` formatted with ``fmt``; empty for a non-finite value (a blank heatmap cell)."""
    return format(v, fmt) if math.isfinite(v) else ""


def _cell_text(z: np.ndarray, fmt: str = ".2f", blank_zero: bool = False) -> list[list[str]]:
    """Text of each cell of ``z`` (2-D) with ``fmt``; blank where not finite (and where 0 with
    ``blank_zero``)."""
    return [["" if blank_zero and v == 0 else _fmt(v, fmt) for v in row] for row in z]


def _log_tick_values(values: Sequence[Any]) -> list[float]:
    """Tick positions for a log axis over ``values``: the decades when they span one or more, else 1-2-5.

    Non-positive, non-finite and ``None`` values are ignored; ``[]`` when nothing is left. The ticks
    run from the decade at or below the smallest value to the one at or above the largest, so that
    a padded axis range still has its ends labelled.
    """
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return []
    lo, hi = math.floor(math.log10(float(v.min()))), math.ceil(math.log10(float(v.max())))
    hi = max(hi, lo + 1)
    span = math.log10(float(v.max()) / float(v.min()))
    steps = (1.0,) if span >= 1.0 else (1.0, 2.0, 5.0)
    return [float(f"{m * 10.0**e:.12g}") for e in range(lo, hi + 1) for m in steps if m == 1.0 or e < hi]


def _log_ticks(fig: go.Figure, values: Sequence[Any], **where: Any) -> None:
    """Label a log y axis only at :func:`_log_tick_values` (never every digit of every decade).

    ``values`` are the numbers drawn on that axis; ``where`` selects the axis (``row=``/``col=`` of a
    subplot figure). Labels read like lambdas (:func:`format_lambda`: ``0.02``, ``1e-3``).
    """
    ticks = _log_tick_values(values)
    if ticks:
        fig.update_yaxes(
            tickmode="array", tickvals=ticks, ticktext=[format_lambda(t) for t in ticks], **where
        )


def _log_bars_axis(fig: go.Figure, title_text: str) -> None:
    """Make the y axis of a bar figure logarithmic, titled ``title_text``, ticks from every trace's y
    values."""
    fig.update_yaxes(type="log", title_text=title_text)
    _log_ticks(fig, [v for tr in fig.data for v in tr.y])


# ----------------------------------------------------------------------------------------------------------
# heatmaps
# ----------------------------------------------------------------------------------------------------------


def _heatmap(
    z: np.ndarray,
    x: Sequence[Any] | np.ndarray | None,
    y: Sequence[Any] | np.ndarray | None,
    hovertemplate: str,
    text: list[list[str]] | None = None,
    **style: Any,
) -> go.Heatmap:
    """A heatmap trace of ``z`` (rows ``y``, columns ``x``), its cells annotated with ``text``.

    ``text`` is one string per cell (e.g. :func:`_cell_text`); ``None`` draws the cells without text.
    ``style`` holds the other trace properties (``colorscale``, ``colorbar``, ``zmin``, ``coloraxis``,
    ``customdata``, ...).
    """
    if text is not None:
        style.update(text=text, texttemplate="%{text}")
    return go.Heatmap(z=z, x=x, y=y, hovertemplate=hovertemplate, **style)


def _heatmap_figure(
    trace: go.Heatmap,
    title: str,
    x_title: str,
    y_title: str,
    height: int,
    counts: Mapping[str, int],
    square: bool = False,
) -> go.Figure:
    """A figure of one heatmap, its first row on top, in the common look, with the non-finite note.

    ``square`` makes the cells square (rows and columns on one scale, e.g. a channel x channel matrix).
    """
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed")
    if square:
        fig.update_yaxes(scaleanchor="x", constrain="domain")
        fig.update_xaxes(constrain="domain")
    _layout(fig, title, x_title=x_title, y_title=y_title, height=height)
    return _nonfinite_note(fig, counts)


def _color_axis(fig: go.Figure, colorscale: str, cmin: float, cmax: float, title: str, **more: Any) -> None:
    """One colour axis (``"coloraxis"``) for the traces that name it: scale, range and colour-bar title."""
    fig.update_layout(
        coloraxis={"colorscale": colorscale, "cmin": cmin, "cmax": cmax, **more, "colorbar": {"title": title}}
    )


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of the finite values of ``values``; ``(0, 1)`` when there are none."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
